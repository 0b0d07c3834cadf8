"""The scorer's intake: when a batch closes, what it holds, and that nothing polled is lost."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from services.scorer.worker import Intake, Item, Prepared


def _part(*offsets: int, partition: int = 0, post_ids: tuple[str, ...] | None = None) -> Prepared:
    recs = [SimpleNamespace(topic="t", partition=partition, offset=o) for o in offsets]
    ids = post_ids or tuple(f"p{partition}-{o}" for o in offsets)
    return Prepared(recs, [Item(rec=r, post=SimpleNamespace(id=i)) for r, i in zip(recs, ids, strict=True)])


def test_nothing_waiting_takes_nothing() -> None:
    assert Intake(8, 0.05).take(timeout=0.01) is None


def test_a_full_batch_closes_at_once_and_frees_room_for_the_poller() -> None:
    intake = Intake(4, max_wait_s=60)
    intake.put(_part(0, 1))
    assert intake.room() == 2
    intake.put(_part(2, 3))
    assert intake.room() == 0
    batch = intake.take(timeout=1)  # full: no waiting for the 60 s max wait
    assert batch is not None and [r.offset for r in batch.records] == [0, 1, 2, 3]
    assert intake.room() == 4


def test_a_partial_batch_waits_for_max_wait_after_its_first_record() -> None:
    intake = Intake(64, max_wait_s=0.2)
    intake.put(_part(0))
    assert intake.take(timeout=0.01) is None  # too young: more may come
    batch = intake.take(timeout=5)
    assert batch is not None and len(batch.records) == 1


def test_records_that_arrive_while_the_model_is_busy_ride_in_the_next_batch() -> None:
    """Late binding: whatever waits when the model is free goes in, up to max_batch."""
    intake = Intake(64, max_wait_s=0.05)
    intake.put(_part(0, 1))
    first = intake.take(timeout=5)
    for o in range(2, 7):  # the model is busy with `first`; posts keep arriving
        intake.put(_part(o))
    time.sleep(0.06)
    second = intake.take(timeout=0.01)
    assert [r.offset for r in first.records] == [0, 1]
    assert second is not None and [r.offset for r in second.records] == [2, 3, 4, 5, 6]


def test_merge_orders_by_partition_and_offset_and_scores_a_post_once() -> None:
    intake = Intake(64, max_wait_s=0.0)
    intake.put(_part(5, 6, partition=1))
    intake.put(_part(3, 4, partition=0, post_ids=("a", "b")))
    intake.put(_part(7, partition=1, post_ids=("a",)))  # the same post polled again
    batch = intake.take(timeout=1)
    assert [(r.partition, r.offset) for r in batch.records] == [(0, 3), (0, 4), (1, 5), (1, 6), (1, 7)]
    assert [it.post.id for it in batch.items] == ["a", "b", "p1-5", "p1-6"]


def test_after_the_poller_ends_what_waits_is_still_taken_then_ended() -> None:
    intake = Intake(64, max_wait_s=60)
    intake.put(_part(0))
    intake.end()
    assert not intake.ended
    assert intake.take(timeout=1) is not None  # no 60 s wait once nothing more can come
    assert intake.ended and intake.take(timeout=0.01) is None


def test_a_waiting_poller_wakes_when_the_model_takes_the_batch() -> None:
    intake = Intake(2, max_wait_s=0.0)
    intake.put(_part(0, 1))
    woke = threading.Event()

    def poller() -> None:
        intake.wait_for_room(timeout=10)
        woke.set()

    t = threading.Thread(target=poller)
    t.start()
    assert not woke.wait(0.05)
    intake.take(timeout=1)
    assert woke.wait(5)
    t.join()
