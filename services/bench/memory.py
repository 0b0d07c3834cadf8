"""The scorer's memory under ragged batches: does it level off, and what do fixed shapes cost?

A live scorer's batches vary in size (what arrived within `scorer_max_wait_ms`) and in width
(the longest post of each length bucket). oneDNN compiles and caches a kernel per input shape it
meets, so memory grows with every new shape until the cache is full. Each arm runs in a fresh
process (its own allocator and kernel cache), single-threaded as a scorer is, over the same
posts in the same ragged batches; one with `fixed_shapes`, one without.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from pipelines.scoring import InferenceEngine

log = logging.getLogger("voxpop.bench")

#: Resident memory is read this many times over a run (the first reading after the warm-up).
READINGS = 8


def ragged_batches(n_posts: int, max_batch: int, seed: int = 0) -> list[tuple[int, int]]:
    """[(start, end)] over the stream: sizes drawn uniformly from 1..max_batch, as a live stream's."""
    rng = np.random.default_rng(seed)
    out, start = [], 0
    while start < n_posts:
        end = min(n_posts, start + int(rng.integers(1, max_batch + 1)))
        out.append((start, end))
        start = end
    return out


def shape_memory(
    model: str, texts: list[str], precision: str, fixed_shapes: bool, bucket: int, max_batch: int = 64
) -> dict[str, Any]:
    """One arm in a fresh single-threaded process: RSS readings (MB), posts/s, shapes met."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts, f)
    try:
        cmd = [sys.executable, "-m", "services.bench.memory", model, precision, f.name, str(bucket), str(max_batch)]
        done = subprocess.run([*cmd, "1" if fixed_shapes else "0"], capture_output=True, text=True, timeout=3600)
    finally:
        Path(f.name).unlink(missing_ok=True)
    if done.returncode:
        raise RuntimeError(f"the memory child failed ({done.returncode}): {done.stderr[-2000:]}")
    arm: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return arm


def _child(model: str, precision: str, texts_path: str, bucket: str, max_batch: str, fixed: str) -> None:
    from models.registry import load_head
    from pipelines.allocator import keep_freed_memory

    keep_freed_memory()  # the scorer's allocator
    torch.set_num_threads(1)
    texts = json.loads(Path(texts_path).read_text())
    eng = InferenceEngine(
        load_head(model), precision=precision, bucket_call_tokens=int(bucket), fixed_shapes=fixed == "1"
    )
    batches = ragged_batches(len(texts), int(max_batch))
    warm = len(batches) // 20
    me, posts = psutil.Process(), 0
    shapes: set[tuple[int, ...]] = set()
    rss: list[float] = []
    every = max(1, (len(batches) - warm) // READINGS)
    t0 = 0.0
    for i, (a, b) in enumerate(batches):
        if i == warm:
            t0, rss = time.perf_counter(), [me.memory_info().rss / 2**20]
        calls = eng.tokenize(texts[a:b])
        shapes.update(tuple(batch["input_ids"].shape) for _, batch in calls)
        eng.encode(texts[a:b], tokens=calls)
        if i >= warm:
            posts += b - a
            if (i - warm + 1) % every == 0:
                rss.append(me.memory_info().rss / 2**20)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "rss_mb": [round(r, 1) for r in rss],
                "posts_per_s": round(posts / seconds, 1),
                "batches": len(batches) - warm,
                "shapes": len(shapes),
                "precision": eng.precision,
            }
        )
    )


if __name__ == "__main__":
    _child(*sys.argv[1:])
