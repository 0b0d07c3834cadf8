"""SPP-SCL recipes: ("spp-scl", "mvsa-single") text+image, ("spp-scl", "mvsa-multiple") and
("spp-scl", "hfm") text only (their images are not available here: no image branch, no CMF,
no L_cli, no inter-modal step; the classifier sees T_p).

Training follows paper Table 2 (lambda, lr, StepLR step x0.5, batch; wd 1e-6, up to 150
epochs, AdamW) with the two-step update of Algorithm 1 per batch. The paper has no selection
rule: we keep the epoch with the best validation score ((accuracy + F1) / 2, F1 = weighted for
MVSA, macro for HFM) and stop after `patience` epochs without improvement. The test split is
only touched by `evaluate`.

Options (`--set key=value`): two_step, use_image, lr, batch_size, lam, step_size, patience,
condition_similarity (cosine|raw), bank_size, threads (torch CPU threads), tag (checkpoint
suffix for ablations: spp-scl-<dataset>-<tag>).

`evaluate` also fits the strongest cheap text-only baseline on the same split -- logistic
regression on the frozen MiniLM sentence embedding, C picked on validation -- and reports it
under `baseline_lr_*`, plus the paper-style in-batch CMF evaluation (fixed batch size 64,
file order) under `batch64_*` for multimodal models.
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from models.spp_scl import SPP_SCL_VERSION, SPPSCL, SPPSCLBatch, SPPSCLConfig, two_step_update
from pipelines.datasets import mvsa
from pipelines.datasets.base import SENTIMENT_LABELS, Record
from pipelines.datasets.clmlf import HFM_LABELS, load_hfm
from pipelines.metrics import classification_metrics
from pipelines.recipes import RecipeContext, machine_detail, recipe
from pipelines.state_cache import TextStates, cached_image_maps, cached_text_states


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    labels: tuple[str, ...]
    use_image: bool
    f1_key: str  # the dataset's reported F1
    lam: float
    lr: float
    step_size: int
    batch_size: int


SPECS: dict[str, DatasetSpec] = {  # paper Table 2
    "mvsa-single": DatasetSpec("mvsa-single", SENTIMENT_LABELS, True, "f1_weighted", 5.0, 1e-4, 10, 64),
    "mvsa-multiple": DatasetSpec("mvsa-multiple", SENTIMENT_LABELS, False, "f1_weighted", 5.0, 1e-4, 15, 128),
    "hfm": DatasetSpec("hfm", HFM_LABELS, False, "f1_macro", 10.0, 5e-5, 5, 256),
}
DEFAULT_EPOCHS = 150
DEFAULT_PATIENCE = 20
EVAL_BATCH = 64
WEIGHT_DECAY = 1e-6


def _load_records(name: str, data_dir: Path) -> list[Record]:
    if name == "mvsa-single":
        return mvsa.load_single(data_dir)
    if name == "mvsa-multiple":
        return mvsa.load_multiple(data_dir)
    if name == "hfm":
        return load_hfm(data_dir)
    raise KeyError(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Prepared:
    """One data set's records with their cached frozen features, split indices and labels."""

    spec: DatasetSpec
    records: list[Record]
    labels: torch.Tensor
    split_idx: dict[str, torch.Tensor]
    text: TextStates
    image: torch.Tensor | None
    info: dict[str, Any] = field(default_factory=dict)

    def batch(self, idx: torch.Tensor, with_image: bool) -> SPPSCLBatch:
        cls, toks, lens = self.text.batch(idx)
        img = self.image[idx].float() if with_image and self.image is not None else None
        return SPPSCLBatch(cls, toks, lens, img, self.labels[idx])


def _limit(records: list[Record], limit: int | None, seed: int) -> list[Record]:
    """A seeded random slice of at most `limit` records per split (tests train on a slice)."""
    if not limit:
        return records
    rng = random.Random(seed)
    out: list[Record] = []
    for split in ("train", "val", "test"):
        rs = [r for r in records if r.split == split]
        out += rng.sample(rs, min(limit, len(rs))) if len(rs) > limit else rs
    return out


