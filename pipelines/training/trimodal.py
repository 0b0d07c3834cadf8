"""Recipes for the tri-modal models (INPNRLN-MD, GHRNN-CMA, the late-fusion baseline, and any model
added to `TRIMODAL_MODELS`) on every tri-modal data set, with one generic training loop.

Models: `TRIMODAL_MODELS[name] = TriModalSpec(build=(TriModalDims, options) -> nn.Module, ...)`.
A model takes a `models.trimodal.TriModalBatch` and returns a `TriModalOutput`; the loop adds
the task loss (L1 / MSE, or cross-entropy) to the model's `aux_loss`. `register_trimodal(name,
spec)` adds a model and its recipes for every data set below.

Data sets (`DATASETS`; views that a set lacks are missing for every sample and masked):
- "mmsa": an MMSA pickle at `--set path=...` (MOSI/MOSEI/CH-SIMS layout), regression; metrics
  of docs/models.md section 6 (`--set metrics=sims` for CH-SIMS); text + audio + vision.
- "emodb": EmoDB, 7 emotions; audio frames from `models.audio_frontend`, text = the spoken German
  sentence through MiniLM (English-trained; the 10 sentences are each spoken in every emotion, so
  text carries no label information), or with `--set text_source=transcript --set transcripts=RUN`
  what Whisper heard (`voxpop asr bench` run file), or `text_source=none` (audio only); no video.
  Speaker-independent: test speakers 03 (m), 08 (f), validation 09 (f), training the other 7.
- "mvsa-single": 3 classes; MiniLM token states + EfficientNet-Lite0 7x7 regions; no audio.
- "mosi-audio": binary; audio only: the utterance's 73-d openSMILE vector (audio view) and the
  video's utterance sequence (context, carried in the vision slot); no text; 6 of the 62 training
  videos are the validation set.

Options (`--set key=value`): lr, batch_size, epochs, patience, weight_decay, tag (checkpoint suffix),
path / metrics (mmsa), context (mosi-audio), text_source / transcripts (emodb, mmsa), standardize, threads,
and any field of the model's config (e.g. dropout, d_z, loss_in_weight, text_pool, eln_d).

Selection: the epoch with the best validation score (classification: (accuracy + weighted F1)/2,
regression: lowest MAE), with early stopping on it; the test split is never used for selection.
Checkpoint: `<checkpoints_dir>/<model>-<dataset>[-tag]/` with model.safetensors + card.json.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from models.trimodal import TriModalDims, task_loss
from pipelines.datasets.trimodal import (
    Standardizer,
    TriModalSplit,
    collate_trimodal,
    save_standardizers,
    standardize,
)
from pipelines.metrics import (
    classification_metrics,
    format_metric_line,
    mosi_regression_metrics,
    sims_regression_metrics,
)
from pipelines.recipes import RecipeContext, machine_detail, recipe

EVAL_BATCH = 128


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------
@dataclass
class TriModalSpec:
    """How to build and train one tri-modal model."""

    build: Callable[[TriModalDims, dict[str, Any]], nn.Module]
    regression_loss: str = "l1"  # "l1" | "mse"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 32
    epochs: int = 30
    patience: int = 8
    grad_clip: float | None = 1.0
    notes: str = ""


def _coerce(value: Any, default: Any) -> Any:
    """A `--set` string to the type of the config field's default."""
    if not isinstance(value, str):
        return value
    if isinstance(default, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if default is None or isinstance(default, list | tuple | dict):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def make_config(cls: type, dims: TriModalDims, opts: dict[str, Any]) -> Any:
    """A model config dataclass from the dims plus any matching options (`eln_<field>` for ELN)."""
    cfg: dict[str, Any] = {
        "text_dim": dims.text,
        "audio_dim": dims.audio,
        "vision_dim": dims.vision,
        "n_outputs": dims.n_outputs,
    }
    defaults = cls()  # type: ignore[call-arg]
    names = {f.name for f in fields(cls)}
    for k, v in opts.items():
        if k in names and k not in cfg:
            cfg[k] = _coerce(v, getattr(defaults, k))
    eln = {k[4:]: v for k, v in opts.items() if k.startswith("eln_")}
    if eln and "eln" in names:
        from models.inpnrln_md import ELNConfig

        base = ELNConfig()
        cfg["eln"] = {k: _coerce(v, getattr(base, k)) for k, v in eln.items()}
        if "d" in names and "d" in cfg["eln"]:
            cfg["d"] = cfg["eln"]["d"]
    return cls(**cfg)


def _build_inpnrln(dims: TriModalDims, opts: dict[str, Any]) -> nn.Module:
    from models.inpnrln_md import InpnrlnConfig, InpnrlnMD

    return InpnrlnMD(make_config(InpnrlnConfig, dims, opts))


def _build_ghrnn(dims: TriModalDims, opts: dict[str, Any]) -> nn.Module:
    from models.ghrnn_cma import GhrnnCma, GhrnnCmaConfig

    if "text_pool" in opts:  # GHRNN-CMA reads the whole text sequence; no pooling option
        opts = {k: v for k, v in opts.items() if k != "text_pool"}
    return GhrnnCma(make_config(GhrnnCmaConfig, dims, opts))


def _build_late(dims: TriModalDims, opts: dict[str, Any]) -> nn.Module:
    from models.late_fusion import LateFusion, LateFusionConfig

    return LateFusion(make_config(LateFusionConfig, dims, opts))


def _build_amsgfn(dims: TriModalDims, opts: dict[str, Any]) -> nn.Module:
    from models.amsgfn import AMSGFN, AMSGFNConfig

    return AMSGFN(make_config(AMSGFNConfig, dims, opts))


def _build_tecafn(dims: TriModalDims, opts: dict[str, Any]) -> nn.Module:
    from models.tecafn import TeCaFN, TeCaFNConfig

    return TeCaFN(make_config(TeCaFNConfig, dims, opts))


TRIMODAL_MODELS: dict[str, TriModalSpec] = {
    "inpnrln-md": TriModalSpec(_build_inpnrln, notes="loss = task + Loss_in (InfoNCE t-a, t-v, weight 1)"),
    "ghrnn-cma": TriModalSpec(_build_ghrnn, notes="loss = task + Loss_in (InfoNCE t-a, t-v, weight 1)"),
    "late-fusion": TriModalSpec(_build_late, notes="per-view ELN/text encoder + linear head, mean of heads"),
    # KuDA's schedule (docs/models.md section 4): batch 32, lr about 1e-4, wd 1e-5, MSE; selection on validation.
    "amsgfn": TriModalSpec(
        _build_amsgfn,
        regression_loss="mse",
        lr=1e-4,
        weight_decay=1e-5,
        epochs=50,
        patience=10,
        notes="loss = MSE/CE + 0.1 L_align (NT-Xent t-a, t-v, a-v) "
        "+ 0.1 sum_m KuDA-NCE(X_p^[N], X_m); extras: modality_weights = s",
    ),
    # TeCaFN code schedule (docs/models.md section 5): Adam lr 1e-3, wd 1e-4, batch 32, clip 1.0, 40 epochs.
    "tecafn": TriModalSpec(
        _build_tecafn,
        regression_loss="l1",
        lr=1e-3,
        weight_decay=1e-4,
        epochs=40,
        patience=10,
        notes="loss = L1/CE + 0.1 (L_tcon + L_bicon) + 0.1 L_ap; replacement gate p=0.5 in training only",
    ),
}


# --------------------------------------------------------------------------------------------
# data sets
# --------------------------------------------------------------------------------------------
@dataclass
class TriModalData:
    name: str
    splits: dict[str, TriModalSplit]  # "train", "val", "test"
    labels: tuple[str, ...]  # class names; () for regression
    metric: str  # "mosi" | "sims" | "classification"
    text_pool: str  # "cls" (BERT features) | "mean" (MiniLM)
    views: dict[str, str]
    split_rule: str
    defaults: dict[str, Any] = field(default_factory=dict)  # per-data-set training defaults
    info: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Standardizer] = field(default_factory=dict)  # z-scoring fitted on train (stream reuses it)

    @property
    def n_outputs(self) -> int:
        return len(self.labels) if self.labels else 1

    @property
    def dims(self) -> TriModalDims:
        t, a, v = self.splits["train"].dims
        return TriModalDims(t, a, v, self.n_outputs)


