"""Joint training of a LoRA text adapter (top encoder layers) and the production head, on a CPU.

Why it is cheap enough for a 2-core box: the adapter only touches layers >= `start`, so the
frozen layers below never change. One pass over every distinct text computes their output (the
"prefix", kept in memory) and, through the frozen top layers, the frozen sentence embedding,
which goes into the feature cache (the baselines and the frozen heads reuse it). Each training
step then runs only the adapted top layers forward and backward. After training, tuned
embeddings for every text come from the prefix through the merged top layers: a fraction of a
full encode, and numerically the features of `TextEncoder.with_adapter` (same fp32 arithmetic).

Sampling: examples are drawn with replacement by `production._sample_weights` (each data set
weighs ~sqrt(its size), classes freq^-class_balance), so no single set dominates; draws are
grouped by token length to cut padding. Selection: the step with the best mean validation
macro-F1 over the data sets (never test).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from models.production import EtaFusionHead
from models.text_encoder import TextEncoder
from pipelines.feature_cache import FeatureStore, content_key
from pipelines.quantize import bf16_autocast
from pipelines.training.distill import distillation_loss
from pipelines.training.sampling import (
    BestOnValidation,
    adapter_optimizer,
    clipped_step,
    eval_points,
    length_grouped_batches,
    smoothed,
)


def _attn_mask(config, h: Tensor, mask: Tensor):
    """The attention mask in the form the model's attention implementation expects."""
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=config, inputs_embeds=h, attention_mask=mask)


def run_layers(model: nn.Module, layers: Sequence[int], h: Tensor, mask: Tensor) -> Tensor:
    """Hidden states after running encoder layers `layers` (in order) on `h` [B, L, H]."""
    m4 = _attn_mask(model.config, h, mask)
    for i in layers:
        h = model.encoder.layer[i](h, m4)
    return h


