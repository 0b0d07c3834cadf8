"""MVSA-Single as tri-modal samples: text tokens + image regions, no audio.

- `text`: the frozen MiniLM's last-layer states, [CLS] then the word tokens (<= 64 tokens), 384-d;
- `vision`: EfficientNet-Lite0's last feature map, 7x7 = 49 positions in raster order, 1280-d;
- `audio`: absent for every sample (present = False; the models mask it everywhere).

Records come from `pipelines.datasets.mvsa.load_single` (CLMLF split 3611/450/450; labels
negative/neutral/positive). Encoder outputs come from `pipelines.state_cache`, called exactly as
the SPP-SCL recipe calls it (same text list, layers 3-6, 64 tokens; same image list), so the two
share one cache file per encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.datasets.base import SENTIMENT_LABELS
from pipelines.datasets.trimodal import TriModalSplit, missing_view

NAME = "mvsa-single"
LABELS: tuple[str, ...] = SENTIMENT_LABELS  # negative, neutral, positive
MAX_TOKENS = 64
CACHE_LAYERS: tuple[int, ...] = (3, 4, 5, 6)  # what the SPP-SCL cache holds; we use the last


def load_mvsa_single_trimodal(
    data_dir: Path, cache_dir: Path, device: str = "cpu", with_image: bool = True
) -> dict[str, TriModalSplit]:
    """{"train", "val", "test"} tri-modal splits (encoders run once, then cached)."""
    from models.text_encoder import TextEncoder
    from pipelines.datasets import mvsa
    from pipelines.state_cache import cached_image_maps, cached_text_states

    records = mvsa.load_single(data_dir)
    states = cached_text_states(
        TextEncoder(max_length=MAX_TOKENS, device=device),
        [r.text for r in records],
        cache_dir,
        layers=CACHE_LAYERS,
        max_tokens=MAX_TOKENS,
    )
    n = len(records)
    lens = states.lengths.numpy()
    lt = int(lens.max()) + 1
    text = np.zeros((n, lt, states.cls.shape[2]), np.float16)
    text[:, 0] = states.cls[:, -1].numpy()
    toks = states.tokens[:, -1].numpy()  # [T, 384] last layer
    offs = states.offsets.numpy()
    for i in range(n):
        text[i, 1 : 1 + lens[i]] = toks[offs[i] : offs[i + 1]]
    tlen = (lens + 1).astype(np.int64)
    if with_image:
        from models.image_encoder import ImageEncoder

        fmap = cached_image_maps(ImageEncoder(device=device), [r.image for r in records], cache_dir)
        vision = fmap.flatten(2).transpose(1, 2).numpy()  # [N, 49, 1280] float16
        vlen = np.full(n, vision.shape[1], np.int64)
    else:
        vision, vlen = missing_view(n, 1280)
    audio, alen = missing_view(n, 1)
    labels = np.asarray([LABELS.index(r.label) for r in records], np.int64)
    full = TriModalSplit(
        text=text,
        text_lengths=tlen,
        audio=audio,
        audio_lengths=alen,
        vision=vision,
        vision_lengths=vlen,
        labels=labels,
        ids=[r.uid for r in records],
        raw_text=[r.text for r in records],
        meta={"source": NAME},
    )
    return {s: full.subset([i for i, r in enumerate(records) if r.split == s]) for s in ("train", "val", "test")}