def _bool(v: Any) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() in {"1", "true", "yes", "on"}


def _data_mmsa(ctx: RecipeContext) -> TriModalData:
    from pipelines.datasets.mmsa import load_mmsa

    if "path" not in ctx.options:
        raise ValueError("dataset 'mmsa' needs --set path=/path/to/mmsa.pkl")
    path = Path(str(ctx.options["path"]))
    sp = load_mmsa(path, str(ctx.options.get("text_source", "auto")))
    splits = {"train": sp["train"], "val": sp["valid"], "test": sp["test"]}
    metric = str(ctx.options.get("metrics", "mosi"))
    if metric not in {"mosi", "sims"}:
        raise ValueError("metrics must be 'mosi' or 'sims'")
    return TriModalData(
        "mmsa",
        splits,
        (),
        metric,
        "cls",
        {"text": "MMSA text features ([CLS] at position 0)", "audio": "MMSA audio", "vision": "MMSA vision"},
        "MMSA train/valid/test",
        {"epochs": 30, "standardize": True},
        {"path": str(path)},
    )


def _data_emodb(ctx: RecipeContext) -> TriModalData:
    from pipelines.datasets import emodb

    source = str(ctx.options.get("text_source", "sentence"))
    heard = ctx.options.get("transcripts")
    splits = emodb.load_emodb_trimodal(
        ctx.data_dir,
        ctx.cache_dir,
        device=ctx.device,
        text_source=source,
        transcripts=Path(str(heard)) if heard else None,
    )
    text = {
        "sentence": "MiniLM token states of the German sentence (no label information)",
        "transcript": f"MiniLM token states of what Whisper heard in the clip ({heard}; none heard: masked)",
        "none": "absent (audio only)",
    }[source]
    info = {"text_source": source, **({"transcripts": str(heard)} if heard else {})}
    return TriModalData(
        "emodb",
        splits,
        emodb.EMOTIONS,
        "classification",
        "mean",
        {"text": text, "audio": emodb.FRONTEND_DESCRIPTION, "vision": "absent"},
        emodb.SPLIT_RULE,
        {"epochs": 100, "patience": 20, "standardize": True, "batch_size": 16},
        info,
    )


