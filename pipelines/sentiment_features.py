"""Frozen features + causal per-author running means for the 3-class sentiment data sets.

`build(datasets, ...)` returns one `SentimentTable` (all records of all requested data sets,
all splits) with, per view, the post's feature x, the author's running mean u of EARLIER
posts (time order within the data set) and the count n, plus the mask. This is the same
definition the scorer serves from Redis (docs/architecture.md, "Per-user fusion"), so training and
serving agree. Features come from the content-addressed cache, so a second run encodes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pipelines.datasets.base import SENTIMENT_LABELS, Record, label_index
from pipelines.datasets.registry import load_sentiment

TEXT, IMAGE = "text", "image"


@dataclass
class SentimentTable:
    records: list[Record]
    x: dict[str, Tensor]  # view -> [N, D]
    u: dict[str, Tensor]  # view -> [N, D]
    n: dict[str, Tensor]  # view -> [N]
    mask: dict[str, Tensor]  # view -> [N] bool
    y: Tensor  # [N] long, index into SENTIMENT_LABELS
    dataset: np.ndarray  # [N] str
    split: np.ndarray  # [N] str

    def select(self, idx: np.ndarray | Tensor) -> dict[str, dict[str, Tensor]]:
        """Batch dicts for the head (x, u, n, mask) at the given row indices."""
        i = torch.as_tensor(idx, dtype=torch.long)
        return {
            "x": {k: v[i] for k, v in self.x.items()},
            "u": {k: v[i] for k, v in self.u.items()},
            "n": {k: v[i] for k, v in self.n.items()},
            "mask": {k: v[i] for k, v in self.mask.items()},
        }

    def rows(self, split: str, dataset: str | None = None) -> np.ndarray:
        ok = self.split == split
        if dataset is not None:
            ok &= self.dataset == dataset
        return np.flatnonzero(ok)

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.records]


def running_means(
    feats: np.ndarray, present: np.ndarray, authors: list[str], order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """u[i] = mean of feats of author[i]'s posts strictly before i in `order` (ties: input order)."""
    u = np.zeros_like(feats, dtype=np.float32)
    n = np.zeros(len(feats), dtype=np.float32)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for i in np.argsort(order, kind="stable"):
        a = authors[i]
        c = counts.get(a, 0)
        if c:
            u[i] = sums[a] / c
            n[i] = c
        if present[i]:
            sums[a] = sums[a] + feats[i] if c else feats[i].astype(np.float64).copy()
            counts[a] = c + 1
    return u, n


def load_records(datasets: list[str], data_dir: Path, limit: int | None = None) -> list[Record]:
    """The records `build` assembles, in its order (`limit`: first N per split per set)."""
    records: list[Record] = []
    for name in datasets:
        recs = load_sentiment(name, data_dir)
        if limit:
            kept: dict[str, int] = {}
            sel = []
            for r in recs:
                if kept.get(r.split, 0) < limit:
                    kept[r.split] = kept.get(r.split, 0) + 1
                    sel.append(r)
            recs = sel
        records.extend(recs)
    return records


def with_their_authors(records: list[Record], splits: tuple[str, ...]) -> list[Record]:
    """The records of `splits` and every other post of their authors, in the original order."""
    authors = {(r.dataset, r.author) for r in records if r.split in splits}
    return [r for r in records if r.split in splits or (r.dataset, r.author) in authors]


def build(
    datasets: list[str],
    data_dir: Path,
    cache_dir: Path,
    with_image: bool = True,
    text_encoder=None,
    image_encoder=None,
    limit: int | None = None,
    cached_only: bool = False,
    splits: tuple[str, ...] | None = None,
) -> SentimentTable:
    """Load, encode (cached) and assemble. `limit` keeps the first N records per split per set.

    `splits` keeps only those splits' records, plus the other posts of their authors (an
    author's running mean reads their earlier posts whatever the split): evaluating a large
    encoder on test rows then encodes little more than the test rows.

    `cached_only` trains on what is already encoded: TRAIN records whose text is not in the
    cache are dropped and their uncached images treated as absent (val/test are always complete).
    """
    from models.image_encoder import IMAGE_ENCODER_VERSION
    from models.text_encoder import TEXT_ENCODER_VERSION
    from pipelines.feature_cache import FeatureStore, cached_image_features, cached_text_features, content_key

    records = load_records(datasets, data_dir, limit)
    if splits is not None:
        records = with_their_authors(records, splits)
    img_missing: set[int] = set()
    if cached_only:
        tv = getattr(text_encoder, "version", TEXT_ENCODER_VERSION)
        store = FeatureStore(cache_dir, tv)
        records = [r for r in records if r.split != "train" or content_key(tv, r.text.encode("utf-8")) in store]
        iv = getattr(image_encoder, "version", IMAGE_ENCODER_VERSION)
        istore = FeatureStore(cache_dir, iv)
        img_missing = {
            i
            for i, r in enumerate(records)
            if r.split == "train"
            and r.image is not None
            and Path(r.image).exists()
            and content_key(iv, Path(r.image).read_bytes()) not in istore
        }
    if text_encoder is None:
        from models.text_encoder import TextEncoder

        text_encoder = TextEncoder()
    xt = cached_text_features(text_encoder, [r.text for r in records], cache_dir).numpy()
    views = {TEXT: (xt, np.array([bool(r.text.strip()) for r in records]))}
    img_rows = [
        i for i, r in enumerate(records) if r.image is not None and Path(r.image).exists() and i not in img_missing
    ]
    if with_image and img_rows:
        if image_encoder is None:
            from models.image_encoder import ImageEncoder

            image_encoder = ImageEncoder()
        fi = cached_image_features(image_encoder, [Path(str(records[i].image)) for i in img_rows], cache_dir).numpy()
        xi = np.zeros((len(records), fi.shape[1]), dtype=np.float32)
        xi[img_rows] = fi
        mi = np.zeros(len(records), dtype=bool)
        mi[img_rows] = True
        views[IMAGE] = (xi, mi)
    x, u, n, mask = {}, {}, {}, {}
    ds = np.array([r.dataset for r in records])
    for v, (feat, present) in views.items():
        uu = np.zeros_like(feat)
        nn_ = np.zeros(len(records), dtype=np.float32)
        for name in datasets:  # authors never span data sets
            rows = np.flatnonzero(ds == name)
            if len(rows) == 0:
                continue
            ur, nr = running_means(
                feat[rows],
                present[rows],
                [records[i].author for i in rows],
                np.array([records[i].order for i in rows]),
            )
            uu[rows], nn_[rows] = ur, nr
        x[v] = torch.from_numpy(feat * present[:, None])
        u[v], n[v], mask[v] = torch.from_numpy(uu), torch.from_numpy(nn_), torch.from_numpy(present)
    y = torch.tensor([label_index(r.label) for r in records], dtype=torch.long)
    return SentimentTable(records, x, u, n, mask, y, ds, np.array([r.split for r in records]))


LABELS = SENTIMENT_LABELS
