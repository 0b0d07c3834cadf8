"""Sentiment on held-out sets: the teacher, the student, the previous production model and the
baselines a user would pick instead, on every held-out test set here (a section of
docs/benchmarks.md and its JSON, `voxpop benchmarks --only sentiment-heldout`).

Held-out sets, all chosen before training:
- `tweeteval-heldout`: TweetEval sentiment validation (2,000), whole; SemEval tweets that are
  also in it were dropped from training (pipelines/datasets/semeval.py). Heads before v6
  trained on 70 % of this file, so their numbers there are marked as not held out;
- `semeval`: twitter-2016devtest (2,000);
- the test splits of the airline stream, MVSA-Single, MVSA-Multiple and MELD.
Metrics per set: macro-recall (TweetEval's official metric), macro-F1, accuracy, neutral recall.
Baselines: VADER (+-0.05 thresholds), logistic regression on the frozen MiniLM embedding and on
the frozen MPNet embedding (read as the teacher reads: social-v1, head+tail), both fitted on the
train union the student used and C picked on its validation rows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import machine, read_card
from models.production import EtaFusionHead
from models.registry import load_head
from models.text_encoder import MINILM, MPNET, TextEncoder, encoder_for_head
from models.text_normalise import PREPROCESS
from pipelines.datasets.base import SENTIMENT_LABELS
from pipelines.metrics import classification_metrics
from pipelines.quantize import bf16_autocast
from pipelines.recipes import RecipeContext
from pipelines.sentiment_features import IMAGE, TEXT, load_records
from pipelines.training import production as prod

HELDOUT_SETS = ("tweeteval-heldout", "semeval", "airline", "mvsa-single", "mvsa-multiple", "meld")
MODEL_HEADS = ("production-large", "production", "production-v6", "production-v5")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    m = classification_metrics(pred, y, SENTIMENT_LABELS)
    recall = [m[f"recall_{c}"] for c in SENTIMENT_LABELS]
    return {
        "macro_recall": round(float(np.mean(recall)), 4),
        "f1_macro": round(m["f1_macro"], 4),
        "accuracy": round(m["accuracy"], 4),
        "recall_neutral": round(m["recall_neutral"], 4),
        "n": int(m["n"]),
    }


def _autocast(encoder: TextEncoder) -> torch.autocast:
    return bf16_autocast(encoder.spec.name == MPNET.name)


def evaluate_head(ctx: RecipeContext, name: str, sets: list[str]) -> dict[str, Any]:
    head = load_head(name, Path(ctx.checkpoints_dir))
    assert isinstance(head, EtaFusionHead), f"{name} is not a production-style head"
    enc = encoder_for_head(head, None, ctx.device, ctx.model_cache_dir)
    out: dict[str, Any] = {"version": head.version, "encoder": enc.version}
    for d in sets:
        with _autocast(enc):
            table = prod.load_table(ctx, [d], with_image=IMAGE in head.views, text_encoder=enc, splits=("test",))
        rows = table.rows("test")
        probs, _ = prod.predict_probs(head, table, rows)
        out[d] = metrics(probs.numpy(), table.y.numpy()[rows])
    return out


def evaluate_vader(ctx: RecipeContext, sets: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in sets:
        recs = [r for r in load_records([d], Path(ctx.data_dir), ctx.limit) if r.split == "test"]
        y = np.array([SENTIMENT_LABELS.index(r.label) for r in recs])
        out[d] = metrics(prod.vader_predict([r.text for r in recs]), y)
    return out


def evaluate_lr(ctx: RecipeContext, encoder: TextEncoder, train_sets: list[str], sets: list[str]) -> dict[str, Any]:
    """Logistic regression on `encoder`'s frozen embedding, fitted on the train union of `train_sets`."""
    with _autocast(encoder):
        table = prod.load_table(ctx, train_sets, with_image=False, text_encoder=encoder)
    model, c = prod.fit_logreg(table, ctx.seed)
    out: dict[str, Any] = {"encoder": encoder.version, "C": c, "train_rows": int(len(table.rows("train")))}
    for d in sets:
        with _autocast(encoder):
            t = prod.load_table(ctx, [d], with_image=False, text_encoder=encoder, splits=("test",))
        rows = t.rows("test")
        out[d] = metrics(model.predict(t.x[TEXT].numpy()[rows]), t.y.numpy()[rows])
    return out


def _trained_on_tweeteval_val(ctx: RecipeContext, head: str) -> bool:
    """Heads before v6 trained on 70 % of TweetEval's validation file (the `tweeteval` set)."""
    card = read_card(Path(ctx.checkpoints_dir) / head)
    return "tweeteval" in (card.get("training_data") or {}).get("datasets", {})


