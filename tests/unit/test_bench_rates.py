"""The bench's steady-state throughput: posts between two commit instants, start and drain left out."""

from __future__ import annotations

import numpy as np

from services.bench.stream import rate_between


def _commits(times: list[float], size: int) -> np.ndarray:
    """Every post of a batch shares its commit's timestamp, as stored_at does."""
    return np.repeat(np.array(times, dtype=np.float64), size)


def test_steady_rate_ignores_a_slow_start_and_a_slow_drain() -> None:
    # 20 batches of 100 posts (the bench runs >= 16 per scorer): a 5 s stall before the second commit
    # (group join), a 5 s drain before the last, one commit per second in between -> 100 posts/s
    t = _commits([0.0, *(4.0 + k for k in range(1, 19)), 27.0], 100)
    assert rate_between(t, 0.1, 0.9) == 100.0
    whole = rate_between(t, 0.0, 1.0)  # first commit to last: the stalls drag it down
    assert whole is not None and whole < 75  # 1,900 posts after the first commit over 27 s


def test_rate_counts_posts_after_the_first_commit_only_and_handles_degenerate_input() -> None:
    t = _commits([0.0, 2.0], 50)
    assert rate_between(t, 0.0, 1.0) == 25.0  # the first commit's posts opened the window
    assert rate_between(np.array([3.0]), 0.0, 1.0) is None
    assert rate_between(_commits([1.0], 10), 0.1, 0.9) is None  # a single commit: no interval


def test_only_precisions_not_slower_than_fp32_get_the_long_runs() -> None:
    from services.bench.run import worth_running

    # an AVX2-only CPU: bf16 emulated, ~10x slower; int8 faster
    run, skipped = worth_running({"fp32": 60.0, "bf16": 6.1, "int8": 85.0})
    assert run == ["fp32", "int8"]
    assert list(skipped) == ["bf16"] and "6.1" in skipped["bf16"] and "60.0" in skipped["bf16"]
    # fp32 is the reference and always runs, even where everything else is faster
    assert worth_running({"fp32": 50.0, "bf16": 120.0, "int8": 110.0}) == (["fp32", "bf16", "int8"], {})
