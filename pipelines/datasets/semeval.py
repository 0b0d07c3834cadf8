"""SemEval Twitter sentiment, Subtask A, 2013-2016 (the SemEval-2017 Task 4 training release).

Splits, fixed before any training run looked at them:
- test: `twitter-2016devtest` (2,000 tweets), the 2016 edition's own held-out dev-test file;
- val: `twitter-2016dev` (1,999), for model selection;
- train: every other file (2013 train/dev/test, 2014 test and sarcasm, 2015 train/test, 2016
  train/test).
Cleaning: texts wrapped in double quotes lose them and JSON-style escapes (\\u2019, \\u002c) are
decoded; a tweet id seen twice keeps its first annotation (the organisers report 665 duplicate
annotations), and a text that is also in val or test is dropped from train. Tweets that are also
in TweetEval's sentiment validation file (compared after TweetEval's @user/http normalisation)
are dropped everywhere, so that file stays a clean held-out benchmark (`tweeteval-heldout`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipelines.datasets.base import SENTIMENT_LABELS, Record

NAME = "semeval"
FOLDER = "semeval-twitter"
TEST_FILES = ("twitter-2016devtest-A.txt",)
VAL_FILES = ("twitter-2016dev-A.txt",)
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def clean(text: str) -> str:
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] == '"':
        t = t[1:-1]
    t = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), t)
    return t.replace('""', '"').strip()


def tweeteval_key(text: str) -> str:
    """A text as TweetEval normalised it (handles -> @user, links -> http), for overlap checks."""
    t = re.sub(r"(?<![\w@])@\w+", "@user", text)
    t = re.sub(r"https?://\S+", "http", t)
    return re.sub(r"\s+", " ", t).strip().lower()


def tweeteval_val_keys(data_dir: Path) -> set[str]:
    path = Path(data_dir) / "tweeteval" / "sentiment" / "val_text.txt"
    if not path.exists():
        return set()
    return {tweeteval_key(t) for t in path.read_text(encoding="utf-8").splitlines()}


def _rows(path: Path) -> list[tuple[str, str, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[1] not in SENTIMENT_LABELS:
            continue
        out.append((parts[0], parts[1], clean(parts[2])))
    return out


def split_of(name: str) -> str:
    return "test" if name in TEST_FILES else "val" if name in VAL_FILES else "train"


def load(data_dir: Path) -> list[Record]:
    base = Path(data_dir) / FOLDER
    files = sorted(base.glob("twitter-*-A.txt"))
    if not files:
        raise FileNotFoundError(f"no SemEval files (twitter-*-A.txt) under {base}")
    overlap = tweeteval_val_keys(data_dir)
    # held-out files first, so a tweet annotated in both keeps its held-out split
    files.sort(key=lambda p: {"test": 0, "val": 1, "train": 2}[split_of(p.name)])
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    out: list[Record] = []
    for path in files:
        split = split_of(path.name)
        for tid, label, text in _rows(path):
            key = tweeteval_key(text)
            if tid in seen_ids or not text or key in overlap or key in seen_texts:
                continue
            seen_ids.add(tid)
            seen_texts.add(key)
            out.append(
                Record(
                    uid=f"{NAME}:{tid}",
                    text=text,
                    label=label,
                    split=split,
                    author=f"{NAME}:{tid}",
                    order=float(len(out)),
                    dataset=NAME,
                )
            )
    return out


def counts(data_dir: Path) -> dict[str, int]:
    """Rows per split after cleaning (the model cards record them)."""
    c: dict[str, int] = {}
    for r in load(data_dir):
        c[r.split] = c.get(r.split, 0) + 1
    return c


if __name__ == "__main__":  # a quick look: python -m pipelines.datasets.semeval ../shared/data
    import sys

    print(json.dumps(counts(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))))