def student_head(ctx: RecipeContext, heads: list[str]) -> str:
    """The student: the served head if it was distilled from the teacher, else the newest head
    that was (production-v6 while it is not promoted); the baselines are fitted on its data."""
    distilled = [h for h in heads if read_card(Path(ctx.checkpoints_dir) / h).get("options", {}).get("teacher")]
    return "production" if "production" in distilled else (distilled or ["production"])[0]


def build(
    ctx: RecipeContext,
    heads: tuple[str, ...] = MODEL_HEADS,
    large_baseline: bool = False,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every model and baseline on every held-out set present.

    The MPNet logistic regression needs the frozen large encoder over the whole training union
    (about 90k texts), hours on a CPU without bf16 or AMX instructions, so it runs only when asked
    (`large_baseline`, `--only sentiment-heldout-mpnet-lr`); otherwise the previous run's numbers
    are carried over, marked with their date, or the table says it was not measured."""
    t0 = time.time()
    sets = prod.present_sets(ctx, list(HELDOUT_SETS))
    present = [h for h in heads if (Path(ctx.checkpoints_dir) / h / "card.json").exists()]
    student = student_head(ctx, present)
    card = read_card(Path(ctx.checkpoints_dir) / student)
    train_sets = prod.present_sets(ctx, list(card.get("options", {}).get("datasets", "").split(",")) or None)
    models: dict[str, Any] = {h: evaluate_head(ctx, h, sets) for h in present}
    models["vader"] = evaluate_vader(ctx, sets)
    models["minilm-lr"] = evaluate_lr(ctx, TextEncoder(spec=MINILM), train_sets, sets)
    models["mpnet-lr"] = _mpnet_lr(ctx, train_sets, sets, large_baseline, previous)
    doc = {
        "date": _now(),
        "machine": machine(),
        "seconds": round(time.time() - t0, 1),
        "sets": sets,
        "student": student,
        "train_sets": train_sets,
        "not_held_out": [[h, "tweeteval-heldout"] for h in present if _trained_on_tweeteval_val(ctx, h)],
        "models": models,
    }
    return doc


def _mpnet_lr(
    ctx: RecipeContext, train_sets: list[str], sets: list[str], measure: bool, previous: dict[str, Any] | None
) -> dict[str, Any]:
    if not measure:
        carried = ((previous or {}).get("models") or {}).get("mpnet-lr") or {}
        if any(d in carried for d in sets):
            return {**carried, "carried_from": carried.get("measured", (previous or {}).get("date"))}
        return {"skipped": "not measured: run `voxpop benchmarks --only sentiment-heldout-mpnet-lr`"}
    try:
        large = TextEncoder(spec=MPNET, preprocess=PREPROCESS, head_tail=True, model_dir=ctx.model_cache_dir)
        return {**evaluate_lr(ctx, large, train_sets, sets), "measured": _now()}
    except Exception as e:  # the large encoder is an optional extra
        return {"error": str(e)}


def render(doc: dict[str, Any]) -> list[str]:
    """The Markdown section for docs/benchmarks.md."""
    names = {
        "production-large": "teacher: production-large (MPNet + LoRA)",
        "production": "production (served)",
        "production-v6": "production-v6 (student, not promoted)",
        "production-v5": "production-v5 (the previous production)",
        "vader": "VADER",
        "minilm-lr": "LR on frozen MiniLM",
        "mpnet-lr": "LR on frozen MPNet",
    }
    lines = [
        f"Measured {doc['date']} on {doc['machine']} in {doc['seconds']} s by "
        "`voxpop benchmarks --only sentiment-heldout`. Test splits only; mR = macro-recall (TweetEval's "
        "official metric), mF1 = macro-F1, Acc = accuracy, nR = neutral recall. The baselines' logistic "
        f"regressions are fitted on the training union of the student, {doc.get('student', 'production')} "
        f"({', '.join(doc['train_sets'])}).",
        "",
    ]
    large = doc["models"].get("mpnet-lr", {})
    for why in (large.get("skipped"), large.get("error")):
        if why:
            lines += [f"LR on frozen MPNet: {why}.", ""]
    if large.get("carried_from"):
        lines += [f"LR on frozen MPNet: carried over from the run of {large['carried_from']}.", ""]
    not_held = {tuple(p) for p in doc.get("not_held_out", [])}
    for d in doc["sets"]:
        lines += [f"**{d}**", "", "| model | mR | mF1 | Acc | nR | n |", "|---|---|---|---|---|---|"]
        for key, label in names.items():
            m = doc["models"].get(key, {}).get(d)
            if not m:
                continue
            mark = " (trained on 70 % of this file: not held out)" if (key, d) in not_held else ""
            version = doc["models"][key].get("version")
            name = f"{label} `{version}`" if version else label
            lines.append(
                f"| {name}{mark} | {m['macro_recall']:.4f} | {m['f1_macro']:.4f} | {m['accuracy']:.4f} "
                f"| {m['recall_neutral']:.4f} | {m['n']} |"
            )
        lines.append("")
    return lines
