"""MVSA-Single (text + image, CLMLF split) and MVSA-Multiple (text only, CLMLF split)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pipelines.datasets.base import Record

SINGLE = "mvsa-single"
MULTIPLE = "mvsa-multiple"
_SPLIT = {"train": "train", "dev": "val", "test": "test"}
_MULTI_LABELS = {0: "positive", 1: "neutral", 2: "negative"}


def load_single(data_dir: Path, with_images: bool = True) -> list[Record]:
    base = Path(data_dir) / "mvsa-single"
    out = []
    with (base / "manifest_clmlf_split.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            img = base / row["image"] if with_images and row["image"] else None
            out.append(
                Record(
                    uid=f"mvsa-single:{row['id']}",
                    text=row["text_clmlf"],
                    label=row["label"],
                    split=_SPLIT[row["split"]],
                    author=f"mvsa-single:{row['id']}",
                    order=float(row["id"]),
                    image=img,
                    dataset=SINGLE,
                )
            )
    return out


def load_multiple(data_dir: Path) -> list[Record]:
    base = Path(data_dir) / "mvsa-multiple-text"
    out = []
    for fname, split in (("train.json", "train"), ("dev.json", "val"), ("test.json", "test")):
        for row in json.loads((base / fname).read_text(encoding="utf-8")):
            out.append(
                Record(
                    uid=f"mvsa-multiple:{row['id']}",
                    text=row["text"],
                    label=_MULTI_LABELS[int(row["emotion_label"])],
                    split=split,
                    author=f"mvsa-multiple:{row['id']}",
                    order=float(row["id"]),
                    dataset=MULTIPLE,
                )
            )
    return out
