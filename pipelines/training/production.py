"""Production sentiment head: train on the union of real social data, evaluate per test set.

Data (pipelines/datasets): airline tweets (time split 80/10/10), TweetEval sentiment (its
validation file split 70/15/15), MVSA-Single (CLMLF split, text + image), MELD sentiment
(speakers as users), MVSA-Multiple text (CLMLF split). One model is trained on the union of
the train splits; model selection uses the mean validation macro-F1 over the data sets (never
test). Baselines run through the same tables: VADER (compound >= 0.05 positive, <= -0.05
negative) and logistic regression on the frozen MiniLM embedding, fitted on the same union.

Recipes: ("production", D) for D in the data sets and "sentiment-union" (train always uses the
union; evaluate reports D, or all for the union); ("vader", D) and ("minilm-lr", D) likewise.
Options (`--set key=value`): datasets=a,b,c  use_image=true  eta_init=0.5  learn_eta=true
hidden=256 dropout=0.3 modality_dropout=0.5 lr=1e-3 wd=1e-2 epochs=20 batch_size=256
class_balance=0.5 patience=5 name=production threads=1
cached_only=false (train on the already-encoded subset of the train splits).
user_fusion=true (evaluate: false zeroes the author counts, i.e. the eta term off).

v4 tunes the text encoder: adapter_rank>0 trains a LoRA adapter on encoder layers
adapter_layers (pipelines/training/encoder_tuning.py) jointly with a head (stage 1, no author
prior), merges it, caches the tuned embeddings, then trains the eta head on them with the
author prior (stage 2, as v1-v3). adapter_rank=0 is the frozen-encoder recipe of v1-v3.
adapter_rank=16 adapter_alpha=32 adapter_layers=0,1,2,3,4,5 adapter_dropout=0.1 adapter_lr=1e-3
adapter_head_lr=2e-3 adapter_samples=64000 adapter_batch=32 adapter_evals=4 adapter_bf16=false
adapter_threads=2. v5 (the default) adapts all six layers with 64k samples; v4 was layers 4,5 and
32k samples (the promotion record in the checkpoint's card.json compares them; with all layers the
prefix is just the embeddings, so each step runs the whole encoder and training takes longer).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models.checkpoint import read_card, save_checkpoint, weights_digest
from models.image_encoder import IMAGE_ENCODER_VERSION
from models.production import EtaFusionHead
from models.registry import load_head
from models.text_encoder import TEXT_ENCODER_VERSION, TextEncoder, encoder_for_head
from pipelines.datasets.base import SENTIMENT_LABELS
from pipelines.metrics import classification_metrics
from pipelines.recipes import RecipeContext, recipe
from pipelines.sentiment_features import IMAGE, TEXT, SentimentTable, build
from pipelines.training.sampling import balanced_weights

ALL_SETS = ["airline", "tweeteval", "mvsa-single", "meld", "mvsa-multiple"]
UNION = "sentiment-union"
DEFAULTS: dict[str, Any] = {
    "datasets": ",".join(ALL_SETS),
    "use_image": True,
    "eta_init": 0.5,
    "learn_eta": True,
    "hidden": 256,
    "dropout": 0.3,
    "modality_dropout": 0.5,
    "lr": 1e-3,
    "wd": 1e-2,
    "epochs": 20,
    "batch_size": 256,
    "class_balance": 0.5,
    "patience": 5,
    "name": "production",
    "label_smoothing": 0.05,
    "threads": 1,
    "user_fusion": True,
    "adapter_rank": 16,
    "adapter_alpha": 32.0,
    "adapter_layers": "0,1,2,3,4,5",
    "adapter_dropout": 0.1,
    "adapter_lr": 1e-3,
    "adapter_head_lr": 2e-3,
    "adapter_samples": 64000,
    "adapter_batch": 32,
    "adapter_evals": 4,
    "adapter_bf16": False,
    "adapter_threads": 2,
    # v6: read texts as people write them, learn from a teacher, calibrate the neutral class
    "text_preprocess": "raw",
    "head_tail": False,
    "teacher": "",
    "distill_alpha": 0.7,
    "distill_t": 2.0,
    "calibrate_neutral": False,
}
SPLIT_RULES = {
    "airline": "time-ordered stream, dedup by tweet id; first 80% train, next 10% val, last 10% test",
    "tweeteval": "sentiment validation file (2000) split 70/15/15 with seed 13",
    "mvsa-single": "CLMLF split 3611/450/450 (text + image)",
    "meld": "official train/dev/test CSVs; speakers are users, splits laid end to end in time",
    "mvsa-multiple": "CLMLF split 13624/1700/1700 (text only)",
}


def _opt(ctx: RecipeContext, key: str) -> Any:
    """Option from ctx.options (strings from the CLI are coerced to the default's type)."""
    default = DEFAULTS[key]
    v = ctx.options.get(key, default)
    if key == "epochs" and ctx.epochs is not None:
        return int(ctx.epochs)
    if isinstance(v, str) and not isinstance(default, str):
        if isinstance(default, bool):
            return v.strip().lower() in {"1", "true", "yes", "on"}
        return type(default)(v)
    return v


def _sets(ctx: RecipeContext) -> list[str]:
    v = _opt(ctx, "datasets")
    return [s for s in (v.split(",") if isinstance(v, str) else v) if s]


def present_sets(ctx: RecipeContext, datasets: list[str] | None = None) -> list[str]:
    from pipelines.datasets.registry import available

    present = set(available(ctx.data_dir))
    sets = [d for d in (datasets or _sets(ctx)) if d in present]
    if not sets:
        raise FileNotFoundError(f"none of the sentiment data sets found under {ctx.data_dir}")
    return sets


def load_table(
    ctx: RecipeContext,
    datasets: list[str] | None = None,
    with_image: bool = True,
    text_encoder: TextEncoder | None = None,
    splits: tuple[str, ...] | None = None,
) -> SentimentTable:
    """The data sets' table; `text_encoder` (default: frozen MiniLM) makes the text features;
    `splits` keeps only those splits (and their authors' other posts)."""
    return build(
        present_sets(ctx, datasets),
        ctx.data_dir,
        ctx.cache_dir,
        with_image=with_image,
        text_encoder=text_encoder,
        limit=ctx.limit,
        cached_only=bool(ctx.options.get("cached_only", False)),
        splits=splits,
    )


def _sample_weights(table: SentimentTable, rows: np.ndarray, class_balance: float) -> torch.Tensor:
    """`balanced_weights` of the table's rows number `rows`."""
    return balanced_weights(table.dataset[rows], table.y.numpy()[rows], class_balance)


@torch.inference_mode()
def predict_probs(
    head: EtaFusionHead,
    table: SentimentTable,
    rows: np.ndarray,
    batch_size: int = 1024,
    user_fusion: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Class probabilities; `user_fusion=False` scores every post as its author's first (eta off)."""
    head.eval()
    probs, weights = [], {}
    for s in range(0, len(rows), batch_size):
        b = table.select(rows[s : s + batch_size])
        n = b["n"] if user_fusion else {k: torch.zeros_like(v) for k, v in b["n"].items()}
        out = head(b["x"], b["u"], n, b["mask"])
        probs.append(out.logits.float().softmax(-1))
        for k, v in out.modality_weights.items():
            weights.setdefault(k, []).append(v)
    return (torch.cat(probs) if probs else torch.empty(0, 3)), {k: torch.cat(v) for k, v in weights.items()}


def per_dataset_metrics(pred: np.ndarray, table: SentimentTable, rows: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    y = table.y.numpy()[rows]
    ds = table.dataset[rows]
    for d in dict.fromkeys(ds.tolist()):
        sel = ds == d
        m = classification_metrics(pred[sel], y[sel], SENTIMENT_LABELS)
        out[d] = {k: round(m[k], 4) for k in ("accuracy", "f1_macro", "f1_weighted", "n")}
    return out


def _mean_f1(metrics: dict[str, dict[str, float]]) -> float:
    return float(np.mean([m["f1_macro"] for m in metrics.values()])) if metrics else 0.0


def train_head(table: SentimentTable, ctx: RecipeContext, views: tuple[str, ...]) -> tuple[EtaFusionHead, dict]:
    """Train on table's train rows; keep the epoch with the best mean validation macro-F1."""
    torch.manual_seed(ctx.seed)
    np.random.seed(ctx.seed)
    dims = {v: int(table.x[v].shape[1]) for v in views}
    head = EtaFusionHead(
        dims,
        hidden=_opt(ctx, "hidden"),
        dropout=_opt(ctx, "dropout"),
        eta_init=_opt(ctx, "eta_init"),
        learn_eta=_opt(ctx, "learn_eta"),
        modality_dropout=_opt(ctx, "modality_dropout"),
        name=_opt(ctx, "name"),
    )
    head.to(ctx.device)
    tr, va = table.rows("train"), table.rows("val")
    w = _sample_weights(table, tr, _opt(ctx, "class_balance"))
    opt = torch.optim.AdamW(head.parameters(), lr=_opt(ctx, "lr"), weight_decay=_opt(ctx, "wd"))
    epochs, bs, patience = _opt(ctx, "epochs"), _opt(ctx, "batch_size"), _opt(ctx, "patience")
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=_opt(ctx, "lr"), total_steps=epochs * ((len(tr) + bs - 1) // bs), pct_start=0.1
    )
    gen = torch.Generator().manual_seed(ctx.seed)
    best, best_state, history, bad = -1.0, None, [], 0
    y = table.y
    for ep in tqdm(range(epochs), desc="production head", unit="epoch"):
        head.train()
        perm = torch.randperm(len(tr), generator=gen).numpy()
        total = 0.0
        for s in range(0, len(perm), bs):
            idx = perm[s : s + bs]
            b = table.select(tr[idx])
            out = head(b["x"], b["u"], b["n"], b["mask"])
            loss = F.cross_entropy(
                out.logits,
                y[tr[idx]].to(ctx.device),
                reduction="none",
                label_smoothing=_opt(ctx, "label_smoothing"),
            )
            loss = (loss * w[idx].to(ctx.device)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        probs, _ = predict_probs(head, table, va)
        val = per_dataset_metrics(probs.numpy(), table, va)
        score = _mean_f1(val)
        history.append(
            {
                "epoch": ep + 1,
                "loss": round(total / len(tr), 4),
                "val_mean_f1_macro": round(score, 4),
                "eta": {k: round(v, 3) for k, v in head.eta.items()},
            }
        )
        if score > best:
            best, best_state, bad = score, copy.deepcopy(head.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                break
    assert best_state is not None
    head.load_state_dict(best_state)
    return head.eval(), {"history": history, "best_val_mean_f1_macro": round(best, 4)}


def calibrate_neutral(head: EtaFusionHead, table: SentimentTable, rows: np.ndarray) -> dict[str, float]:
    """Set the head's neutral logit bias to the value in [-1.5, 1.5] with the best mean validation
    macro-F1 (ties: the smallest |bias|). Why: the main error was calling neutral posts positive
    or negative; a shift of one logit is the least a calibration can change."""
    neutral = head.labels.index("neutral")
    probs, _ = predict_probs(head, table, rows)
    logp = probs.clamp_min(1e-9).log()
    grid = sorted((round(b, 2) for b in np.arange(-1.5, 1.51, 0.1)), key=abs)
    scores = {}
    for b in grid:
        shifted = logp.clone()
        shifted[:, neutral] += b
        scores[b] = _mean_f1(per_dataset_metrics(shifted.numpy(), table, rows))
    best = max(grid, key=lambda b: (scores[b], -abs(b)))
    head.logit_bias[neutral] = best
    return {
        "neutral_bias": best,
        "val_mean_f1_before": round(scores[0.0], 4),
        "val_mean_f1_after": round(scores[best], 4),
    }


def train_tuned(ctx: RecipeContext, use_image: bool) -> tuple[EtaFusionHead, SentimentTable, dict, TextEncoder]:
    """v4: LoRA adapter + head jointly (stage 1), then the eta head on the tuned features (stage 2).

    Returns the final head (owning the adapter), the table of tuned features it was trained
    and evaluated on, the training info and the tuned (merged) encoder.
    """
    from pipelines.sentiment_features import load_records
    from pipelines.training.encoder_tuning import TuneConfig, encode_prefix, tune, tuned_features

    torch.manual_seed(ctx.seed)
    torch.set_num_threads(_opt(ctx, "adapter_threads"))
    layers = sorted(int(i) for i in str(_opt(ctx, "adapter_layers")).split(",") if i.strip())
    reading = {"encoder": "minilm", "preprocess": _opt(ctx, "text_preprocess"), "head_tail": _opt(ctx, "head_tail")}
    base = TextEncoder(device=ctx.device).reading(reading["preprocess"], reading["head_tail"])
    records = load_records(present_sets(ctx), ctx.data_dir, ctx.limit)
    t0 = time.time()
    # one pass of the frozen encoder over every distinct text: the prefix states for training,
    # and (into the feature cache) the frozen embeddings the table and the baselines read
    prefix = encode_prefix(base, [r.text for r in records], layers[0], ctx.cache_dir)
    prefix_s = time.time() - t0
    table = load_table(ctx, with_image=use_image, text_encoder=base)
    views = tuple(v for v in (TEXT, IMAGE) if v in table.x)
    dims = {v: int(table.x[v].shape[1]) for v in views}
    adapter_cfg = {
        "layers": layers,
        "rank": _opt(ctx, "adapter_rank"),
        "alpha": _opt(ctx, "adapter_alpha"),
        "dropout": _opt(ctx, "adapter_dropout"),
    }
    head_kw = {
        "hidden": _opt(ctx, "hidden"),
        "dropout": _opt(ctx, "dropout"),
        "eta_init": _opt(ctx, "eta_init"),
        "learn_eta": _opt(ctx, "learn_eta"),
        "modality_dropout": _opt(ctx, "modality_dropout"),
        "name": _opt(ctx, "name"),
        **({"text_reading": reading} if base.version != TEXT_ENCODER_VERSION else {}),
    }
    joint = EtaFusionHead(dims, text_adapter=adapter_cfg, **head_kw).to(ctx.device)
    tr, va = table.rows("train"), table.rows("val")
    cfg = TuneConfig(
        samples=_opt(ctx, "adapter_samples"),
        batch_size=_opt(ctx, "adapter_batch"),
        lr=_opt(ctx, "adapter_lr"),
        head_lr=_opt(ctx, "adapter_head_lr"),
        wd=_opt(ctx, "wd"),
        evals=_opt(ctx, "adapter_evals"),
        label_smoothing=_opt(ctx, "label_smoothing"),
        bf16=_opt(ctx, "adapter_bf16"),
        seed=ctx.seed,
        distill_alpha=_opt(ctx, "distill_alpha") if _opt(ctx, "teacher") else 0.0,
        temperature=_opt(ctx, "distill_t"),
    )
    soft, has_soft, teacher_info = teacher_soft_labels(ctx, table)
    joint, info1 = tune(
        joint,
        base,
        prefix,
        table.texts,
        table.x.get(IMAGE),
        table.mask.get(IMAGE),
        table.y,
        tr,
        va,
        _sample_weights(table, tr, _opt(ctx, "class_balance")),
        lambda pred, rows: _mean_f1(per_dataset_metrics(pred, table, rows)),
        cfg,
        soft,
        has_soft,
    )
    adapter = joint.text_adapter
    assert adapter is not None
    tuned = base.with_adapter(adapter)
    t1 = time.time()
    tuned_features(tuned, prefix, ctx.cache_dir)  # top layers only, from the prefix
    del prefix
    tuned_s = time.time() - t1
    table2 = load_table(ctx, with_image=use_image, text_encoder=tuned)
    torch.set_num_threads(_opt(ctx, "threads"))
    head2, info2 = train_head(table2, ctx, views)
    final = EtaFusionHead(dims, text_adapter=adapter.config(), **head_kw)
    state = dict(head2.state_dict())
    state.update({f"text_adapter.{k}": v for k, v in adapter.state_dict().items()})
    final.load_state_dict(state, strict=True)
    info = dict(info2)
    info["adapter"] = {
        **adapter.config(),
        "tag": adapter.tag,
        "params": sum(p.numel() for p in adapter.parameters()),
        "stage1": info1,
        "stage1_config": cfg.__dict__,
        "prefix_seconds": round(prefix_s, 1),
        "tuned_features_seconds": round(tuned_s, 1),
        "stage2_best_val_mean_f1_macro": info2["best_val_mean_f1_macro"],
        **({"teacher": teacher_info} if teacher_info else {}),
    }
    return final.to(ctx.device).eval(), table2, info, tuned


def teacher_soft_labels(
    ctx: RecipeContext, table: SentimentTable
) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, Any]]:
    """The `teacher` option's soft labels for the table's rows ([N, 3], known-mask [N]), or Nones."""
    name = _opt(ctx, "teacher")
    if not name:
        return None, None, {}
    from pipelines.feature_cache import content_key
    from pipelines.training.production_large import read_soft_labels

    ref = json.loads((Path(ctx.checkpoints_dir) / name / "soft_labels.json").read_text())
    path = Path(ctx.cache_dir) / ref["file"]
    if not path.exists():
        raise FileNotFoundError(
            f"{name}'s soft labels are not in this feature cache ({path}); "
            f"rebuild them with `voxpop train --model {name} --dataset sentiment-union` (it resumes)"
        )
    rows, probs, version = read_soft_labels(path)
    soft = torch.full((len(table.texts), probs.shape[1]), 1.0 / probs.shape[1])
    has = torch.zeros(len(table.texts), dtype=torch.bool)
    for i, t in enumerate(table.texts):
        j = rows.get(content_key(version, t.encode("utf-8")))
        if j is not None:
            soft[i], has[i] = torch.from_numpy(probs[j]), True
    info = {"name": name, "encoder": version, "rows_with_soft_labels": int(has.sum()), "rows": len(has)}
    return soft, has, info


class ProductionRecipe:
    """Trains the production head on the union; evaluates one data set (or all for the union)."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset

    def train(self, ctx: RecipeContext) -> Path:
        t0 = time.time()
        use_image = _opt(ctx, "use_image")
        text_version, extra = TEXT_ENCODER_VERSION, {}
        if _opt(ctx, "adapter_rank") > 0:
            head, table, info, tuned = train_tuned(ctx, use_image)
            views = head.views
            text_version = tuned.version
            extra = {
                "text_adapter": {
                    **info.pop("adapter"),
                    "base_encoder": TEXT_ENCODER_VERSION,
                    "encoder_version": tuned.version,
                }
            }
        else:
            torch.set_num_threads(_opt(ctx, "threads"))  # tiny MLP: more threads only spin on a busy CPU
            table = load_table(ctx, with_image=use_image)
            views = tuple(v for v in (TEXT, IMAGE) if v in table.x)
            head, info = train_head(table, ctx, views)
        torch.set_num_threads(_opt(ctx, "threads"))
        va, te = table.rows("val"), table.rows("test")
        if _opt(ctx, "calibrate_neutral"):
            extra["neutral_calibration"] = calibrate_neutral(head, table, va)
        val = per_dataset_metrics(predict_probs(head, table, va)[0].numpy(), table, va)
        test = per_dataset_metrics(predict_probs(head, table, te)[0].numpy(), table, te)
        test_off = per_dataset_metrics(predict_probs(head, table, te, user_fusion=False)[0].numpy(), table, te)
        major = "4.0" if getattr(head, "text_adapter", None) is not None else "1.0"
        head.version = f"{major}+{weights_digest(head)}"
        out = Path(ctx.checkpoint or Path(ctx.checkpoints_dir) / _opt(ctx, "name"))
        counts = {
            d: {s: int(((table.dataset == d) & (table.split == s)).sum()) for s in ("train", "val", "test")}
            for d in dict.fromkeys(table.dataset.tolist())
        }
        save_checkpoint(
            head,
            out,
            encoders={
                TEXT: text_version,
                **({IMAGE: IMAGE_ENCODER_VERSION} if IMAGE in views else {}),
            },
            score="P(positive) - P(negative)",
            user_fusion="u = running mean of the author's earlier posts' features per view; n = count",
            eta=head.eta,
            training_data={
                "datasets": counts,
                "split_rules": {d: SPLIT_RULES.get(d, "") for d in counts},
                "selection": "best epoch by mean validation macro-F1 over data sets",
            },
            options={k: _opt(ctx, k) for k in DEFAULTS},
            seed=ctx.seed,
            metrics={
                "val": val,
                "test": test,
                "test_eta_off": test_off,
                "test_mean_f1_macro": round(_mean_f1(test), 4),
                "best_val_mean_f1_macro": info["best_val_mean_f1_macro"],
            },
            history=info["history"],
            **extra,
            train_seconds=round(time.time() - t0, 1),
            command=ctx.command or "voxpop train --model production --dataset airline",
        )
        return out

    def evaluate(self, ctx: RecipeContext, split: str) -> dict[str, Any]:
        ckpt = Path(ctx.checkpoint or Path(ctx.checkpoints_dir) / _opt(ctx, "name"))
        head = load_head(ckpt.name, ckpt.parent, device=ctx.device)
        sets = _sets(ctx) if self.dataset == UNION else [self.dataset]
        enc = encoder_for_head(head, TextEncoder(device=ctx.device))  # tuned copy for v4 heads
        table = load_table(ctx, sets, with_image=IMAGE in head.views, text_encoder=enc)
        rows = table.rows(_split(split))
        fusion = _opt(ctx, "user_fusion")
        m = per_dataset_metrics(predict_probs(head, table, rows, user_fusion=fusion)[0].numpy(), table, rows)
        return _flatten(
            m,
            {
                "model": head.name,
                "version": head.version,
                "split": split,
                "checkpoint": str(ckpt),
                "user_fusion": fusion,
                "text_encoder": enc.version,
            },
        )


def _split(split: str) -> str:
    return {"dev": "val", "valid": "val", "validation": "val"}.get(split, split)


def _flatten(m: dict[str, dict[str, float]], extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(extra)
    for d, mm in m.items():
        for k, v in mm.items():
            out[f"{d}.{k}"] = v
    if len(m) > 1:
        out["mean.f1_macro"] = round(_mean_f1(m), 4)
    return out


# ---------------------------------------------------------------- baselines -----------------------


def vader_predict(texts: list[str]) -> np.ndarray:
    """VADER compound score with the standard +-0.05 thresholds -> class index."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    sia = SentimentIntensityAnalyzer()
    out = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        c = sia.polarity_scores(t)["compound"]
        out[i] = 2 if c >= 0.05 else 0 if c <= -0.05 else 1
    return out


class VaderRecipe:
    def __init__(self, dataset: str) -> None:
        self.dataset = dataset

    def train(self, ctx: RecipeContext) -> Path:
        return Path(ctx.checkpoints_dir)  # nothing to train: a lexicon

    def evaluate(self, ctx: RecipeContext, split: str) -> dict[str, Any]:
        sets = _sets(ctx) if self.dataset == UNION else [self.dataset]
        table = load_table(ctx, sets, with_image=False)
        rows = table.rows(_split(split))
        texts = table.texts
        pred = vader_predict([texts[i] for i in rows])
        return _flatten(per_dataset_metrics(pred, table, rows), {"model": "vader", "split": split})


def fit_logreg(table: SentimentTable, seed: int = 0) -> tuple[Any, float]:
    """Logistic regression on MiniLM embeddings of the train union; C picked on validation."""
    from sklearn.linear_model import LogisticRegression

    tr, va = table.rows("train"), table.rows("val")
    x, y = table.x[TEXT].numpy(), table.y.numpy()
    best, best_c, best_m = -1.0, 1.0, None
    for c in (0.3, 1.0, 3.0, 10.0):
        m = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x[tr], y[tr])
        s = _mean_f1(per_dataset_metrics(m.predict(x[va]), table, va))
        if s > best:
            best, best_c, best_m = s, c, m
    return best_m, best_c


class LogRegRecipe:
    def __init__(self, dataset: str) -> None:
        self.dataset = dataset

    def _path(self, ctx: RecipeContext) -> Path:
        return Path(ctx.checkpoints_dir) / "minilm-lr"

    def train(self, ctx: RecipeContext) -> Path:
        from safetensors.numpy import save_file

        table = load_table(ctx, with_image=False)
        m, c = fit_logreg(table, ctx.seed)
        out = self._path(ctx)
        out.mkdir(parents=True, exist_ok=True)
        save_file(
            {  # C order: sklearn's coef_ can be Fortran-ordered, which safetensors would scramble
                "coef": np.ascontiguousarray(m.coef_, dtype=np.float32),
                "intercept": np.ascontiguousarray(m.intercept_, dtype=np.float32),
            },
            str(out / "model.safetensors"),
        )
        (out / "card.json").write_text(
            json.dumps(
                {
                    "name": "minilm-lr",
                    "architecture": "sklearn-logistic-regression (baseline, not a ScoringHead)",
                    "labels": list(SENTIMENT_LABELS),
                    "C": c,
                    "encoder": TEXT_ENCODER_VERSION,
                    "datasets": _sets(ctx),
                    "command": ctx.command,
                },
                indent=2,
            )
            + "\n"
        )
        return out

    def evaluate(self, ctx: RecipeContext, split: str) -> dict[str, Any]:
        from safetensors.numpy import load_file

        path = self._path(ctx)
        if not (path / "model.safetensors").exists():
            self.train(ctx)
        w = load_file(str(path / "model.safetensors"))
        sets = _sets(ctx) if self.dataset == UNION else [self.dataset]
        table = load_table(ctx, sets, with_image=False)
        rows = table.rows(_split(split))
        logits = table.x[TEXT].numpy()[rows] @ w["coef"].T + w["intercept"]
        return _flatten(per_dataset_metrics(logits.argmax(1), table, rows), {"model": "minilm-lr", "split": split})


def benchmark(ctx: RecipeContext, split: str = "test") -> dict[str, Any]:
    """Production head vs VADER vs MiniLM+LR on every data set's `split`: one JSON-able dict."""
    off = RecipeContext(**{**ctx.__dict__, "options": {**ctx.options, "user_fusion": False}})
    out = {
        "split": split,
        "production": ProductionRecipe(UNION).evaluate(ctx, split),
        "production-eta-off": ProductionRecipe(UNION).evaluate(off, split),
        "vader": VaderRecipe(UNION).evaluate(ctx, split),
        "minilm-lr": LogRegRecipe(UNION).evaluate(ctx, split),
    }
    try:
        out["card"] = {
            k: read_card(Path(ctx.checkpoints_dir) / _opt(ctx, "name")).get(k)
            for k in ("version", "eta", "options", "command", "encoders")
        }
    except FileNotFoundError:
        pass
    return out


for _d in [*ALL_SETS, UNION]:
    recipe("production", _d)(lambda _n=_d: ProductionRecipe(_n))
    recipe("vader", _d)(lambda _n=_d: VaderRecipe(_n))
    recipe("minilm-lr", _d)(lambda _n=_d: LogRegRecipe(_n))
