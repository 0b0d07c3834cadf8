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
    eng = InferenceEngine(head, precision=precision, bucket_call_tokens=bucket)

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


def text_ceiling_per_core(model: str, texts: list[str], precision: str, procs: int, bucket: int = 32,
                          batch: int = 64, seconds: float = 8.0, compile: bool = False) -> Rate:
    """`procs` encoder-only processes of one torch thread each, timed over the same window.

    On small CPUs one single-threaded process per core beats one process with every core (no
    OpenMP hand-offs on tweet-sized matrices), so this is part of the ceiling the scorer is
    measured against. Each child warms up, waits for a shared start time, then encodes batches
    for `seconds`; the rates add up.
    """
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts, f)
    # after every child has loaded the model, compiled it (all at once on shared cores) and warmed up
    start_at = time.time() + 25.0 + (40.0 * procs if compile else 0.0)
    cmd = [sys.executable, "-m", "services.bench.encoders", model, precision, f.name, str(bucket), str(batch),
           str(start_at), str(seconds), "1" if compile else "0"]
    kids = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    rates = [json.loads(k.communicate(timeout=300)[0].strip().splitlines()[-1]) for k in kids]
    Path(f.name).unlink(missing_ok=True)
    late = [r for r in rates if r["late_s"] > 0]
    if late:
        raise RuntimeError(f"{len(late)} ceiling children were not ready at the start time; machine overloaded?")
    return Rate(f"text {precision}{' compiled' if compile else ''} b{batch} bucket{bucket} x{procs} processes",
                sum(r["posts"] for r in rates),
                max(r["seconds"] for r in rates))


def _child(model: str, precision: str, texts_path: str, bucket: str, batch: str, start_at: str, seconds: str,
           compile: str = "0") -> None:
    import json

    from models.registry import load_head
    from pipelines.allocator import keep_freed_memory

    keep_freed_memory()  # as the scorer does: the ceiling gets the same allocator
    torch.set_num_threads(1)
    texts = json.loads(Path(texts_path).read_text())
    eng = InferenceEngine(load_head(model), precision=precision, bucket_call_tokens=int(bucket), compile=compile == "1")
    b = int(batch)
    chunks = [texts[i : i + b] for i in range(0, len(texts), b)]
    for c in chunks[:4]:  # warm-up
        eng.encode(c, tokens=eng.tokenize(c))
    late = time.time() - float(start_at)
    time.sleep(max(0.0, -late))
    t0, n, i = time.perf_counter(), 0, 0
    while time.perf_counter() - t0 < float(seconds):
        c = chunks[i % len(chunks)]
        eng.encode(c, tokens=eng.tokenize(c))
        n, i = n + len(c), i + 1
    print(json.dumps({"posts": n, "seconds": time.perf_counter() - t0, "late_s": max(0.0, late)}))


if __name__ == "__main__":
    import sys

    _child(*sys.argv[1:])
