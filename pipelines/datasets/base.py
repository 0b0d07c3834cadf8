"""Common record type for the sentiment data sets, so one training loop serves all of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class Record:
    """One labelled post. `order` is the time key used to build causal per-author means."""

    uid: str  # dataset:native_id, unique within the data set
    text: str
    label: str  # one of SENTIMENT_LABELS
    split: str  # train | val | test
    author: str  # author / speaker id; a unique id when the data set has none
    order: float  # timestamp (s) or a running index: only the ordering matters
    image: Path | None = None
    dataset: str = ""


def label_index(label: str) -> int:
    return SENTIMENT_LABELS.index(label)
