"""US airline tweets (time-ordered stream): first 80% train, next 10% val, last 10% test.

Splitting by time (not at random) keeps later tweets, and later tweets of the same users, out
of training, which is how the model is used on a live stream.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

from pipelines.datasets.base import Record

NAME = "airline"


def load(data_dir: Path, train_frac: float = 0.8, val_frac: float = 0.1) -> list[Record]:
    path = Path(data_dir) / "airline-tweets" / "airline_tweets_clean.csv"
    rows: list[tuple[float, int, dict[str, str]]] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if row["tweet_id"] in seen:  # the original has duplicated tweets; keep the first
                continue
            seen.add(row["tweet_id"])
            ts = datetime.fromisoformat(row["created_at"]).timestamp()
            rows.append((ts, i, row))
    rows.sort(key=lambda r: (r[0], r[1]))
    n = len(rows)
    n_train, n_val = int(n * train_frac), int(n * val_frac)
    out = []
    for j, (ts, _, row) in enumerate(rows):
        split = "train" if j < n_train else "val" if j < n_train + n_val else "test"
        out.append(
            Record(
                uid=f"airline:{row['tweet_id']}",
                text=row["text"],
                label=row["airline_sentiment"],
                split=split,
                author=f"twitter:{row['user']}",
                order=ts,
                dataset=NAME,
            )
        )
    return out
