"""Cached frozen *states* (not pooled vectors) for heads that attend inside the encoders (SPP-SCL).

- Text: the [CLS] state and the word-token states of chosen layers of the frozen text encoder,
  truncated at `max_tokens` (incl. [CLS]/[SEP]). Stored ragged: `cls` [N, L, C], `tokens`
  [T, L, C] (all word tokens of all texts, concatenated), `offsets` [N+1]. [CLS] and [SEP]
  are not in `tokens` (the official SPP-SCL code drops position 0 and the last position).
- Images: the backbone's feature map [N, 1280, 7, 7].

Everything is float16. One file per (encoder version, settings, ordered content): the key is
sha256 over the encoder version, the settings and every item's content key (text UTF-8 /
image file bytes, see `pipelines.feature_cache.content_key`). Files are written to a temporary
name and renamed, and loaded memory-mapped, so a 1-2 GB cache does not have to sit in RAM.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pipelines.feature_cache import _slug, content_key


def _bundle_key(version: str, settings: str, keys: Sequence[str]) -> str:
    h = hashlib.sha256(f"{version}\0{settings}\0".encode())
    for k in keys:
        h.update(k.encode("ascii"))
    return h.hexdigest()[:32]


def _save_atomic(obj: dict[str, Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class TextStates:
    """Ragged per-text layer states; `batch(idx)` pads to the longest text of the batch."""

    cls: Tensor  # [N, L, C] float16
    tokens: Tensor  # [T, L, C] float16
    offsets: Tensor  # [N + 1] int64

    def __len__(self) -> int:
        return self.cls.shape[0]

    @property
    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def subset(self, idx: Sequence[int] | Tensor) -> TextStates:
        idx = torch.as_tensor(idx, dtype=torch.long)
        lens = self.lengths[idx]
        parts = [self.tokens[self.offsets[i] : self.offsets[i + 1]] for i in idx.tolist()]
        toks = torch.cat(parts) if parts else self.tokens[:0]
        offs = torch.zeros(len(idx) + 1, dtype=torch.long)
        offs[1:] = torch.cumsum(lens, 0)
        return TextStates(self.cls[idx].clone(), toks.clone(), offs)

    def batch(self, idx: Sequence[int] | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(cls [B, L, C], tokens [B, L, Nmax, C], lengths [B]) as float32."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        lens = self.lengths[idx]
        n_max = int(lens.max()) if len(idx) else 1
        n_layers, dim = self.cls.shape[1], self.cls.shape[2]
        out = torch.zeros(len(idx), n_max, n_layers, dim, dtype=torch.float32)
        for b, i in enumerate(idx.tolist()):
            s, e = int(self.offsets[i]), int(self.offsets[i + 1])
            out[b, : e - s] = self.tokens[s:e].float()
        return self.cls[idx].float(), out.permute(0, 2, 1, 3), lens


def cached_text_states(
    encoder,
    texts: Sequence[str],
    cache_dir: Path,
    layers: Sequence[int] = (3, 4, 5, 6),
    max_tokens: int = 64,
    batch_size: int = 64,
) -> TextStates:
    """Layer states of `texts` from a frozen `models.text_encoder.TextEncoder` (cached)."""
    texts = list(texts)
    layers = tuple(int(x) for x in layers)
    settings = f"layers={layers};max_tokens={max_tokens};fp16;words-only"
    keys = [content_key(encoder.version, t.encode("utf-8")) for t in texts]
    path = (
        Path(cache_dir) / "states" / _slug(encoder.version) / f"text-{_bundle_key(encoder.version, settings, keys)}.pt"
    )
    if path.exists():
        d = torch.load(path, mmap=True, weights_only=True)
        return TextStates(d["cls"], d["tokens"], d["offsets"])
    n = len(texts)
    order = sorted(range(n), key=lambda i: len(texts[i]))  # similar lengths share a batch
    cls = torch.zeros(n, len(layers), encoder.dim, dtype=torch.float16)
    words: list[Tensor | None] = [None] * n
    for s in tqdm(range(0, n, batch_size), desc="text states", unit="batch"):
        idx = order[s : s + batch_size]
        st = encoder.states([texts[i] for i in idx], pad_to=None)
        hs = torch.stack([st.hidden_states[k] for k in layers], dim=1).to(torch.float16)  # [B, L, T, C]
        lens = st.attention_mask.sum(1).tolist()
        for b, i in enumerate(idx):
            ln = int(lens[b])
            cls[i] = hs[b, :, 0]
            end = max(ln - 1, 2)  # drop [SEP]; an empty text keeps its single [SEP] state
            words[i] = hs[b, :, 1:end].permute(1, 0, 2).contiguous().cpu()  # [n_i, L, C]
    lengths = torch.tensor([w.shape[0] for w in words], dtype=torch.long)  # type: ignore[union-attr]
    offsets = torch.zeros(n + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(lengths, 0)
    tokens = torch.cat(words) if n else torch.zeros(0, len(layers), encoder.dim, dtype=torch.float16)  # type: ignore[arg-type]
    _save_atomic({"cls": cls, "tokens": tokens, "offsets": offsets}, path)
    return TextStates(cls, tokens, offsets)


def cached_image_maps(encoder, paths: Sequence[Path | str], cache_dir: Path, batch_size: int = 32) -> Tensor:
    """Feature maps [N, 1280, 7, 7] (float16) of image files from a frozen `ImageEncoder`."""
    from PIL import Image

    files = [Path(p) for p in paths]
    keys = [content_key(encoder.version, p.read_bytes()) for p in files]
    path = (
        Path(cache_dir)
        / "states"
        / _slug(encoder.version)
        / f"fmap-{_bundle_key(encoder.version, 'feature_map;fp16', keys)}.pt"
    )
    if path.exists():
        return torch.load(path, mmap=True, weights_only=True)["fmap"]
    chunks: list[Tensor] = []
    for s in tqdm(range(0, len(files), batch_size), desc="image feature maps", unit="batch"):
        batch = []
        for p in files[s : s + batch_size]:
            with Image.open(io.BytesIO(p.read_bytes())) as im:
                batch.append(encoder.preprocess(im))
        chunks.append(encoder.feature_map(torch.stack(batch)).to(torch.float16).cpu())
    fmap = torch.cat(chunks) if chunks else torch.zeros(0, encoder.dim, 7, 7, dtype=torch.float16)
    _save_atomic({"fmap": fmap}, path)
    return fmap
