"""TweetEval sentiment. Only the validation file is shipped, so it is split 70/15/15 (seeded)."""

from __future__ import annotations

import random
from pathlib import Path

from pipelines.datasets.base import SENTIMENT_LABELS, Record

NAME = "tweeteval"


def load(data_dir: Path, seed: int = 13) -> list[Record]:
    base = Path(data_dir) / "tweeteval" / "sentiment"
    texts = (base / "val_text.txt").read_text(encoding="utf-8").splitlines()
    labels = [int(x) for x in (base / "val_labels.txt").read_text().split()]
    assert len(texts) == len(labels), "tweeteval text/label files differ in length"
    idx = list(range(len(texts)))
    random.Random(seed).shuffle(idx)
    n_tr, n_va = int(0.7 * len(idx)), int(0.15 * len(idx))
    split_of = {i: "train" if k < n_tr else "val" if k < n_tr + n_va else "test" for k, i in enumerate(idx)}
    return [
        Record(
            uid=f"tweeteval:{i}",
            text=t.strip(),
            label=SENTIMENT_LABELS[y],
            split=split_of[i],
            author=f"tweeteval:{i}",
            order=float(i),
            dataset=NAME,
        )
        for i, (t, y) in enumerate(zip(texts, labels, strict=True))
    ]
