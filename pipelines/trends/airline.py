"""The real airline tweet stream as ``ScoredPost`` records, for replays through the windows.

Scores come from the data set's human labels and their confidence (a deterministic stand-in
for the scorer): the label gets probability ``c``, the other two share ``1 - c``, and
``score = P(positive) - P(negative)``. Each post's watch is its airline.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from pipelines.schemas import ScoredPost

AIRLINES = ("American", "Delta", "Southwest", "US Airways", "United", "Virgin America")
LABELS = ("negative", "neutral", "positive")


def airline_csv(data_dir: Path) -> Path:
    return Path(data_dir) / "airline-tweets" / "airline_tweets_clean.csv"


def scored_from_row(row: dict[str, str], watch_ids: dict[str, int]) -> ScoredPost:
    label = row["airline_sentiment"]
    c = min(max(float(row.get("airline_sentiment_confidence") or 1.0), 0.34), 1.0)
    probs = {lab: (c if lab == label else (1.0 - c) / 2) for lab in LABELS}
    score = max(-1.0, min(1.0, probs["positive"] - probs["negative"]))
    return ScoredPost(
        post_id=f"twitter:{row['tweet_id']}",
        author_id=f"twitter:{row['user'].lower()}",
        created_at=datetime.fromisoformat(row["created_at"]),
        watches=[watch_ids[row["airline"]]],
        model_name="airline-labels",
        model_version="1",
        label=label,
        probabilities=probs,
        score=score,
    )


def airline_stream(path: Path, watch_ids: dict[str, int] | None = None, dedupe: bool = True) -> Iterator[ScoredPost]:
    """Every tweet in event-time order (ties by file order); duplicated tweet ids once if ``dedupe``."""
    ids = watch_ids or {a: i + 1 for i, a in enumerate(AIRLINES)}
    rows: list[tuple[float, int, dict[str, str]]] = []
    seen: set[str] = set()
    with Path(path).open(encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if dedupe and row["tweet_id"] in seen:
                continue
            seen.add(row["tweet_id"])
            rows.append((datetime.fromisoformat(row["created_at"]).timestamp(), i, row))
    rows.sort(key=lambda r: (r[0], r[1]))
    for _, _, row in rows:
        yield scored_from_row(row, ids)
