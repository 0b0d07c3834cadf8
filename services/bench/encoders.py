"""The ceilings: encoder-only throughput on the real tweet-length distribution, per precision."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from models.registry import ScoringHead
from pipelines.scoring import InferenceEngine


@dataclass
class Rate:
    name: str
    posts: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.posts / self.seconds


def _timed(fn, n: int, name: str, repeats: int = 2) -> Rate:
    fn()  # warm-up: allocator, oneDNN kernels, quantised weights
    best = min(_once(fn) for _ in range(repeats))
    return Rate(name, n, best)


def _once(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def text_ceiling(head: ScoringHead, texts: list[str], precision: str, batch: int = 64, bucket: int = 0) -> Rate:
    """Encoder alone (tokenise + forward), batches of `batch` in stream order."""
    eng = InferenceEngine(head, precision=precision, bucket_size=bucket)

    def run() -> None:
        for i in range(0, len(texts), batch):
            chunk = texts[i : i + batch]
            eng.encode(chunk, tokens=eng.tokenize(chunk))

    label = f"text {precision} b{batch}" + (f" bucket{bucket}" if bucket else "")
    return _timed(run, len(texts), label)


def text_single(head: ScoringHead, texts: list[str]) -> Rate:
    eng = InferenceEngine(head, precision="fp32")
    return _timed(lambda: [eng.encode([t]) for t in texts], len(texts), "text fp32 one post at a time", 1)


def image_ceiling(paths: list[Path], precision: str, batch: int = 32) -> Rate:
    from models.image_encoder import ImageEncoder

    enc = ImageEncoder().eval()
    imgs = [Image.open(p).convert("RGB") for p in paths]
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)

    @torch.inference_mode()
    def run() -> None:
        with ctx:
            for i in range(0, len(imgs), batch):
                enc.encode(torch.stack([enc.preprocess(im) for im in imgs[i : i + batch]]))

    return _timed(run, len(imgs), f"image {precision} b{batch}", 1)