def prepare(ctx: RecipeContext, spec: DatasetSpec, with_image: bool, max_tokens: int = 64) -> Prepared:
    from models.text_encoder import TextEncoder

    records = _limit(_load_records(spec.name, ctx.data_dir), ctx.limit, ctx.seed)
    labels = torch.tensor([spec.labels.index(r.label) for r in records], dtype=torch.long)
    split_idx = {
        s: torch.tensor([i for i, r in enumerate(records) if r.split == s], dtype=torch.long)
        for s in ("train", "val", "test")
    }
    text = cached_text_states(
        TextEncoder(max_length=max_tokens, device=ctx.device),
        [r.text for r in records],
        ctx.cache_dir,
        layers=(3, 4, 5, 6),
        max_tokens=max_tokens,
    )
    image = None
    if with_image:
        from models.image_encoder import ImageEncoder

        missing = [r.uid for r in records if r.image is None]
        if missing:
            raise ValueError(f"{len(missing)} records have no image (e.g. {missing[:3]})")
        image = cached_image_maps(ImageEncoder(device=ctx.device), [r.image for r in records], ctx.cache_dir)
    info = {
        "n": {s: len(v) for s, v in split_idx.items()},
        "max_tokens": max_tokens,
        "truncated_texts": int((text.lengths >= max_tokens - 2).sum()),
    }
    return Prepared(spec, records, labels, split_idx, text, image, info)


@torch.no_grad()
def predict(
    model: SPPSCL, prep: Prepared, split: str, context: str = "auto", batch_size: int = EVAL_BATCH
) -> np.ndarray:
    """Logits [N, C] of one split, in split order."""
    model.eval()
    idx = prep.split_idx[split]
    out = [
        model(prep.batch(idx[s : s + batch_size], model.image is not None), context=context).logits
        for s in range(0, len(idx), batch_size)
    ]
    return torch.cat(out).numpy()


