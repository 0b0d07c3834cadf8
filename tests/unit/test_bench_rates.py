"""The bench's steady-state throughput: posts between two commit instants, start and drain left out."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_a_report_of_a_run_whose_phase_failed_keeps_what_finished_and_says_why(tmp_path) -> None:
    from services.bench.report import render

    res = {
        "date": "2026-12-03T12:00:00+00:00",
        "command": "voxpop bench --quick",
        "model": "production@x",
        "machine": {"cpu": "test CPU", "cores": "2", "isa": "avx2", "python": "3.11", "torch": "2.13"},
        "encoder_ceiling_posts_per_s": {"fp32": 100.0},
        "phases": {
            "encoders": {"status": "ok", "seconds": 1.0},
            "accuracy": {"status": "failed", "why": "RuntimeError: out of memory", "seconds": 2.0},
            "saturation": {"status": "skipped", "why": "needs accuracy"},
        },
    }
    render(res, tmp_path)
    doc = (tmp_path / "performance.md").read_text()
    assert "test CPU" in doc and "| accuracy | failed | RuntimeError: out of memory | 2.0 |" in doc
    assert "| saturation | skipped | needs accuracy | - |" in doc
    assert doc.count("Not measured in this run") == 10  # every section but the (absent) compiled one
    assert "Sections of phases this command did not re-run" in doc and "| encoders | - | - |" in doc


def test_a_re_run_phase_says_where_the_others_were_measured(tmp_path) -> None:
    from services.bench.report import render

    res = {
        "date": "2026-12-04T12:00:00+00:00",
        "command": "voxpop bench --only memory",
        "model": "production@x",
        "machine": {"cpu": "new CPU", "cores": "2", "isa": "avx2", "python": "3.11", "torch": "2.13"},
        "previous_run": {"date": "2026-11-24T00:00:00+00:00", "cpu": "old CPU", "command": "voxpop bench"},
        "phases": {"memory": {"status": "ok", "seconds": 1.0, "date": "2026-12-04T12:00:00+00:00", "cpu": "new CPU"}},
    }
    render(res, tmp_path)
    doc = (tmp_path / "performance.md").read_text()
    assert "`voxpop bench`, 2026-11-24T00:00:00+00:00 on old CPU" in doc
    assert "| memory |" not in doc.split("## ")[1]  # the re-run phase is this run's, not listed as earlier


def test_per_core_ceiling_children_start_together_after_a_readiness_handshake() -> None:
    from pipelines.datasets.registry import available
    from services.bench.encoders import text_ceiling_per_core
    from services.config import Settings

    s = Settings()
    if "airline" not in available(s.data_dir):
        pytest.skip(f"the airline tweets are not under {s.data_dir}")
    from services.bench.stream import airline_posts

    texts = [p.post.text for p in airline_posts(s.data_dir)[:600]]
    rate = text_ceiling_per_core(s.scorer_model, texts, "fp32", procs=2, batch=32, seconds=1.0)
    assert rate.posts > 0 and rate.seconds >= 1.0 and "x2 processes" in rate.name


def test_a_busy_neighbour_spins_while_it_lasts_and_is_gone_after() -> None:
    import psutil

    from services.bench.stream import busy_neighbour

    me = psutil.Process()
    before = {p.pid for p in me.children()}
    with busy_neighbour(1):
        spinning = [p for p in me.children() if p.pid not in before]
        assert len(spinning) == 1
        spinning[0].cpu_percent(None)
        import time

        time.sleep(0.5)
        assert spinning[0].cpu_percent(None) > 20, "the neighbour must keep a core busy"
    assert not psutil.pid_exists(spinning[0].pid) or spinning[0].status() == psutil.STATUS_ZOMBIE


def test_the_co_tenancy_section_reports_each_arm_against_its_quiet_runs(tmp_path) -> None:
    from services.bench.report import render

    res = {
        "phases": {"cotenancy": {"status": "ok", "seconds": 60.0}},
        "cotenancy": {
            "precision": "fp32",
            "neighbours": 1,
            "arms": {
                "1 thread": {
                    "threads": 1,
                    "quiet_posts_per_s": [50.0, 52.0],
                    "busy_posts_per_s": [47.0, 45.0],
                    "busy_over_quiet": 0.902,
                }
            },
        },
    }
    render(res, tmp_path)
    doc = (tmp_path / "performance.md").read_text()
    assert "| 1 thread | 50.0, 52.0 | 47.0, 45.0 | 0.902 |" in doc
