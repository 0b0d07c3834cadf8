"""MELD sentiment from the CSVs. Speakers are the users; (split, dialogue, utterance) is time.

The splits are laid end to end (train, then dev, then test) so a test speaker's running mean
includes their earlier (training) utterances, exactly as a live author's history would.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pipelines.datasets.base import Record

NAME = "meld"
_FILES = (("train_sent_emo.csv", "train"), ("dev_sent_emo.csv", "val"), ("test_sent_emo.csv", "test"))


def _fix(text: str) -> str:
    """Undo the cp1252 mojibake some MELD utterances carry (e.g. 'â€™' for a right quote)."""
    if "\u00e2" in text or "\u00c3" in text:
        try:
            return text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return text
    return text


def load(data_dir: Path) -> list[Record]:
    base = Path(data_dir) / "meld"
    out = []
    for k, (fname, split) in enumerate(_FILES):
        with (base / fname).open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                d, u = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
                out.append(
                    Record(
                        uid=f"meld:{split}:{d}:{u}",
                        text=_fix(row["Utterance"]),
                        label=row["Sentiment"],
                        split=split,
                        author=f"meld:{row['Speaker'].strip()}",
                        order=k * 1e7 + d * 1e3 + u,
                        dataset=NAME,
                    )
                )
    out.sort(key=lambda r: r.order)
    return out
