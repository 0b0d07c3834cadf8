"""Trends without a global lock, on real PostgreSQL and the real airline stream: a batch waits
only for its own partitions, a busy merger is skipped, and two workers folding concurrently (with
a partition handed over mid-batch) still close every hourly window exactly as a recount."""

from __future__ import annotations

import itertools
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import text

from pipelines.advisory_locks import Lock
from pipelines.trends.airline import airline_stream
from pipelines.trends.processor import TrendConfig, TrendProcessor
from pipelines.trends.recount import closed_through, closed_windows, hourly_mismatches
from services.storage.db import engine_for, migrate
from tests.conftest import dataset_path
from tests.integration.trendkit import clean, store_canonical
from tests.stack import get_test_endpoints

pytestmark = pytest.mark.integration
PARTITIONS = 4


@pytest.fixture
def engine():
    ep = get_test_endpoints()
    migrate(ep.database_url)
    eng = engine_for(ep.database_url)
    clean(eng)
    return eng


def _airline(n: int):
    return list(itertools.islice(airline_stream(dataset_path("airline-tweets") / "airline_tweets_clean.csv"), n))


def _part(p) -> int:  # as the broker's default partitioner does with the scorer's key (the author)
    return zlib.crc32(p.author_id.encode()) % PARTITIONS


def test_a_batch_waits_only_for_its_own_partition_and_a_busy_merger_is_skipped(engine) -> None:
    posts = _airline(400)
    proc = TrendProcessor(engine, TrendConfig(source="t-locks", expected_partitions=1, lateness_s=60))
    proc.process([(0, posts[0]), (1, posts[1])])  # both partitions known (a first batch waits for a merge)
    other = [(1, p) for p in posts[2:200]]
    with engine.connect() as holder:
        holder.begin()
        holder.execute(text("SELECT pg_advisory_xact_lock(:k, 0)"), {"k": int(Lock.TRENDS_BATCH)})
        holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(Lock.TRENDS_MERGE)})
        with ThreadPoolExecutor(1) as pool:  # partition 1 while partition 0 and the merge are held
            res = pool.submit(proc.process, other).result(timeout=30)
        assert res.new_members > 0 and not res.closed, "the merge must be skipped, not waited for"
        with engine.connect() as c:
            parts = c.execute(text("SELECT count(*) FROM trend_window_parts")).scalar_one()
        assert parts > 0, "partition 1 closes its own parts without the merge"
        blocked = threading.Event()

        def own_partition() -> None:
            proc.process([(0, p) for p in posts[200:]])
            blocked.set()

        t = threading.Thread(target=own_partition)
        t.start()
        assert not blocked.wait(1.5), "a batch of partition 0 must wait for partition 0's holder"
        holder.rollback()
    t.join(30)
    assert blocked.is_set()
    merged = proc.merge()
    assert closed_windows(engine, "1h") and closed_through(engine, "t-locks") is not None
    assert merged.watermark is not None


