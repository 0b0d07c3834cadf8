"""`voxpop up` runs one scorer per core pinned to its own core; otherwise the OS schedules them."""

from __future__ import annotations

import os

import pytest

from services.config import Settings
from services.supervisor import one_core_each, plan_children

CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


@pytest.mark.skipif(len(CORES) < 2, reason="pinning one scorer per core needs two cores or more")
def test_one_scorer_per_core_each_pinned_to_its_own(monkeypatch) -> None:
    kids = [
        k for k in plan_children(Settings(scorer_processes=len(CORES)), "jetstream", 1.0) if k.name.startswith("scorer")
    ]
    pins = []
    for k in kids:  # read back the way the child will: VOXPOP_ env into Settings
        monkeypatch.setenv("VOXPOP_SCORER_CPUS", k.env["VOXPOP_SCORER_CPUS"])
        pins.append(Settings().scorer_cpus)
    assert sorted(c for p in pins for c in p) == CORES and all(len(p) == 1 for p in pins)
    assert all(k.env["VOXPOP_SCORER_THREADS"] == "1" for k in kids)


def test_no_pins_unless_there_is_exactly_one_scorer_per_core() -> None:
    assert one_core_each(1) == [{}]
    assert one_core_each(len(CORES) + 1) == [{}] * (len(CORES) + 1)
    (single,) = [k for k in plan_children(Settings(scorer_processes=1), "jetstream", 1.0) if k.name == "scorer"]
    assert "VOXPOP_SCORER_CPUS" not in single.env


def test_a_scorer_told_to_pin_to_a_missing_core_says_which_cores_it_has() -> None:
    from services.scorer.worker import Scorer

    with pytest.raises(ValueError, match="usable here"):
        Scorer(Settings(scorer_cpus=[max(CORES, default=0) + 64]), "postgresql://unused", None, None)


def test_by_default_voxpop_up_runs_one_single_threaded_scorer_per_core() -> None:
    import os

    cores = min(os.cpu_count() or 1, Settings().topic_partitions)
    kids = [
        k
        for k in plan_children(Settings(scorer_processes=None, scorer_threads=None), "jetstream", 1.0)
        if k.name.startswith("scorer")
    ]
    assert len(kids) == cores
    if cores > 1:
        assert {k.env["VOXPOP_SCORER_THREADS"] for k in kids} == {"1"}