def _metrics(spec: DatasetSpec, logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return classification_metrics(logits, y, labels=spec.labels)


def _score(spec: DatasetSpec, m: dict[str, float]) -> float:
    return 0.5 * (m["accuracy"] + m[spec.f1_key])


def _bank_indices(n_train: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 7919)
    return torch.randperm(n_train, generator=g)[: min(size, n_train)]


def _bool(v: Any) -> bool:
    return v if isinstance(v, bool) else str(v).lower() in {"1", "true", "yes", "on"}


class SPPSCLRecipe:
    """train(ctx) -> checkpoint dir; evaluate(ctx, split) -> metrics dict."""

    def __init__(self, dataset: str) -> None:
        self.spec = SPECS[dataset]

    # -- configuration -------------------------------------------------------------------------
    def _settings(self, ctx: RecipeContext) -> dict[str, Any]:
        o, s = ctx.options, self.spec
        use_image = _bool(o.get("use_image", s.use_image))
        if use_image and not s.use_image:
            raise ValueError(f"{s.name}: no images are available, use_image must be false")
        return {
            "use_image": use_image,
            "two_step": _bool(o.get("two_step", True)),
            "lr": float(o.get("lr", s.lr)),
            "batch_size": int(o.get("batch_size", s.batch_size)),
            "lam": float(o.get("lam", s.lam)),
            "step_size": int(o.get("step_size", s.step_size)),
            "epochs": int(ctx.epochs or o.get("epochs", DEFAULT_EPOCHS)),
            "patience": int(o.get("patience", DEFAULT_PATIENCE)),
            "condition_similarity": str(o.get("condition_similarity", "cosine")),
            "bank_size": int(o.get("bank_size", int(o.get("batch_size", s.batch_size)) - 1)),
            "weight_decay": WEIGHT_DECAY,
        }

    def _dir(self, ctx: RecipeContext) -> Path:
        if ctx.checkpoint is not None:
            return Path(ctx.checkpoint)
        tag = ctx.options.get("tag")
        return Path(ctx.checkpoints_dir) / (f"spp-scl-{self.spec.name}" + (f"-{tag}" if tag else ""))

    # -- training ------------------------------------------------------------------------------
    def train(self, ctx: RecipeContext) -> Path:
        st = self._settings(ctx)
        spec = self.spec
        if "threads" in ctx.options:
            torch.set_num_threads(int(ctx.options["threads"]))
        seed_everything(ctx.seed)
        prep = prepare(ctx, spec, st["use_image"])
        cfg = SPPSCLConfig(
            num_classes=len(spec.labels),
            use_image=st["use_image"],
            lam=st["lam"],
            two_step=st["two_step"],
            condition_similarity=st["condition_similarity"],
            bank_size=st["bank_size"],
        )
        seed_everything(ctx.seed)
        model = SPPSCL(cfg).to(ctx.device)
        opt = torch.optim.AdamW(model.parameters(), lr=st["lr"], weight_decay=st["weight_decay"])
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=st["step_size"], gamma=0.5)
        train_idx = prep.split_idx["train"]
        bank = train_idx[_bank_indices(len(train_idx), cfg.bank_size, ctx.seed)]
        y_val = prep.labels[prep.split_idx["val"]].numpy()
        gen = torch.Generator().manual_seed(ctx.seed)
        best: dict[str, Any] = {"score": -1.0}
        history: list[dict[str, Any]] = []
        bad, t0 = 0, time.time()
        bs = st["batch_size"]
        for epoch in range(1, st["epochs"] + 1):
            perm = train_idx[torch.randperm(len(train_idx), generator=gen)]
            batches = [perm[s : s + bs] for s in range(0, len(perm), bs)]
            batches = [b for b in batches if len(b) > 1]  # BatchNorm needs >= 2 samples
            losses = _epoch(model, opt, prep, batches, st["use_image"], ctx.device, epoch)
            sched.step()
            model.set_bank(prep.batch(bank, st["use_image"]))
            m = _metrics(spec, predict(model, prep, "val"), y_val)
            score = _score(spec, m)
            rec = {
                "epoch": epoch,
                "val_accuracy": round(m["accuracy"], 4),
                f"val_{spec.f1_key}": round(m[spec.f1_key], 4),
                **losses,
                "elapsed_s": round(time.time() - t0, 1),
            }
            history.append(rec)
            print(json.dumps(rec), flush=True)
            if score > best["score"]:
                best = {"score": score, "epoch": epoch, "state": copy.deepcopy(model.state_dict()), "val": m}
                bad = 0
            else:
                bad += 1
                if bad >= st["patience"]:
                    break
        train_s = time.time() - t0
        model.load_state_dict(best["state"])
        out_dir = self._dir(ctx)
        metrics = {"val": best["val"]}
        metrics["test"] = _metrics(spec, predict(model, prep, "test"), prep.labels[prep.split_idx["test"]].numpy())
        card = self._card(ctx, st, prep, cfg, bank, best, history, train_s, metrics)
        save_checkpoint(out_dir, model, card)
        print(
            f"saved {out_dir}: best epoch {best['epoch']} val {_fmt(best['val'], spec)} "
            f"test {_fmt(metrics['test'], spec)} ({train_s:.0f}s)",
            flush=True,
        )
        return out_dir

    def _card(
        self,
        ctx: RecipeContext,
        st: dict[str, Any],
        prep: Prepared,
        cfg: SPPSCLConfig,
        bank: torch.Tensor,
        best: dict[str, Any],
        history: list[dict[str, Any]],
        train_s: float,
        metrics: dict[str, Any],
    ) -> dict[str, Any]:
        """The model card: data, encoders, config, training choices, metrics and where it ran."""
        spec = self.spec
        return {
            "model": "spp-scl",
            "version": SPP_SCL_VERSION,
            "dataset": spec.name,
            "data": {
                "splits": prep.info["n"],
                "source": str(ctx.data_dir),
                "labels": list(spec.labels),
                "split_rule": "CLMLF standard split",
                "limit_per_split": ctx.limit,
                "text_truncated_at_64_tokens": prep.info["truncated_texts"],
                "image_view": "EfficientNet-Lite0 feature maps"
                if st["use_image"]
                else "absent (images not available / text-only run): no image branch, CMF, L_cli or step 2",
            },
            "encoders": {
                "text": "all-MiniLM-L6-v2 (frozen, layers 3-6)",
                "image": "EfficientNet-Lite0 ImageNet (frozen, 1280x7x7)" if st["use_image"] else None,
            },
            "config": cfg.to_dict(),
            "training": {
                **st,
                "seed": ctx.seed,
                "best_epoch": best["epoch"],
                "epochs_run": len(history),
                "train_seconds": round(train_s, 1),
                "selection": f"best val (accuracy + {spec.f1_key}) / 2",
                "bank_train_indices": bank.tolist(),
            },
            "metrics": metrics,
            "history": history,
            "resolutions": RESOLUTIONS,
            "command": ctx.command,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_detail(ctx.device),
        }

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, ctx: RecipeContext, split: str) -> dict[str, Any]:
        split = {"dev": "val", "valid": "val", "validation": "val"}.get(split, split)
        model, card = load_checkpoint(self._dir(ctx), ctx.device)
        spec = self.spec
        prep = prepare(ctx, spec, model.cfg.use_image)
        y = prep.labels[prep.split_idx[split]].numpy()
        out: dict[str, Any] = {
            "model": "spp-scl",
            "dataset": spec.name,
            "split": split,
            "checkpoint": str(self._dir(ctx)),
        }
        out.update(_metrics(spec, predict(model, prep, split), y))
        if model.cfg.use_image:
            b = _metrics(spec, predict(model, prep, split, context="batch"), y)
            out.update({f"batch64_{k}": b[k] for k in ("accuracy", spec.f1_key)})
        out.update({f"baseline_lr_{k}": v for k, v in lr_baseline(ctx, prep, split).items()})
        out["paper_accuracy"], out[f"paper_{spec.f1_key}"] = PAPER[spec.name]
        return out


