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


HELDOUT_NAME = "tweeteval-heldout"


def load_heldout(data_dir: Path) -> list[Record]:
    """The whole sentiment validation file as test rows: the held-out benchmark of recipes that
    train on SemEval instead (pipelines/datasets/semeval.py drops its overlap with this file)."""
    return [
        Record(
            uid=r.uid, text=r.text, label=r.label, split="test", author=r.author, order=r.order, dataset=HELDOUT_NAME
        )
        for r in load(data_dir)
    ]


EMOTION_NAME = "tweeteval-emotion"
# TweetEval emotion's four classes as distant sentiment labels (no neutral class exists there)
EMOTION_TO_SENTIMENT = {"anger": "negative", "joy": "positive", "optimism": "positive", "sadness": "negative"}


def load_emotion_as_sentiment(data_dir: Path) -> list[Record]:
    """TweetEval emotion train + val as extra TRAINING tweets with distant sentiment labels.

    Why: TweetEval sentiment ships only 2,000 labelled tweets here, and general tweets are what
    the production model meets in the wild. Every record is a train record, so model selection
    and the reported numbers never see these labels; the emotion test file is left untouched.
    """
    base = Path(data_dir) / "tweeteval" / "emotion"
    names = dict(line.split("\t") for line in (base / "mapping.txt").read_text().strip().splitlines())
    out: list[Record] = []
    for part in ("train", "val"):
        texts = (base / f"{part}_text.txt").read_text(encoding="utf-8").splitlines()
        labels = (base / f"{part}_labels.txt").read_text().split()
        assert len(texts) == len(labels), f"tweeteval emotion {part}: text/label files differ in length"
        for i, (t, y) in enumerate(zip(texts, labels, strict=True)):
            uid = f"{EMOTION_NAME}:{part}:{i}"
            out.append(
                Record(
                    uid=uid,
                    text=t.strip(),
                    label=EMOTION_TO_SENTIMENT[names[y].strip()],
                    split="train",
                    author=uid,
                    order=float(len(out)),
                    dataset=EMOTION_NAME,
                )
            )
    return out
