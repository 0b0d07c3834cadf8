"""CMU-MOSI utterance-level audio features from the bc-LSTM release (`mosi-audio/audio_2way.pickle`).

The pickle is a 7-tuple: `(train_x [62, 63, 73], train_y [62, 63], test_x [31, 63, 73],
test_y [31, 63], max_len = 63, train_lengths [62], test_lengths [31])`: per video, its
utterances' 73-d openSMILE vectors zero-padded to 63, binary labels (0 negative / 1 positive)
and the real utterance count. bc-LSTM's speaker-independent split: 62 train videos (1447
utterances) / 31 test videos (752). There is no validation set; we carve one from the training
*videos* (whole videos, so it stays speaker-independent as far as videos go), fixed by
`split_seed` and independent of the training seed.

Tri-modal views (one sample = one utterance; text and video are not in this release):
- `audio`: the utterance's own 73-d vector, a length-1 sequence;
- `vision` slot, with `context=True` (default): the audio vectors of all utterances of the same
  video, in order (length = the video's utterance count) - bc-LSTM's contextual input. The slot
  is reused because the tri-modal models have no fourth input; with `context=False` it is absent;
- `text`: absent (present = False).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from pipelines.datasets.trimodal import TriModalSplit, missing_view

NAME = "mosi-audio"
LABELS: tuple[str, ...] = ("negative", "positive")
FEATURE_DIM = 73


def read_raw(data_dir: Path) -> dict[str, np.ndarray | list[int]]:
    path = Path(data_dir) / NAME / "audio_2way.pickle"
    with path.open("rb") as f:
        tx, ty, ex, ey, max_len, tl, el = pickle.load(f, encoding="latin1")  # noqa: S301 - local data
    return {
        "train_x": np.asarray(tx, np.float32),
        "train_y": np.asarray(ty),
        "test_x": np.asarray(ex, np.float32),
        "test_y": np.asarray(ey),
        "max_len": int(max_len),
        "train_len": list(tl),
        "test_len": list(el),
    }


def video_split(n_videos: int, n_val: int = 6, split_seed: int = 0) -> tuple[list[int], list[int]]:
    """(train videos, validation videos) from bc-LSTM's training videos."""
    order = np.random.default_rng(split_seed).permutation(n_videos)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def _build(
    x: np.ndarray, y: np.ndarray, lengths: list[int], videos: list[int], prefix: str, context: bool
) -> TriModalSplit:
    rows = [(v, j) for v in videos for j in range(int(lengths[v]))]
    n = len(rows)
    audio = np.stack([x[v, j][None, :] for v, j in rows]) if rows else np.zeros((0, 1, FEATURE_DIM), np.float32)
    labels = np.asarray([int(y[v, j]) for v, j in rows], np.int64)
    if context:
        max_len = x.shape[1]
        vision = np.zeros((n, max_len, FEATURE_DIM), np.float32)
        vlen = np.zeros(n, np.int64)
        for i, (v, _) in enumerate(rows):
            vision[i, : lengths[v]] = x[v, : lengths[v]]
            vlen[i] = lengths[v]
    else:
        vision, vlen = missing_view(n, FEATURE_DIM)
    text, tlen = missing_view(n, 1)
    return TriModalSplit(
        text=text,
        text_lengths=tlen,
        audio=audio.astype(np.float32),
        audio_lengths=np.ones(n, np.int64),
        vision=vision,
        vision_lengths=vlen,
        labels=labels,
        ids=[f"{prefix}{v}:{j}" for v, j in rows],
        groups=[f"{prefix}{v}" for v, _ in rows],
        meta={"source": NAME, "context": context},
    )


def load_mosi_audio(
    data_dir: Path, n_val_videos: int = 6, split_seed: int = 0, context: bool = True
) -> dict[str, TriModalSplit]:
    """{"train", "val", "test"} utterance-level splits (val = `n_val_videos` training videos)."""
    raw = read_raw(data_dir)
    tr_v, va_v = video_split(len(raw["train_len"]), n_val_videos, split_seed)
    test_v = list(range(len(raw["test_len"])))
    return {
        "train": _build(raw["train_x"], raw["train_y"], raw["train_len"], tr_v, "train-video", context),
        "val": _build(raw["train_x"], raw["train_y"], raw["train_len"], va_v, "train-video", context),
        "test": _build(raw["test_x"], raw["test_y"], raw["test_len"], test_v, "test-video", context),
    }
