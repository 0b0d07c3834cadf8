"""`TriModalSplit`: one split of a text/audio/vision data set as padded numpy arrays + lengths.

Every tri-modal data source (MMSA pickles, EmoDB, MOSI-audio, MVSA-Single) is turned into
`TriModalSplit`s; `TriModalDataset` + `collate_trimodal` turn those into `models.trimodal.
TriModalBatch`es (trimmed to the longest sequence in the batch, bool prefix masks, `present`).

A view a data set lacks is stored as a [N, 1, D] zero array with length 0 (D may be 1), so
`present[:, i]` is False and models see an all-False mask.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from models.trimodal import VIEWS, TriModalBatch


@dataclass
class TriModalSplit:
    text: np.ndarray  # [N, Lt, Dt] float32
    text_lengths: np.ndarray  # [N] int64
    audio: np.ndarray  # [N, La, Da]
    audio_lengths: np.ndarray
    vision: np.ndarray  # [N, Lv, Dv]
    vision_lengths: np.ndarray
    labels: np.ndarray  # [N] float32 (regression) or int64 (class index)
    ids: list[str]
    raw_text: list[str] | None = None
    classification_labels: np.ndarray | None = None  # MMSA's optional class labels
    groups: list[str] | None = None  # speaker / video id (for speaker-independent splits)
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name in VIEWS:
            x, ln = getattr(self, name), getattr(self, f"{name}_lengths")
            if x.ndim != 3 or x.shape[0] != n or ln.shape != (n,):
                raise ValueError(f"{name}: expected [N={n}, L, D] and lengths [N], got {x.shape} / {ln.shape}")
        if len(self.ids) != n:
            raise ValueError(f"ids: {len(self.ids)} != {n}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def dims(self) -> tuple[int, int, int]:
        return int(self.text.shape[2]), int(self.audio.shape[2]), int(self.vision.shape[2])

    @property
    def present(self) -> np.ndarray:
        """[N, 3] bool: a view is present for a sample when its length is > 0."""
        return np.stack([self.text_lengths > 0, self.audio_lengths > 0, self.vision_lengths > 0], 1)

    def subset(self, idx: Sequence[int] | np.ndarray) -> TriModalSplit:
        ix = np.asarray(idx, dtype=np.int64)

        def pick(lst: list[str] | None) -> list[str] | None:
            return None if lst is None else [lst[i] for i in ix]

        cls = None if self.classification_labels is None else self.classification_labels[ix]
        return replace(
            self,
            text=self.text[ix],
            text_lengths=self.text_lengths[ix],
            audio=self.audio[ix],
            audio_lengths=self.audio_lengths[ix],
            vision=self.vision[ix],
            vision_lengths=self.vision_lengths[ix],
            labels=self.labels[ix],
            ids=[self.ids[i] for i in ix],
            raw_text=pick(self.raw_text),
            classification_labels=cls,
            groups=pick(self.groups),
            meta=dict(self.meta),
        )

    def drop_view(self, name: str) -> TriModalSplit:
        """The same split with one view made missing (zeros, length 0) - for ablations."""
        n = len(self)
        d = getattr(self, name).shape[2]
        x, ln = np.zeros((n, 1, d), np.float32), np.zeros(n, np.int64)
        return replace(self, **{name: x, f"{name}_lengths": ln})


def missing_view(n: int, dim: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Features and lengths of a view that no sample has."""
    return np.zeros((n, 1, dim), np.float32), np.zeros(n, np.int64)


def lengths_from_nonzero(x: np.ndarray) -> np.ndarray:
    """Prefix length = index of the last row with any non-zero feature + 1 (0 when all zero)."""
    nz = np.abs(x).sum(-1) > 0  # [N, L]
    rev = nz[:, ::-1]
    last = x.shape[1] - rev.argmax(1)
    return np.where(nz.any(1), last, 0).astype(np.int64)


