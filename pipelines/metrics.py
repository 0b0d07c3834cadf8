"""Evaluation metrics of docs/models.md section 6, as flat JSON-able dicts (fractions, not percent).

- `mosi_regression_metrics(pred, y)`  MOSI/MOSEI (MMSA rules): MAE unclipped, Pearson Corr,
  Acc-7 / Acc-5 / Acc-3 (clip to [-3,3] / [-2,2] / [-1,1], `np.round` half-to-even, exact match),
  Acc-2 has0 (y >= 0 vs yhat >= 0 over all samples), Acc-2 non0 (drop y == 0, then > 0),
  weighted F1 for both.
- `sims_regression_metrics(pred, y)`  CH-SIMS: clip both to [-1,1] first (MAE after clipping);
  Acc-2 bins (-1.01, 0], (0, 1.01] (0 is negative); Acc-3 edges -0.1, 0.1; Acc-5 edges
  -0.7, -0.1, 0.1, 0.7; intervals left-open, right-closed; weighted F1 on the 2-class labels.
- `classification_metrics(pred, y, labels)`  accuracy, weighted P/R/F1, macro F1, per-class recall.
- `format_metric_line(metrics)`  the one-line summary, e.g.
  "Acc-2 83.41/85.26 F1 83.39/85.32 MAE 0.705 Corr 0.813 Acc-7 45.82 Acc-5 51.02".

An undefined Pearson correlation (constant predictions or labels) is reported as 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

SIMS_EDGES_2: tuple[float, ...] = (-1.01, 0.0, 1.01)
SIMS_EDGES_3: tuple[float, ...] = (-1.01, -0.1, 0.1, 1.01)
SIMS_EDGES_5: tuple[float, ...] = (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01)


def _flat(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def pearson(pred: Any, y: Any) -> float:
    """Pearson correlation; 0.0 when either side is constant (np.corrcoef would give nan)."""
    p, t = _flat(pred), _flat(y)
    if p.size < 2 or np.std(p) == 0 or np.std(t) == 0:
        return 0.0
    return float(np.corrcoef(p, t)[0, 1])


def multiclass_acc_rounded(pred: np.ndarray, y: np.ndarray) -> float:
    """Exact match after np.round (half-to-even), as MMSA computes Acc-7/5/3."""
    return float(np.mean(np.round(pred) == np.round(y)))


def mosi_regression_metrics(pred: Any, y: Any) -> dict[str, float]:
    """MOSI/MOSEI regression metrics (MMSA's `eval_mosei_regression`)."""
    p, t = _flat(pred), _flat(y)
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"pred/label shapes differ or are empty: {p.shape} vs {t.shape}")
    out: dict[str, float] = {
        "mae": float(np.mean(np.abs(p - t))),
        "corr": pearson(p, t),
        "acc7": multiclass_acc_rounded(np.clip(p, -3, 3), np.clip(t, -3, 3)),
        "acc5": multiclass_acc_rounded(np.clip(p, -2, 2), np.clip(t, -2, 2)),
        "acc3": multiclass_acc_rounded(np.clip(p, -1, 1), np.clip(t, -1, 1)),
    }
    bt, bp = t >= 0, p >= 0
    out["acc2_has0"] = float(accuracy_score(bt, bp))
    out["f1_has0"] = float(f1_score(bt, bp, average="weighted", zero_division=0))
    nz = t != 0
    if nz.any():
        bt0, bp0 = t[nz] > 0, p[nz] > 0
        out["acc2_non0"] = float(accuracy_score(bt0, bp0))
        out["f1_non0"] = float(f1_score(bt0, bp0, average="weighted", zero_division=0))
    else:
        out["acc2_non0"] = out["f1_non0"] = 0.0
    out["n"] = float(p.size)
    return out