def test_two_workers_folding_concurrently_close_every_window_as_a_recount(engine) -> None:
    posts = _airline(3000)
    store_canonical(engine, posts)
    cfg = TrendConfig(source="t-scale", expected_partitions=PARTITIONS, lateness_s=300)
    a, b = TrendProcessor(engine, cfg), TrendProcessor(engine, cfg)
    by_part: dict[int, list] = {i: [] for i in range(PARTITIONS)}
    for p in posts:
        by_part[_part(p)].append((_part(p), p))

    # worker a owns partitions 0-1, b owns 2-3; then partition 1 moves to b (a rebalance): b reads
    # it again from the last committed offset, one batch before a's batch in flight, which a
    # still finishes while b folds the same posts and goes on with the rest of partition 1
    def batches(i: int, lo: float, hi: float) -> list[list]:
        rows = by_part[i][int(len(by_part[i]) * lo) : int(len(by_part[i]) * hi)]
        return [rows[k : k + 150] for k in range(0, len(rows), 150)]

    first_1 = batches(1, 0, 0.5)
    in_flight = first_1.pop()
    phase1 = ([*batches(0, 0, 1), *first_1], [*batches(2, 0, 1), *batches(3, 0, 1)])
    phase2 = ([in_flight], [first_1[-1], in_flight, *batches(1, 0.5, 1)])

    def run(proc: TrendProcessor, work: list[list]) -> int:
        return sum(proc.process(batch).new_members for batch in work)

    new = 0
    with ThreadPoolExecutor(2) as pool:
        for work_a, work_b in (phase1, phase2):
            fa, fb = pool.submit(run, a, work_a), pool.submit(run, b, work_b)
            new += fa.result(timeout=300) + fb.result(timeout=300)
    assert new == sum(len(set(p.watches)) for p in posts), "every membership folded exactly once"
    end = max(p.created_at for p in posts)
    a.advance(end)
    checked, diffs = hourly_mismatches(engine, end)
    assert checked > 100 and not diffs, diffs[:20]
    with engine.connect() as c:
        assert (
            c.execute(text("SELECT count(*) FROM trend_window_parts WHERE window_end <= :e"), {"e": end}).scalar() == 0
        )
        assert c.execute(text("SELECT coalesce(sum(late_posts), 0) FROM trend_windows")).scalar_one() == 0


def test_retention_drops_minute_windows_and_old_members_and_keeps_the_rollups(engine) -> None:
    posts = _airline(1500)  # about two days of event time
    cfg = TrendConfig(
        source="t-retention", expected_partitions=1, retention_days={"1m": 1.25, "5m": 1.25}, members_retention_days=1.5
    )
    proc = TrendProcessor(engine, cfg)
    for i in range(0, len(posts), 300):
        proc.process([(0, p) for p in posts[i : i + 300]])
    end = max(p.created_at for p in posts) + timedelta(days=1)
    proc.advance(end)
    hours, days = closed_windows(engine, "1h"), closed_windows(engine, "1d")
    minutes = closed_windows(engine, "1m")
    deleted = proc.prune()
    assert deleted["1m"] > 0 and deleted["members"] > 0
    left = closed_windows(engine, "1m")
    assert left and min(k[1] for k in left) >= end - timedelta(days=1.25) > min(k[1] for k in minutes)
    assert closed_windows(engine, "1h") == hours and closed_windows(engine, "1d") == days
    assert sum(w["n_posts"] for w in days.values()) == sum(w["n_posts"] for w in hours.values())
    with engine.connect() as c:
        oldest = c.execute(text("SELECT min(created_at) FROM trend_members")).scalar_one()
    # never closer than twice the longest window (1d) plus lateness: an open day still needs its posts
    assert oldest is None or oldest >= end - timedelta(days=2, seconds=600)


def test_a_partition_first_seen_after_a_merge_finds_its_posts_late_not_merged_over(engine) -> None:
    """A partition reporting for the first time after windows were merged (a scorer's new key
    space, or one that was idle) must not close parts of merged windows: those would replace the
    merged counts. Its posts there are late, counted in ``late_posts``, as any late post."""
    from pipelines.trends.windows import parse_specs

    posts = sorted(_airline(600), key=lambda p: p.created_at)
    cfg = TrendConfig(source="t-first", expected_partitions=1, lateness_s=0, specs=parse_specs(["1h"]))
    proc = TrendProcessor(engine, cfg)
    early, later = posts[:200], posts[200:]
    proc.process([(0, p) for p in later])  # partition 0 runs ahead and windows are merged
    merged_at = closed_through(engine, "t-first")
    before = closed_windows(engine, "1h")
    assert merged_at is not None and before
    res = proc.process([(1, p) for p in early])  # partition 1's first batch: all before the merge point
    assert res.new_members > 0
    after = closed_windows(engine, "1h")
    for k, w in before.items():
        assert after[k]["n_posts"] == w["n_posts"], f"window {k} was merged over"
    late = sum(w["late_posts"] for w in after.values())
    in_merged = sum(
        len(set(p.watches))
        for p in early
        if p.created_at < merged_at.replace(minute=0, second=0, microsecond=0)  # windows ended by the merge
    )
    assert late >= in_merged > 0
