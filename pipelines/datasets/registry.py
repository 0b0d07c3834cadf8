"""Name -> loader for the sentiment data sets (so recipes and the CLI can pick them by name)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipelines.datasets import airline, meld, mvsa, semeval, tweeteval
from pipelines.datasets.base import Record

SENTIMENT_SETS: dict[str, Callable[[Path], list[Record]]] = {
    "airline": airline.load,
    "tweeteval": tweeteval.load,
    "mvsa-single": mvsa.load_single,
    "mvsa-multiple": mvsa.load_multiple,
    "meld": meld.load,
    semeval.NAME: semeval.load,
    tweeteval.HELDOUT_NAME: tweeteval.load_heldout,  # all 2,000 as test: never trained on
    tweeteval.EMOTION_NAME: tweeteval.load_emotion_as_sentiment,  # train-only, distant labels
}


def load_sentiment(name: str, data_dir: Path) -> list[Record]:
    try:
        return SENTIMENT_SETS[name](data_dir)
    except KeyError:
        raise KeyError(f"unknown sentiment data set {name!r}; known: {sorted(SENTIMENT_SETS)}") from None


def available(data_dir: Path) -> list[str]:
    """Data sets whose files are present under data_dir."""
    folders = {
        "airline": "airline-tweets",
        "tweeteval": "tweeteval",
        "mvsa-single": "mvsa-single",
        "mvsa-multiple": "mvsa-multiple-text",
        "meld": "meld",
        semeval.NAME: semeval.FOLDER,
        tweeteval.HELDOUT_NAME: "tweeteval/sentiment",
        tweeteval.EMOTION_NAME: "tweeteval/emotion",
    }
    return [n for n, d in folders.items() if (Path(data_dir) / d).exists()]
