"""Which offsets a scorer may commit when records finish out of order.

Why: an audio post waits for its transcript beside the stream while the text posts polled after
it are scored and stored. Kafka commits one offset per partition ("everything below is done"),
so committing the text posts' offsets would also mark the waiting audio post done, and a crash
would lose it. The ledger keeps, per partition, the offsets polled but not yet stored; a
partition's commit stops just below the lowest of them (at-least-once stays at-least-once).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata


class OffsetLedger:
    """Polled-but-unfinished offsets per partition; `committable()` says how far each may commit."""

    def __init__(self) -> None:
        self._open: dict[TopicPartition, set[int]] = defaultdict(set)
        self._top: dict[TopicPartition, int] = {}  # highest finished offset + 1
        self._committed: dict[TopicPartition, int] = {}

    def polled(self, records: list[ConsumerRecord]) -> None:
        for r in records:
            self._open[TopicPartition(r.topic, r.partition)].add(r.offset)

    def done(self, records: list[ConsumerRecord]) -> None:
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if tp not in self._open:  # polled before the partition was revoked: its new owner redoes it
                continue
            self._open[tp].discard(r.offset)
            self._top[tp] = max(self._top.get(tp, 0), r.offset + 1)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions this scorer lost: their new owner re-reads from the last commit."""
        for tp in partitions:
            self._open.pop(tp, None)
            self._top.pop(tp, None)
            self._committed.pop(tp, None)

    def waiting(self) -> int:
        return sum(len(v) for v in self._open.values())

    def committable(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Per partition, the new commit point (only those that moved)."""
        out = {}
        for tp, top in self._top.items():
            pending = self._open.get(tp)
            safe = min(min(pending), top) if pending else top
            if safe > self._committed.get(tp, -1):
                out[tp] = OffsetAndMetadata(safe, "", -1)
                self._committed[tp] = safe
        return out
