"""Content-addressed cache of frozen-encoder features, so training and evaluation never re-encode.

Key = sha256(encoder version + NUL + content bytes): text as UTF-8, images and audio as their
file bytes. The same tweet appearing in two data sets is encoded once, and bumping an encoder's
`version` invalidates its entries without touching anyone else's.

Layout: `<cache_dir>/<encoder-version-slug>/shard-*.npz`, each shard holding `keys` (hex
strings) and `feats` (float32 [N, D]). New features are appended as a new shard, written to a
temporary file and renamed, so concurrent writers never corrupt a shard (at worst a feature is
stored twice).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm


def content_key(version: str, content: bytes) -> str:
    return hashlib.sha256(version.encode("utf-8") + b"\0" + content).hexdigest()


def _slug(version: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", version)[:120] or "encoder"


class FeatureStore:
    """All cached features of one encoder version (loaded into memory on open)."""

    def __init__(self, cache_dir: Path, version: str) -> None:
        self.version = version
        self.dir = Path(cache_dir) / _slug(version)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, np.ndarray] = {}
        self._loaded: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Pick up shards written since opening (e.g. by another process)."""
        for shard in sorted(self.dir.glob("shard-*.npz")):
            if shard.name in self._loaded:
                continue
            with np.load(shard, allow_pickle=False) as z:
                keys, feats = z["keys"], z["feats"]
            for k, f in zip(keys.tolist(), feats, strict=True):
                self._index[k] = f
            self._loaded.add(shard.name)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: str) -> np.ndarray | None:
        return self._index.get(key)

    def put(self, keys: Sequence[str], feats: np.ndarray) -> None:
        if not len(keys):
            return
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        name = f"shard-{uuid.uuid4().hex}.npz"
        tmp = self.dir / f".tmp-{name}"
        with tmp.open("wb") as f:
            np.savez(f, keys=np.asarray(list(keys)), feats=feats)
        os.replace(tmp, self.dir / name)
        self._loaded.add(name)
        for k, f in zip(keys, feats, strict=True):
            self._index[k] = f


def cached_features(
    version: str,
    contents: Sequence[bytes],
    compute: Callable[[list[int]], Tensor | np.ndarray],
    cache_dir: Path,
    batch_size: int = 256,
    desc: str = "encode",
    sort_by_size: bool = False,
) -> Tensor:
    """Features [N, D] for `contents`; `compute(indices)` encodes the misses (in batches).

    Misses are written after every batch, so an interrupted run keeps what it finished.
    `sort_by_size` batches similar-sized items together (less padding for text encoders).
    """
    store = FeatureStore(cache_dir, version)
    keys = [content_key(version, c) for c in contents]
    missing: list[int] = []
    first_of: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in store and k not in first_of:
            first_of[k] = i
            missing.append(i)
    if missing:
        if sort_by_size:
            missing.sort(key=lambda i: len(contents[i]))
        bar = tqdm(total=len(missing), desc=f"{desc} ({len(keys) - len(missing)} cached)", unit="item")
        for s in range(0, len(missing), batch_size):
            idx = missing[s : s + batch_size]
            out = compute(idx)
            arr = out.detach().cpu().float().numpy() if isinstance(out, Tensor) else np.asarray(out, np.float32)
            store.put([keys[i] for i in idx], arr)
            bar.update(len(idx))
        bar.close()
    if not keys:
        return torch.empty(0, 0)
    rows = cast("list[np.ndarray]", [store.get(k) for k in keys])  # every key was stored above
    return torch.from_numpy(np.stack(rows))


def cached_text_features(encoder, texts: Sequence[str], cache_dir: Path, batch_size: int = 256) -> Tensor:
    """`encoder.encode(texts)` [N, D], each distinct text encoded once per encoder version."""
    texts = list(texts)
    return cached_features(
        encoder.version,
        [t.encode("utf-8") for t in texts],
        lambda idx: encoder.encode([texts[i] for i in idx]),
        cache_dir,
        batch_size=batch_size,
        desc="text features",
        sort_by_size=True,
    )


def cached_image_features(encoder, paths: Sequence[Path | str], cache_dir: Path, batch_size: int = 32) -> Tensor:
    """Pooled image features [N, D] for image files, keyed by the file bytes."""
    from PIL import Image

    blobs = [Path(p).read_bytes() for p in paths]

    def compute(idx: list[int]) -> Tensor:
        import io

        batch = []
        for i in idx:
            with Image.open(io.BytesIO(blobs[i])) as im:
                batch.append(encoder.preprocess(im))
        with torch.inference_mode():
            return encoder.encode(torch.stack(batch))

    return cached_features(encoder.version, blobs, compute, cache_dir, batch_size=batch_size, desc="image features")
