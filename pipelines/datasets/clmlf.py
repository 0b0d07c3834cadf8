"""Data sets in CLMLF's JSON format (a list of {"id", "text", "emotion_label"} per split file).

- HFM (multimodal sarcasm; only the text is available here): `hfm/{train,valid,test}.json`,
  CLMLF's filtered standard split 19816/2410/2409, labels 0 not sarcastic / 1 sarcastic.
- MVSA-Multiple (text only) uses the same format; its loader is `pipelines.datasets.mvsa.load_multiple`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.datasets.base import Record

HFM = "hfm"
HFM_LABELS: tuple[str, ...] = ("not-sarcastic", "sarcastic")
_HFM_FILES = (("train.json", "train"), ("valid.json", "val"), ("test.json", "test"))


def read_clmlf_json(path: Path) -> list[dict[str, Any]]:
    """Rows of one CLMLF split file, checked for the three fields."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    for r in rows[:1]:
        missing = {"id", "text", "emotion_label"} - set(r)
        if missing:
            raise ValueError(f"{path}: not CLMLF format, missing {sorted(missing)}")
    return rows


def load_hfm(data_dir: Path) -> list[Record]:
    """HFM text with its binary sarcasm label (`label` is one of HFM_LABELS)."""
    base = Path(data_dir) / "hfm"
    out = []
    for fname, split in _HFM_FILES:
        for row in read_clmlf_json(base / fname):
            out.append(
                Record(
                    uid=f"hfm:{row['id']}",
                    text=row["text"],
                    label=HFM_LABELS[int(row["emotion_label"])],
                    split=split,
                    author=f"hfm:{row['id']}",
                    order=float(row["id"]),
                    dataset=HFM,
                )
            )
    return out