def _data_mvsa(ctx: RecipeContext) -> TriModalData:
    from pipelines.datasets import mvsa_trimodal

    splits = mvsa_trimodal.load_mvsa_single_trimodal(ctx.data_dir, ctx.cache_dir, device=ctx.device)
    return TriModalData(
        "mvsa-single",
        splits,
        mvsa_trimodal.LABELS,
        "classification",
        "mean",
        {
            "text": "MiniLM last-layer [CLS] + word-token states (<= 64 tokens)",
            "audio": "absent",
            "vision": "EfficientNet-Lite0 feature map, 49 regions x 1280",
        },
        "CLMLF standard split 3611/450/450",
        {"epochs": 20, "patience": 6, "standardize": False},
    )


def _data_mosi_audio(ctx: RecipeContext) -> TriModalData:
    from pipelines.datasets import mosi_audio

    context = _bool(ctx.options.get("context", True))
    splits = mosi_audio.load_mosi_audio(ctx.data_dir, context=context)
    return TriModalData(
        "mosi-audio",
        splits,
        mosi_audio.LABELS,
        "classification",
        "cls",
        {
            "text": "absent",
            "audio": "the utterance's 73-d openSMILE vector (length 1)",
            "vision": "context: the video's utterance vectors (vision slot)" if context else "absent",
        },
        "bc-LSTM speaker-independent 62/31 videos; 6 training videos (seed 0) held out for validation",
        {"epochs": 40, "patience": 10, "standardize": True},
    )


