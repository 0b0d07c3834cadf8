"""Does a faster precision cost accuracy? The production head per precision on the test splits.

User means are built causally in stream order from each test author's earlier posts, as in serving
(airline authors recur; TweetEval and MVSA have no recurring authors, so their means are empty, like
a new author's). MELD's speakers recur across all splits; to keep the bench short their means are
built from the test split only. Text only: the question is what the text encoder's precision costs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from models.registry import load_head
from pipelines.datasets import airline, meld, mvsa, tweeteval
from pipelines.datasets.base import Record
from pipelines.scoring import Encoded, InferenceEngine

BENCH_SETS: dict[str, Callable[[Path], list[Record]]] = {
    "airline": airline.load,
    "tweeteval": tweeteval.load,
    "mvsa-multiple": mvsa.load_multiple,
    "meld": meld.load,
}
TEST_HISTORY_ONLY = {"meld"}


def _test_rows(recs: list[Record], test_history_only: bool = False) -> list[Record]:
    """Test posts plus their authors' earlier posts (any split, or the test split only), in stream order."""
    recs = sorted(recs, key=lambda r: r.order)
    if test_history_only:
        recs = [r for r in recs if r.split == "test"]
    test_authors = {r.author for r in recs if r.split == "test"}
    return [r for r in recs if r.author in test_authors]


def _score(eng: InferenceEngine, rows: list[Record]) -> tuple[dict[str, float], np.ndarray]:
    """Metrics on the test posts, and their predicted label indices (to compare precisions)."""
    head = eng.head
    dim = head.feature_dims["text"]
    feats = torch.cat([eng.encode([r.text for r in rows[i : i + 64]]).x["text"] for i in range(0, len(rows), 64)])
    state: dict[str, tuple[np.ndarray, int]] = defaultdict(lambda: (np.zeros(dim, np.float32), 0))
    u, n, keep = [], [], []
    for i, r in enumerate(rows):
        mean, cnt = state[r.author]
        if r.split == "test":
            u.append(mean.copy())
            n.append(cnt)
            keep.append(i)
        x = feats[i].numpy()
        state[r.author] = (mean + (x - mean) / (cnt + 1), cnt + 1)
    enc = Encoded(x={"text": feats[keep]}, mask={"text": torch.ones(len(keep), dtype=torch.bool)})
    probs = eng.predict(
        enc, {"text": torch.from_numpy(np.stack(u))}, {"text": torch.tensor(n, dtype=torch.float)}
    ).probs
    pred = probs.argmax(1).numpy()
    gold = np.array([head.labels.index(rows[i].label) for i in keep])
    return {
        "accuracy": round(float((pred == gold).mean()), 4),
        "macro_f1": round(float(f1_score(gold, pred, average="macro")), 4),
        "n": len(keep),
    }, pred


def precision_accuracy(
    data_dir: Path,
    precisions: tuple[str, ...],
    model: str = "production",
    compile: bool = False,
    only: tuple[str, ...] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """{precision: {dataset: {accuracy, macro_f1, n}}} for every benchmark set present (`compile`: compiled
    encoders, pipelines/compiled.py; then "fp32" in `precisions` is the compiled fp32 labels are compared with)."""
    from pipelines.datasets.registry import available

    present = set(available(data_dir))
    sets = {
        name: _test_rows(load(data_dir), name in TEST_HISTORY_ONLY)
        for name, load in BENCH_SETS.items()
        if name in present and (only is None or name in only)
    }
    out: dict[str, dict[str, dict[str, float]]] = {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    for prec in precisions:
        eng = InferenceEngine(load_head(model), precision=prec, compile=compile)
        scored = {name: _score(eng, rows) for name, rows in sets.items()}
        out[prec] = {name: m for name, (m, _) in scored.items()}
        preds[prec] = {name: pred for name, (_, pred) in scored.items()}
    for prec in precisions:  # how many labels the precision changes: the paired view of the same loss
        for name, m in out[prec].items():
            m["changed_vs_fp32"] = round(float((preds[prec][name] != preds["fp32"][name]).mean()), 4)
    return out