PAPER: dict[str, tuple[float, float]] = {
    "mvsa-single": (0.8133, 0.8015),
    "mvsa-multiple": (0.7871, 0.7753),
    "hfm": (0.9469, 0.9450),
}

RESOLUTIONS: dict[str, str] = {
    "encoders": "both frozen (official code); MiniLM layers 3-6 replace BERT 9-12, "
    "EfficientNet-Lite0 replaces ResNet-50; text encoder dropout off",
    "text_pooling": "packed BiLSTM over word tokens only, masked mean (pad-length independent); "
    "the code's unmasked mean over 202 padded positions is not reproduced",
    "cmf_batch_attention": "training attends across the batch; evaluation attends over a stored "
    "context bank of batch_size-1 training samples plus the sample itself (batch-independent "
    "predictions); batch64_* reports the paper-style fixed-batch evaluation",
    "supcon_positives": "same label, j != i; self excluded from the denominator; mean over "
    "positives; anchors without positives skipped",
    "clm_positives": "same label incl. the paired sample (code); denominator over all texts",
    "condition_similarity": "S = sigmoid(cosine(T', I')) by default (paper); 'raw' = official code. "
    "On MVSA-Single the cosine condition almost never fires; the raw one fires on ~90% of batches",
    "hfm_classes": "C = 2",
    "selection": "best validation (accuracy + F1)/2 with early stopping; test never used for selection",
}


def _epoch(
    model: SPPSCL,
    opt: torch.optim.Optimizer,
    prep: Prepared,
    batches: list[torch.Tensor],
    use_image: bool,
    device: str,
    epoch: int,
) -> dict[str, Any]:
    """One pass of two-step updates over ``batches``; the mean of each loss term (L_clm over the
    batches that took the second step)."""
    sums = {"ce": 0.0, "cli": 0.0, "clt": 0.0, "clm": 0.0, "second": 0}
    for b in tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=len(batches) < 5):
        s = two_step_update(model, opt, prep.batch(b, use_image).to(device))
        sums["ce"] += s.loss_ce
        sums["cli"] += s.loss_cli
        sums["clt"] += s.loss_clt
        sums["clm"] += s.loss_clm
        sums["second"] += int(s.second_step)
    nb = max(len(batches), 1)
    return {
        "ce": round(sums["ce"] / nb, 4),
        "cli": round(sums["cli"] / nb, 4),
        "clt": round(sums["clt"] / nb, 4),
        "clm": round(sums["clm"] / max(sums["second"], 1), 4),
        "second_steps": sums["second"],
        "batches": nb,
    }


def _fmt(m: dict[str, float], spec: DatasetSpec) -> str:
    return f"acc {m['accuracy']:.4f} {spec.f1_key} {m[spec.f1_key]:.4f}"


def lr_baseline(ctx: RecipeContext, prep: Prepared, split: str) -> dict[str, float]:
    """Logistic regression on the frozen MiniLM sentence embedding (C chosen on validation)."""
    from sklearn.linear_model import LogisticRegression

    from models.text_encoder import TextEncoder
    from pipelines.feature_cache import cached_text_features

    x = cached_text_features(TextEncoder(device=ctx.device), [r.text for r in prep.records], ctx.cache_dir).numpy()
    y = prep.labels.numpy()
    tr, va, te = (prep.split_idx[s].numpy() for s in ("train", "val", split))
    best: tuple[float, Any] = (-1.0, None)
    for c in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
        clf = LogisticRegression(C=c, max_iter=3000).fit(x[tr], y[tr])
        s = _score(prep.spec, _metrics(prep.spec, clf.predict(x[va]), y[va]))
        if s > best[0]:
            best = (s, clf)
    m = _metrics(prep.spec, best[1].predict(x[te]), y[te])
    return {"accuracy": m["accuracy"], prep.spec.f1_key: m[prep.spec.f1_key], "C": float(best[1].C)}


def save_checkpoint(out_dir: Path, model: SPPSCL, card: dict[str, Any]) -> None:
    """model.safetensors + card.json."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"model": "spp-scl", "version": SPP_SCL_VERSION})
    (out_dir / "card.json").write_text(json.dumps(card, indent=2, default=str), encoding="utf-8")


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[SPPSCL, dict[str, Any]]:
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"no SPP-SCL checkpoint at {path} (train it first)")
    card = json.loads((path / "card.json").read_text(encoding="utf-8"))
    model = SPPSCL(SPPSCLConfig.from_dict(card["config"]))
    state = load_file(str(path / "model.safetensors"))
    model.bank_image = state["bank_image"].clone()
    model.bank_text = state["bank_text"].clone()
    model.load_state_dict(state)
    return model.to(device).eval(), card


for _name in SPECS:
    recipe("spp-scl", _name)(lambda _n=_name: SPPSCLRecipe(_n))