@dataclass
class Standardizer:
    """Per-feature z-scoring of one view, fitted on the valid positions of a training split."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, lengths: np.ndarray) -> Standardizer:
        mask = np.arange(x.shape[1])[None, :] < lengths[:, None]
        rows = x[mask]
        if rows.size == 0:
            return cls(np.zeros(x.shape[2], np.float32), np.ones(x.shape[2], np.float32))
        std = rows.std(0)
        return cls(rows.mean(0).astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32))

    def apply(self, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        mask = (np.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
        return np.where(mask, (x - self.mean) / self.std, 0.0).astype(np.float32)

    def apply_to(self, split: TriModalSplit, view: str) -> TriModalSplit:
        """The split with `view` z-scored."""
        return replace(split, **{view: self.apply(getattr(split, view), getattr(split, f"{view}_lengths"))})


STANDARDIZER_FILE = "standardizer.json"


def save_standardizers(out_dir: Path, stats: dict[str, Standardizer], note: str = "") -> Path:
    """Write the train-split z-scoring statistics next to a checkpoint (the stream must reuse them)."""
    path = Path(out_dir) / STANDARDIZER_FILE
    body = {
        "note": note or "per-feature mean/std of the training split's valid positions",
        "views": {
            v: {"mean": st.mean.astype(float).tolist(), "std": st.std.astype(float).tolist()} for v, st in stats.items()
        },
    }
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


def load_standardizers(ckpt_dir: Path) -> dict[str, Standardizer]:
    """The statistics `save_standardizers` wrote; {} when the checkpoint has none."""
    path = Path(ckpt_dir) / STANDARDIZER_FILE
    if not path.exists():
        return {}
    views = json.loads(path.read_text(encoding="utf-8"))["views"]
    return {
        v: Standardizer(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32)) for v, d in views.items()
    }


def standardize(
    train: TriModalSplit,
    others: Sequence[TriModalSplit],
    views: Sequence[str] = ("audio", "vision"),
) -> tuple[TriModalSplit, list[TriModalSplit], dict[str, Standardizer]]:
    """Z-score the given views with statistics of the train split's valid positions."""
    stats: dict[str, Standardizer] = {}
    out_train, out_others = train, list(others)
    for v in views:
        st = Standardizer.fit(getattr(train, v), getattr(train, f"{v}_lengths"))
        stats[v] = st
        out_train = st.apply_to(out_train, v)
        out_others = [st.apply_to(s, v) for s in out_others]
    return out_train, out_others, stats


class TriModalDataset(Dataset):
    """Index dataset over a `TriModalSplit`; items are (sample index) and collation does the rest."""

    def __init__(self, split: TriModalSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, idx: list[int]) -> tuple[TriModalBatch, torch.Tensor]:
        return collate_trimodal(self.split, idx)


def _view_tensor(x: np.ndarray, lengths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(int(lengths.max()) if lengths.size else 0, 1)
    xt = torch.from_numpy(np.ascontiguousarray(x[:, :length], dtype=np.float32))
    mask = torch.arange(length)[None, :] < torch.from_numpy(lengths.astype(np.int64))[:, None]
    xt = torch.nan_to_num(xt, nan=0.0, posinf=0.0, neginf=0.0) * mask.unsqueeze(-1)
    return xt, mask


def collate_trimodal(split: TriModalSplit, idx: Sequence[int] | np.ndarray) -> tuple[TriModalBatch, torch.Tensor]:
    """Padded tensors + masks for samples `idx`, plus the label tensor."""
    ix = np.asarray(idx, dtype=np.int64)
    parts: dict[str, torch.Tensor] = {}
    for name in VIEWS:
        lengths = np.minimum(getattr(split, f"{name}_lengths")[ix], getattr(split, name).shape[1])
        x, m = _view_tensor(getattr(split, name)[ix], lengths)
        parts[name], parts[f"{name}_mask"] = x, m
    parts["present"] = torch.stack([parts[f"{n}_mask"].any(1) for n in VIEWS], 1)
    labels = torch.from_numpy(np.asarray(split.labels[ix]))
    return TriModalBatch(**parts), labels
