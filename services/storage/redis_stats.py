"""Cross-process metrics kept in Redis, so `/metrics` on any API replica sees every worker's numbers.

Counters are plain ``INCRBY`` keys (``KEYS.stats(name)``); histograms are hashes of cumulative
bucket counts (``stats_hist(name)``), shaped so Prometheus histograms can be rebuilt exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.storage.redis_keys import stats_hist

BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LATENCY_MS_BUCKETS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
HISTOGRAMS: dict[str, tuple[float, ...]] = {
    "scorer_batch_size": BATCH_SIZE_BUCKETS,
    "scorer_batch_ms": LATENCY_MS_BUCKETS,
}


def observe(pipe: Any, name: str, value: float, buckets: Sequence[float] | None = None) -> None:
    """Queue one observation on a Redis pipeline (cumulative buckets, like Prometheus)."""
    key = stats_hist(name)
    for b in buckets or HISTOGRAMS[name]:
        if value <= b:
            pipe.hincrby(key, f"le:{b:g}", 1)
    pipe.hincrbyfloat(key, "sum", float(value))
    pipe.hincrby(key, "count", 1)


def as_text(v: bytes | str) -> str:
    """A Redis reply as text. Our clients return bytes (no `decode_responses`); redis-py types
    every reply as `bytes | str`, so a `str` passes through unchanged."""
    return v.decode() if isinstance(v, bytes) else v


def read_histogram(
    raw: dict[bytes | str, bytes | str], buckets: Sequence[float]
) -> tuple[list[tuple[str, int]], float, int]:
    """Redis hash -> ([(le, cumulative count)...incl. +Inf], sum, count)."""
    vals = {as_text(k): as_text(v) for k, v in raw.items()}
    count = int(vals.get("count", 0))
    out = [(str(float(b)), int(vals.get(f"le:{b:g}", 0))) for b in buckets]
    out.append(("+Inf", count))
    return out, float(vals.get("sum", 0.0)), count