def bin_left_open(x: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Class index i for edges[i] < x <= edges[i+1] (left-open, right-closed)."""
    out = np.full(x.shape, -1, dtype=np.int64)
    for i in range(len(edges) - 1):
        out[(x > edges[i]) & (x <= edges[i + 1])] = i
    return out


def sims_regression_metrics(pred: Any, y: Any) -> dict[str, float]:
    """CH-SIMS regression metrics (MMSA's `eval_sims_regression`)."""
    p, t = np.clip(_flat(pred), -1.0, 1.0), np.clip(_flat(y), -1.0, 1.0)
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"pred/label shapes differ or are empty: {p.shape} vs {t.shape}")
    p2, t2 = bin_left_open(p, SIMS_EDGES_2), bin_left_open(t, SIMS_EDGES_2)
    p3, t3 = bin_left_open(p, SIMS_EDGES_3), bin_left_open(t, SIMS_EDGES_3)
    p5, t5 = bin_left_open(p, SIMS_EDGES_5), bin_left_open(t, SIMS_EDGES_5)
    return {
        "mae": float(np.mean(np.abs(p - t))),
        "corr": pearson(p, t),
        "acc2": float(np.mean(p2 == t2)),
        "acc3": float(np.mean(p3 == t3)),
        "acc5": float(np.mean(p5 == t5)),
        "f1": float(f1_score(t2, p2, average="weighted", zero_division=0)),
        "n": float(p.size),
    }


def classification_metrics(pred: Any, y: Any, labels: Sequence[str] | None = None) -> dict[str, float]:
    """Accuracy, weighted P/R/F1, macro F1 and per-class recall (`recall_<label>`).

    `pred` is either class indices [N] or scores [N, C] (argmax is taken). `labels` names the
    classes 0..C-1; absent classes still get a recall key (0.0 when they never occur).
    """
    pa = np.asarray(pred)
    p = pa.argmax(-1) if pa.ndim == 2 else pa.reshape(-1)
    p = p.astype(np.int64)
    t = np.asarray(y).reshape(-1).astype(np.int64)
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"pred/label shapes differ or are empty: {p.shape} vs {t.shape}")
    n_cls = len(labels) if labels is not None else int(max(p.max(), t.max()) + 1)
    names = list(labels) if labels is not None else [str(i) for i in range(n_cls)]
    idx = list(range(n_cls))
    wp, wr, wf, _ = precision_recall_fscore_support(t, p, labels=idx, average="weighted", zero_division=0)
    _, rec, _, _ = precision_recall_fscore_support(t, p, labels=idx, average=None, zero_division=0)
    present = sorted(set(t.tolist()))  # macro F1 over the classes that occur in the labels
    out: dict[str, float] = {
        "accuracy": float(np.mean(p == t)),
        "precision_weighted": float(wp),
        "recall_weighted": float(wr),
        "f1_weighted": float(wf),
        "f1_macro": float(f1_score(t, p, labels=present, average="macro", zero_division=0)),
        "n": float(p.size),
    }
    for name, r in zip(names, rec, strict=True):
        out[f"recall_{name}"] = float(r)
    return out


def format_metric_line(metrics: dict[str, Any]) -> str:
    """One-line summary in the papers' style (percent for accuracies/F1, decimals for MAE/Corr)."""
    m = metrics

    def pct(k: str) -> str:
        return f"{100.0 * float(m[k]):.2f}"

    if "acc2_has0" in m:  # MOSI/MOSEI
        return (
            f"Acc-2 {pct('acc2_has0')}/{pct('acc2_non0')} F1 {pct('f1_has0')}/{pct('f1_non0')} "
            f"MAE {float(m['mae']):.3f} Corr {float(m['corr']):.3f} "
            f"Acc-7 {pct('acc7')} Acc-5 {pct('acc5')}"
        )
    if "acc2" in m and "mae" in m:  # CH-SIMS
        return (
            f"Acc-2 {pct('acc2')} Acc-3 {pct('acc3')} Acc-5 {pct('acc5')} F1 {pct('f1')} "
            f"MAE {float(m['mae']):.3f} Corr {float(m['corr']):.3f}"
        )
    if "accuracy" in m:
        parts = [f"Acc {pct('accuracy')}"]
        for key, name in (
            ("f1_weighted", "wF1"),
            ("f1_macro", "mF1"),
            ("precision_weighted", "wP"),
            ("recall_weighted", "wR"),
        ):
            if key in m:
                parts.append(f"{name} {pct(key)}")
        rec = [f"{k[len('recall_') :]} {pct(k)}" for k in m if k.startswith("recall_") and k != "recall_weighted"]
        if rec:
            parts.append("| recall " + ", ".join(rec))
        return " ".join(parts)
    return " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())
