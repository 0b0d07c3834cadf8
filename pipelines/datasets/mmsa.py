"""Loader for the public MMSA pickle format (thuiar/MMSA: MOSI, MOSEI, CH-SIMS feature files).

The file is a pickled dict {"train", "valid", "test"}; each split is a dict with
- `text` float [N, Lt, 768] (BERT features) and/or `text_bert` [N, 3, Lt] (ids, mask, segment ids),
- `audio` [N, La, Da], `vision` [N, Lv, Dv], optional `audio_lengths` / `vision_lengths` [N],
- `regression_labels` [N] (and optionally `classification_labels`, `id`, `raw_text`).

Text lengths come from the `text_bert` mask when it is there, else from the last non-zero row.
Audio/vision lengths come from `*_lengths` when given, else from the last non-zero row. Lengths
longer than the stored sequence are clipped; a length of 0 makes that view missing for the sample.
Non-finite values (MOSEI's COVAREP has -inf) are replaced by 0.

`text_source="bert-ids"` (or `"auto"` with no `text` array) re-encodes `text_bert` token ids with
the frozen MiniLM (384-d token states of its last layer). MiniLM shares bert-base-uncased's
vocabulary, so this is valid for MOSI/MOSEI ids; CH-SIMS uses bert-base-chinese ids and is not.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.datasets.trimodal import TriModalSplit, lengths_from_nonzero

SPLITS: tuple[str, ...] = ("train", "valid", "test")
SPLIT_ALIASES: dict[str, str] = {"train": "train", "val": "valid", "valid": "valid", "dev": "valid", "test": "test"}

__all__ = [
    "SPLITS",
    "TriModalSplit",
    "load_mmsa",
    "load_mmsa_split",
    "make_synthetic_mmsa",
    "read_pickle",
    "split_from_dict",
]


def read_pickle(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")  # noqa: S301 - trusted local research data
    if not isinstance(data, dict) or not all(s in data for s in SPLITS):
        raise ValueError(f"{path}: not an MMSA pickle (need a dict with keys {SPLITS})")
    return data


def _clean(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    return np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)


def _lengths(d: dict[str, Any], key: str, x: np.ndarray) -> np.ndarray:
    if d.get(key) is not None:
        ln = np.asarray(d[key], dtype=np.int64).reshape(-1)
    else:
        ln = lengths_from_nonzero(x)
    return np.clip(ln, 0, x.shape[1])


def _encode_bert_ids(text_bert: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """MiniLM last-layer token states [N, Lt, 384] for MMSA `text_bert` ids (mask applied)."""
    import torch

    from models.text_encoder import TextEncoder

    enc = TextEncoder()
    ids = torch.as_tensor(np.asarray(text_bert[:, 0]), dtype=torch.long)
    mask = torch.as_tensor(np.asarray(text_bert[:, 1]), dtype=torch.long)
    seg = torch.as_tensor(np.asarray(text_bert[:, 2]), dtype=torch.long)
    out = []
    with torch.inference_mode():
        for s in range(0, len(ids), batch_size):
            h = enc.model(
                input_ids=ids[s : s + batch_size],
                attention_mask=mask[s : s + batch_size],
                token_type_ids=seg[s : s + batch_size],
            ).last_hidden_state
            out.append((h * mask[s : s + batch_size, :, None]).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, ids.shape[1], enc.dim), np.float32)


def split_from_dict(d: dict[str, Any], name: str = "", text_source: str = "auto") -> TriModalSplit:
    """One MMSA split dict -> `TriModalSplit` (regression labels)."""
    text_bert = None if d.get("text_bert") is None else np.asarray(d["text_bert"])
    use_ids = text_source == "bert-ids" or (text_source == "auto" and d.get("text") is None)
    if use_ids:
        if text_bert is None:
            raise ValueError(f"{name}: text_source needs `text_bert` ids, which the file lacks")
        text = _encode_bert_ids(text_bert)
    elif d.get("text") is not None:
        text = _clean(d["text"])
    else:
        raise ValueError(f"{name}: neither `text` nor `text_bert` present")
    if text_bert is not None:
        text_len = np.asarray(text_bert[:, 1], dtype=np.int64).sum(1)
    else:
        text_len = lengths_from_nonzero(text)
    audio, vision = _clean(d["audio"]), _clean(d["vision"])
    labels = np.asarray(d["regression_labels"], dtype=np.float32).reshape(-1)
    n = len(labels)
    ids = [str(i) for i in d["id"]] if d.get("id") is not None else [f"{name}:{i}" for i in range(n)]
    raw = [str(t) for t in d["raw_text"]] if d.get("raw_text") is not None else None
    cls = d.get("classification_labels")
    return TriModalSplit(
        text=text,
        text_lengths=np.clip(text_len, 0, text.shape[1]),
        audio=audio,
        audio_lengths=_lengths(d, "audio_lengths", audio),
        vision=vision,
        vision_lengths=_lengths(d, "vision_lengths", vision),
        labels=labels,
        ids=ids,
        raw_text=raw,
        classification_labels=None if cls is None else np.asarray(cls).reshape(-1),
        meta={"source": "mmsa", "split": name},
    )


def load_mmsa(path: str | Path, text_source: str = "auto") -> dict[str, TriModalSplit]:
    """All three splits, keyed "train" / "valid" / "test"."""
    data = read_pickle(path)
    return {s: split_from_dict(data[s], s, text_source) for s in SPLITS}


def load_mmsa_split(path: str | Path, split: str, text_source: str = "auto") -> TriModalSplit:
    """One split; accepts "val"/"dev" as aliases of "valid"."""
    s = SPLIT_ALIASES.get(split, split)
    return split_from_dict(read_pickle(path)[s], s, text_source)


def make_synthetic_mmsa(
    path: str | Path,
    n: tuple[int, int, int] = (48, 16, 16),
    dims: tuple[int, int, int] = (768, 5, 20),
    lengths: tuple[int, int, int] = (12, 20, 15),
    seed: int = 0,
    with_text_bert: bool = True,
) -> Path:
    """Write a small pickle in exactly the MMSA layout (for tests and smoke runs).

    Labels in [-3, 3] depend on the features (text mean of dim 0 plus audio/vision means), so a
    model can learn them; sequences have random lengths with zero padding like MMSA's files.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    for split, count in zip(SPLITS, n, strict=True):
        lt, la, lv = lengths
        tl = rng.integers(3, lt + 1, count)
        al = rng.integers(1, la + 1, count)
        vl = rng.integers(1, lv + 1, count)
        text = np.zeros((count, lt, dims[0]), np.float32)
        audio = np.zeros((count, la, dims[1]), np.float32)
        vision = np.zeros((count, lv, dims[2]), np.float32)
        for i in range(count):
            text[i, : tl[i]] = rng.normal(size=(tl[i], dims[0]))
            audio[i, : al[i]] = rng.normal(size=(al[i], dims[1]))
            vision[i, : vl[i]] = rng.normal(size=(vl[i], dims[2]))
        score = (
            np.array([text[i, : tl[i], 0].mean() for i in range(count)]) * 2
            + np.array([audio[i, : al[i], 0].mean() for i in range(count)])
            + np.array([vision[i, : vl[i], 0].mean() for i in range(count)])
        )
        y = np.clip(np.round(score * 2) / 2, -3, 3).astype(np.float32)
        d: dict[str, Any] = {
            "raw_text": [f"utterance {split} {i}" for i in range(count)],
            "id": [f"vid{i // 4}$_${i % 4}" for i in range(count)],
            "text": text,
            "audio": audio,
            "vision": vision,
            "audio_lengths": al.tolist(),
            "vision_lengths": vl.tolist(),
            "regression_labels": y,
            "classification_labels": (y > 0).astype(np.float32) + (y >= 0),
        }
        if with_text_bert:
            tb = np.zeros((count, 3, lt), np.float32)
            for i in range(count):
                tb[i, 0, : tl[i]] = rng.integers(1000, 2000, tl[i])
                tb[i, 0, 0], tb[i, 0, tl[i] - 1] = 101, 102
                tb[i, 1, : tl[i]] = 1
            d["text_bert"] = tb
        out[split] = d
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("wb") as f:
        pickle.dump(out, f, protocol=4)
    return p