@dataclass
class Prefix:
    """Frozen hidden states entering layer `start`, for distinct texts (ragged, float32)."""

    flat: Tensor  # [T, H]: every text's token states, concatenated
    offsets: np.ndarray  # [N+1]
    row: dict[str, int]  # text -> index
    start: int

    def batch(self, idx: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Padded states [B, L, H] and mask [B, L] of texts number `idx`."""
        lens = [int(self.offsets[i + 1] - self.offsets[i]) for i in idx]
        h = torch.zeros(len(idx), max(lens), self.flat.shape[1])
        mask = torch.zeros(len(idx), max(lens), dtype=torch.long)
        for j, (i, n) in enumerate(zip(idx, lens, strict=True)):
            h[j, :n] = self.flat[self.offsets[i] : self.offsets[i] + n]
            mask[j, :n] = 1
        return h, mask

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])


@torch.no_grad()  # not inference_mode: the prefix is read by training steps later
def encode_prefix(encoder: TextEncoder, texts: Sequence[str], start: int, cache_dir, batch_size: int = 128) -> Prefix:
    """Prefix states of the distinct `texts`; the frozen embeddings they yield fill the cache."""
    model = encoder.model.eval()
    n_layers = len(model.encoder.layer)
    uniq = list(dict.fromkeys(t if t else "" for t in texts))
    lens = [len(x) for x in encoder.token_ids(uniq)["input_ids"]]
    order = sorted(range(len(uniq)), key=lens.__getitem__)
    offsets = np.zeros(len(uniq) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lens)
    flat = torch.empty(int(offsets[-1]), encoder.dim)
    store = FeatureStore(cache_dir, encoder.version)
    for s in tqdm(range(0, len(order), batch_size), desc=f"frozen layers 0-{n_layers - 1}", unit="batch"):
        idx = order[s : s + batch_size]
        tok = encoder.tokenize([uniq[i] for i in idx])
        emb = model.embeddings(input_ids=tok["input_ids"], token_type_ids=tok.get("token_type_ids"))
        mask = tok["attention_mask"]
        h = run_layers(model, range(start), emb, mask)
        for j, i in enumerate(idx):
            flat[offsets[i] : offsets[i + 1]] = h[j, : lens[i]]
        keys = [content_key(encoder.version, uniq[i].encode("utf-8")) for i in idx]
        miss = [j for j, k in enumerate(keys) if k not in store]
        if miss:
            top = run_layers(model, range(start, n_layers), h[miss], mask[miss])
            store.put([keys[j] for j in miss], TextEncoder.mean_pool(top, mask[miss]).numpy())
    return Prefix(flat=flat, offsets=offsets, row={t: i for i, t in enumerate(uniq)}, start=start)


def pooled_from_prefix(model: nn.Module, prefix: Prefix, idx: Sequence[int], layers: Sequence[int]) -> Tensor:
    h, mask = prefix.batch(idx)
    return TextEncoder.mean_pool(run_layers(model, layers, h, mask), mask)


@torch.inference_mode()
def tuned_features(
    tuned: TextEncoder, prefix: Prefix, cache_dir, batch_size: int = 256, desc: str = "tuned top layers"
) -> None:
    """Put the tuned (merged) encoder's embedding of every prefix text into the feature cache."""
    model = tuned.model.eval()
    layers = range(prefix.start, len(model.encoder.layer))
    store = FeatureStore(cache_dir, tuned.version)
    texts = sorted(prefix.row, key=lambda t: prefix.length(prefix.row[t]))
    todo = [t for t in texts if content_key(tuned.version, t.encode("utf-8")) not in store]
    for s in tqdm(range(0, len(todo), batch_size), desc=desc, unit="batch"):
        chunk = todo[s : s + batch_size]
        feats = pooled_from_prefix(model, prefix, [prefix.row[t] for t in chunk], layers)
        store.put([content_key(tuned.version, t.encode("utf-8")) for t in chunk], feats.numpy())


@dataclass
class TuneConfig:
    samples: int = 32000  # examples drawn (with replacement) over the whole run
    batch_size: int = 32
    lr: float = 1e-3  # adapter
    head_lr: float = 2e-3
    wd: float = 1e-2  # head only; the adapter is not decayed
    warmup: float = 0.06
    evals: int = 4  # validation points over the run (selection keeps the best)
    label_smoothing: float = 0.05
    bf16: bool = False  # autocast the adapted layers (CPU bf16 only helps with AMX or avx512_bf16)
    seed: int = 0
    distill_alpha: float = 0.0  # weight of the teacher's soft labels (pipelines/training/distill.py)
    temperature: float = 2.0


def tune(
    head: EtaFusionHead,
    encoder: TextEncoder,
    prefix: Prefix,
    texts: Sequence[str],
    image: Tensor | None,
    image_mask: Tensor | None,
    y: Tensor,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    weights: Tensor,
    val_score: Callable[[np.ndarray, np.ndarray], float],
    cfg: TuneConfig,
    soft: Tensor | None = None,
    has_soft: Tensor | None = None,
) -> tuple[EtaFusionHead, dict]:
    """Train head.text_adapter and the head jointly (no author prior here: u is built later from
    the tuned features). Returns the head at its best validation point, and the history.

    With `soft` ([N, C] teacher probabilities per table row, `has_soft` [N] where known) and
    `cfg.distill_alpha` > 0, the loss is the distillation loss of pipelines/training/distill.py."""
    adapter = head.text_adapter
    assert adapter is not None
    if adapter.first_layer != prefix.start:
        raise ValueError(f"prefix starts at layer {prefix.start}, adapter at {adapter.first_layer}")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = adapter.wrap(copy.deepcopy(encoder.model))
    layers = range(prefix.start, len(model.encoder.layer))
    rows_of = np.array([prefix.row[t if t else ""] for t in texts])
    views = head.views

    def head_inputs(rows: np.ndarray, text: Tensor) -> tuple[dict, dict]:
        x, mask = {"text": text}, {"text": torch.tensor([bool(texts[r].strip()) for r in rows])}
        if "image" in views and image is not None and image_mask is not None:
            i = torch.as_tensor(rows, dtype=torch.long)
            x["image"], mask["image"] = image[i], image_mask[i]
        return x, mask

    def evaluate() -> float:
        model.eval()
        head.eval()
        with torch.inference_mode():
            order = np.argsort([prefix.length(rows_of[r]) for r in val_rows], kind="stable")
            out = np.empty(len(val_rows), dtype=np.int64)
            for s in range(0, len(order), 256):
                sel = order[s : s + 256]
                rows = val_rows[sel]
                feats = pooled_from_prefix(model, prefix, rows_of[rows].tolist(), layers)
                x, mask = head_inputs(rows, feats)
                out[sel] = head(x, {}, {}, mask).logits.argmax(-1).numpy()
        return val_score(out, val_rows)

    steps = max(1, cfg.samples // cfg.batch_size)
    draws = torch.multinomial(weights, steps * cfg.batch_size, replacement=True, generator=gen).numpy()
    # group draws of similar length: 16 batches per pool, sorted, then the batches shuffled
    batches = length_grouped_batches(draws, lambda i: prefix.length(rows_of[train_rows[i]]), cfg.batch_size, gen)
    steps = len(batches)
    opt, sched, params = adapter_optimizer(adapter, head, cfg.lr, cfg.head_lr, cfg.wd, steps, cfg.warmup)
    eval_at = set(eval_points(steps, cfg.evals))
    sel, t0, running = BestOnValidation(), time.time(), float("nan")
    bar = tqdm(range(1, steps + 1), desc="adapter + head", unit="step")
    for step in bar:
        model.train()
        head.train()
        rows = train_rows[batches[step - 1]]
        h, mask = prefix.batch(rows_of[rows].tolist())
        with bf16_autocast(cfg.bf16):
            top = run_layers(model, layers, h, mask)
        x, m = head_inputs(rows, TextEncoder.mean_pool(top.float(), mask))
        logits = head(x, {}, {}, m).logits
        r = torch.as_tensor(rows, dtype=torch.long)
        if soft is not None and has_soft is not None and cfg.distill_alpha > 0:
            loss = distillation_loss(
                logits, y[r], soft[r], has_soft[r], cfg.distill_alpha, cfg.temperature, cfg.label_smoothing
            )
        else:
            loss = F.cross_entropy(logits, y[r], label_smoothing=cfg.label_smoothing)
        clipped_step(loss, opt, sched, params)
        running = smoothed(running, loss)
        bar.set_postfix(loss=f"{running:.3f}")
        if step in eval_at:
            score = evaluate()
            sel.record(head, step, running, score, time.time() - t0)
            bar.write(f"step {step}/{steps}: val mean macro-F1 {score:.4f}")
    bar.close()
    return head, {
        **sel.restore(head),
        "steps": steps,
        "seconds": round(time.time() - t0, 1),
    }