DATASETS: dict[str, Callable[[RecipeContext], TriModalData]] = {
    "mmsa": _data_mmsa,
    "emodb": _data_emodb,
    "mvsa-single": _data_mvsa,
    "mosi-audio": _data_mosi_audio,
}


def prepare_data(dataset: str, ctx: RecipeContext) -> TriModalData:
    """Load a data set, cap each split at ctx.limit (seeded), z-score audio/vision with train stats."""
    data = DATASETS[dataset](ctx)
    if ctx.limit:
        rng = np.random.default_rng(ctx.seed)
        data.splits = {
            s: sp.subset(np.sort(rng.permutation(len(sp))[: ctx.limit])) if len(sp) > ctx.limit else sp
            for s, sp in data.splits.items()
        }
    if _bool(ctx.options.get("standardize", data.defaults.get("standardize", True))):
        tr, (va, te), data.stats = standardize(data.splits["train"], [data.splits["val"], data.splits["test"]])
        data.splits = {"train": tr, "val": va, "test": te}
        data.info["standardized"] = ["audio", "vision"]
    data.info["n"] = {s: len(sp) for s, sp in data.splits.items()}
    return data


# --------------------------------------------------------------------------------------------
# training / evaluation
# --------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def predict(model: nn.Module, split: TriModalSplit, device: str = "cpu", batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Predictions of one split in order: [N] scores or [N, C] logits."""
    model.eval()
    out = []
    for s in range(0, len(split), batch_size):
        batch, _ = collate_trimodal(split, np.arange(s, min(s + batch_size, len(split))))
        out.append(model(batch.to(device)).pred.float().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def compute_metrics(data: TriModalData, pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    if data.metric == "mosi":
        return mosi_regression_metrics(pred, y)
    if data.metric == "sims":
        return sims_regression_metrics(pred, y)
    return classification_metrics(pred, y, data.labels)


def selection_score(data: TriModalData, m: dict[str, float]) -> float:
    """Higher is better: (accuracy + weighted F1)/2 for classes, -MAE for regression."""
    if data.metric == "classification":
        return 0.5 * (m["accuracy"] + m["f1_weighted"])
    return -m["mae"]


class TriModalRecipe:
    """train(ctx) -> checkpoint dir; evaluate(ctx, split) -> metrics dict (+ "line")."""

    def __init__(self, model: str, dataset: str) -> None:
        self.model_name, self.dataset = model, dataset

    @property
    def spec(self) -> TriModalSpec:
        return TRIMODAL_MODELS[self.model_name]

    def _dir(self, ctx: RecipeContext) -> Path:
        if ctx.checkpoint is not None:
            return Path(ctx.checkpoint)
        tag = ctx.options.get("tag")
        return Path(ctx.checkpoints_dir) / (f"{self.model_name}-{self.dataset}" + (f"-{tag}" if tag else ""))

    def _settings(self, ctx: RecipeContext, data: TriModalData) -> dict[str, Any]:
        o, s, d = ctx.options, self.spec, data.defaults
        return {
            "lr": float(o.get("lr", d.get("lr", s.lr))),
            "weight_decay": float(o.get("weight_decay", s.weight_decay)),
            "batch_size": int(o.get("batch_size", d.get("batch_size", s.batch_size))),
            "epochs": int(ctx.epochs or o.get("epochs", d.get("epochs", s.epochs))),
            "patience": int(o.get("patience", d.get("patience", s.patience))),
            "grad_clip": s.grad_clip,
            "regression_loss": s.regression_loss,
        }

    def _build_options(self, ctx: RecipeContext, data: TriModalData) -> dict[str, Any]:
        skip = {
            "lr",
            "weight_decay",
            "batch_size",
            "epochs",
            "patience",
            "tag",
            "path",
            "metrics",
            "context",
            "standardize",
            "threads",
            "text_source",
            "transcripts",
        }
        opts: dict[str, Any] = {"text_pool": data.text_pool}
        opts.update({k: v for k, v in ctx.options.items() if k not in skip})
        return opts

    def train(self, ctx: RecipeContext) -> Path:
        if "threads" in ctx.options:
            torch.set_num_threads(int(ctx.options["threads"]))
        data = prepare_data(self.dataset, ctx)
        st = self._settings(ctx, data)
        build_opts = self._build_options(ctx, data)
        seed_everything(ctx.seed)
        model = self.spec.build(data.dims, build_opts).to(ctx.device)
        opt = torch.optim.Adam(model.parameters(), lr=st["lr"], weight_decay=st["weight_decay"])
        train, val = data.splits["train"], data.splits["val"]
        rng = np.random.default_rng(ctx.seed)
        best: dict[str, Any] = {"score": -float("inf"), "epoch": 0}
        history: list[dict[str, Any]] = []
        bad, t0, bs = 0, time.time(), st["batch_size"]
        bar = tqdm(range(1, st["epochs"] + 1), desc=f"{self.model_name}/{self.dataset}", unit="epoch")
        for epoch in bar:
            model.train()
            order = rng.permutation(len(train))
            sums = {"task": 0.0, "aux": 0.0}
            nb = 0
            for s in range(0, len(order), bs):
                idx = order[s : s + bs]
                if len(idx) < 2:  # in-batch contrastive terms need >= 2 samples
                    continue
                batch, y = collate_trimodal(train, idx)
                out = model(batch.to(ctx.device))
                lt = task_loss(out.pred, y.to(ctx.device), data.n_outputs, st["regression_loss"])
                loss = lt + out.aux_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if st["grad_clip"]:
                    nn.utils.clip_grad_norm_(model.parameters(), st["grad_clip"])
                opt.step()
                sums["task"] += float(lt.detach())
                sums["aux"] += float(out.aux_loss.detach())
                nb += 1
            m = compute_metrics(data, predict(model, val, ctx.device), val.labels)
            score = selection_score(data, m)
            rec = {
                "epoch": epoch,
                "task_loss": round(sums["task"] / max(nb, 1), 4),
                "aux_loss": round(sums["aux"] / max(nb, 1), 4),
                "val_score": round(score, 4),
                "elapsed_s": round(time.time() - t0, 1),
            }
            history.append(rec)
            bar.set_postfix(loss=rec["task_loss"], val=rec["val_score"])
            if score > best["score"]:
                best = {"score": score, "epoch": epoch, "state": copy.deepcopy(model.state_dict()), "val": m}
                bad = 0
            else:
                bad += 1
                if bad >= st["patience"]:
                    break
        train_s = time.time() - t0
        model.load_state_dict(best["state"])
        test = data.splits["test"]
        metrics = {"val": best["val"], "test": compute_metrics(data, predict(model, test, ctx.device), test.labels)}
        out_dir = self._dir(ctx)
        cfg = model.config.to_dict() if hasattr(model, "config") and hasattr(model.config, "to_dict") else {}
        card = {
            "model": self.model_name,
            "version": getattr(model, "version", self.model_name),
            "dataset": self.dataset,
            "task": data.dims.task,
            "labels": list(data.labels),
            "dims": {
                "text": data.dims.text,
                "audio": data.dims.audio,
                "vision": data.dims.vision,
                "n_outputs": data.dims.n_outputs,
            },
            "build_options": build_opts,
            "config": cfg,
            "data": {
                "splits": data.info["n"],
                "views": data.views,
                "split_rule": data.split_rule,
                "source": str(ctx.data_dir),
                "limit_per_split": ctx.limit,
                "standardized": data.info.get("standardized", []),
                **{k: v for k, v in data.info.items() if k not in {"n", "standardized"}},
            },
            "training": {
                **st,
                "seed": ctx.seed,
                "best_epoch": best["epoch"],
                "epochs_run": len(history),
                "train_seconds": round(train_s, 1),
                "optimizer": "Adam",
                "selection": "best validation "
                + ("(accuracy + weighted F1)/2" if data.metric == "classification" else "MAE"),
                "notes": self.spec.notes,
            },
            "metrics": metrics,
            "metric_line": {k: format_metric_line(v) for k, v in metrics.items()},
            "history": history,
            "command": ctx.command,
            "options": {k: str(v) for k, v in ctx.options.items()},
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_detail(ctx.device),
        }
        save_checkpoint(out_dir, model, card)
        if data.stats:
            save_standardizers(out_dir, data.stats, f"{self.dataset} train split, {data.info['n']['train']} samples")
        print(
            f"saved {out_dir}: best epoch {best['epoch']} ({train_s:.0f}s)\n"
            f"  val  {format_metric_line(metrics['val'])}\n  test {format_metric_line(metrics['test'])}",
            flush=True,
        )
        return out_dir

    def evaluate(self, ctx: RecipeContext, split: str) -> dict[str, Any]:
        split = {"dev": "val", "valid": "val", "validation": "val"}.get(split, split)
        path = self._dir(ctx)
        card = read_card(path)
        data = prepare_data(self.dataset, ctx)
        d = card["dims"]
        model = self.spec.build(TriModalDims(d["text"], d["audio"], d["vision"], d["n_outputs"]), card["build_options"])
        load_weights(model, path)
        model.to(ctx.device)
        sp = data.splits[split]
        m: dict[str, Any] = compute_metrics(data, predict(model, sp, ctx.device), sp.labels)
        out: dict[str, Any] = {
            "model": self.model_name,
            "dataset": self.dataset,
            "split": split,
            "checkpoint": str(path),
        }
        out.update(m)
        out["line"] = format_metric_line(m)
        return out


def save_checkpoint(out_dir: Path, model: nn.Module, card: dict[str, Any]) -> None:
    """model.safetensors + card.json."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(
        state,
        str(out_dir / "model.safetensors"),
        metadata={"model": str(card.get("model")), "version": str(card.get("version"))},
    )
    (out_dir / "card.json").write_text(json.dumps(card, indent=2, default=str), encoding="utf-8")


def read_card(path: Path) -> dict[str, Any]:
    p = Path(path) / "card.json"
    if not p.exists():
        raise FileNotFoundError(f"no tri-modal checkpoint at {path} (train it first)")
    return json.loads(p.read_text(encoding="utf-8"))


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
    return model.eval()


def load_trimodal(path: Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained tri-modal model from its checkpoint directory."""
    card = read_card(path)
    d = card["dims"]
    model = TRIMODAL_MODELS[card["model"]].build(
        TriModalDims(d["text"], d["audio"], d["vision"], d["n_outputs"]), card["build_options"]
    )
    return load_weights(model, path).to(device), card


def register_trimodal(name: str, spec: TriModalSpec, datasets: list[str] | None = None) -> None:
    """Add a tri-modal model and register its recipes for `datasets` (default: all)."""
    TRIMODAL_MODELS[name] = spec
    for ds in datasets or list(DATASETS):
        recipe(name, ds)(partial(TriModalRecipe, name, ds))


for _name in list(TRIMODAL_MODELS):
    register_trimodal(_name, TRIMODAL_MODELS[_name])


def refit_standardizers(ckpt_dir: Path, ctx: RecipeContext) -> Path | None:
    """Write `standardizer.json` for a checkpoint trained before the statistics were saved.

    Deterministic: the same data set loader, split rule and `Standardizer.fit` as in training, so
    the statistics are the ones the weights were trained against. None when the card says the data
    were not z-scored.
    """
    card = read_card(ckpt_dir)
    if not card.get("data", {}).get("standardized"):
        return None
    data = prepare_data(
        card["dataset"],
        RecipeContext(
            ctx.data_dir, ctx.checkpoints_dir, ctx.cache_dir, device=ctx.device, options={"standardize": True}
        ),
    )
    return save_standardizers(
        Path(ckpt_dir), data.stats, f"{card['dataset']} train split, {data.info['n']['train']} samples (refitted)"
    )
