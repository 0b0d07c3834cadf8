"""The reconciler: accepted posts that the broker never got, or lost, are published again.

Why: ingest acknowledges a post once it is in the ledger (`services.ingest.ledger`). Two things
can then keep it from ever being scored: the publish failed (broker down), or the broker forgot
it (an in-memory broker restarted, a partition was lost). Each pass, under an advisory lock so
replicas never double up:

1. ledger posts never published and older than `reconcile_grace_s` are published;
2. published posts not yet stored and older than the grace are checked against the broker: the
   record at their recorded (partition, offset) must still be there and carry their id; where it
   is not (the offset is past the partition's end or before its start, or another post sits
   there) they are published again, at most `reconcile_max_republish` times each;
3. stored posts whose watch memberships the trends worker never folded, although it has folded
   batches since (its `trend_watermarks` moved more than the grace after they were stored), lost
   their `posts.scored` message in the broker: they are published to `posts.raw` again and the
   scorer, finding them stored, repeats their stored prediction on `posts.scored`;
4. stored posts older than the dedup window are pruned from the ledger.

A post re-published while a copy still waits in the broker is scored once: the sinks are
idempotent by post id and the eta term folds each stored post once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import Engine, text

from pipelines.advisory_locks import Lock
from services.config import Settings
from services.ingest import ledger
from services.ingest.gate import IngestGate

log = logging.getLogger("voxpop.reconcile")

_UNPUBLISHED = text("""
SELECT post_id, payload FROM ingest_ledger
WHERE published_at IS NULL AND accepted_at < :before ORDER BY accepted_at LIMIT :n
""")
_UNSTORED = text("""
SELECT l.post_id, l.payload, l.kafka_partition, l.kafka_offset FROM ingest_ledger l
LEFT JOIN posts p ON p.id = l.post_id
WHERE p.id IS NULL AND l.published_at IS NOT NULL AND l.published_at < :before AND l.republished < :max
ORDER BY l.published_at LIMIT :n
""")
_UNFOLDED = text("""
SELECT DISTINCT l.post_id, l.payload FROM ingest_ledger l
JOIN posts p ON p.id = l.post_id
JOIN post_watches pw ON pw.post_id = p.id
LEFT JOIN trend_members tm ON tm.watch_id = pw.watch_id AND tm.post_id = pw.post_id
WHERE tm.post_id IS NULL AND l.republished < :max AND l.published_at < :before
  AND p.stored_at < (SELECT max(updated_at) FROM trend_watermarks WHERE source = :source)
                    - make_interval(secs => :grace)
LIMIT :n
""")
_REPUBLISHED = text("""
UPDATE ingest_ledger SET republished = republished + 1, last_reason = u.reason
FROM unnest(CAST(:post_id AS text[]), CAST(:reason AS text[])) AS u(post_id, reason)
WHERE ingest_ledger.post_id = u.post_id
""")


@dataclass
class PassStats:
    published: int = 0  # never published before
    checked: int = 0  # published, not yet stored, looked up in the broker
    republished: int = 0  # the broker had lost them
    unfolded: int = 0  # stored, but their posts.scored message never reached the trends worker
    pruned: int = 0
    skipped: bool = False  # another reconciler held the lock


@dataclass
class _Candidate:
    post_id: str
    payload: str
    partition: int
    offset: int


class Reconciler:
    def __init__(self, settings: Settings, gate: IngestGate, bootstrap: str) -> None:
        self.s, self.gate, self.bootstrap = settings, gate, bootstrap
        self.db: Engine = gate.db

    def run_once(self) -> PassStats:
        stats = PassStats()
        with self.db.connect() as lock_conn:
            if not lock_conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": int(Lock.RECONCILER)}).scalar():
                stats.skipped = True
                return stats
            try:
                before = datetime.now(UTC) - timedelta(seconds=self.s.reconcile_grace_s)
                stats.published = self._publish_unpublished(before)
                stats.checked, stats.republished = self._republish_lost(before)
                stats.unfolded = self._republish_unfolded(before)
                stats.pruned = ledger.prune(self.db, datetime.now(UTC) - timedelta(seconds=self.s.dedup_ttl_s))
            finally:
                lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": int(Lock.RECONCILER)})
                lock_conn.commit()
        if stats.published or stats.republished or stats.unfolded:
            log.warning(
                "reconciler: published %d accepted posts the broker never took, re-published %d it lost "
                "and %d stored ones whose posts.scored message it lost",
                stats.published,
                stats.republished,
                stats.unfolded,
            )
        return stats

    def _publish_unpublished(self, before: datetime) -> int:
        with self.db.connect() as conn:
            rows = conn.execute(_UNPUBLISHED, {"before": before, "n": self.s.reconcile_batch}).all()
        if not rows:
            return 0
        payloads = {r.post_id: r.payload for r in rows}
        return self.gate.publish(payloads, {pid: _author(p) for pid, p in payloads.items()})

    def _republish_lost(self, before: datetime) -> tuple[int, int]:
        with self.db.connect() as conn:
            rows = conn.execute(
                _UNSTORED, {"before": before, "max": self.s.reconcile_max_republish, "n": self.s.reconcile_batch}
            ).all()
        if not rows:
            return 0, 0
        cands = [_Candidate(r.post_id, r.payload, r.kafka_partition, r.kafka_offset) for r in rows]
        lost = self._lost_in_broker(cands)
        if lost:
            payloads = {c.post_id: c.payload for c, _ in lost}
            self.gate.publish(payloads, {pid: _author(p) for pid, p in payloads.items()})
            with self.db.begin() as conn:
                conn.execute(_REPUBLISHED, {"post_id": [c.post_id for c, _ in lost], "reason": [r for _, r in lost]})
        return len(cands), len(lost)

    def _republish_unfolded(self, before: datetime) -> int:
        """Once per grace: a post just sent round again is not sent again while its re-score is on the way."""
        with self.db.connect() as conn:
            rows = conn.execute(
                _UNFOLDED,
                {
                    "max": self.s.reconcile_max_republish,
                    "source": self.s.topic_scored,
                    "before": before,
                    "grace": self.s.reconcile_grace_s,
                    "n": self.s.reconcile_batch,
                },
            ).all()
        if not rows:
            return 0
        payloads = {r.post_id: r.payload for r in rows}
        self.gate.publish(payloads, {pid: _author(p) for pid, p in payloads.items()})
        with self.db.begin() as conn:
            conn.execute(
                _REPUBLISHED,
                {
                    "post_id": list(payloads),
                    "reason": [f"stored, but never folded into trends from {self.s.topic_scored}"] * len(payloads),
                },
            )
        return len(payloads)

    def _lost_in_broker(self, cands: list[_Candidate]) -> list[tuple[_Candidate, str]]:
        """The candidates whose record is no longer where the ledger says it landed, with why."""
        topic = self.s.topic_raw
        by_tp: dict[TopicPartition, list[_Candidate]] = defaultdict(list)
        for c in cands:
            by_tp[TopicPartition(topic, c.partition)].append(c)
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, consumer_timeout_ms=5000
        )
        lost: list[tuple[_Candidate, str]] = []
        try:
            known = consumer.partitions_for_topic(topic) or set()
            tps = [tp for tp in by_tp if tp.partition in known]
            lost += [
                (c, f"partition {tp.partition} of {topic} no longer exists")
                for tp, cs in by_tp.items()
                if tp.partition not in known
                for c in cs
            ]
            if not tps:
                return lost
            consumer.assign(tps)
            start = consumer.beginning_offsets(tps)
            for tp in tps:
                inside = []
                for c in by_tp[tp]:
                    if c.offset < start[tp]:
                        lost.append((c, f"offset {c.offset} was deleted from {tp.topic}/{tp.partition}"))
                    else:
                        inside.append(c)
                lost += self._check_records(consumer, tp, inside)
        finally:
            consumer.close()
        return lost

    def _check_records(
        self, consumer: KafkaConsumer, tp: TopicPartition, cands: list[_Candidate]
    ) -> list[tuple[_Candidate, str]]:
        """Read the partition over the candidates' offsets and compare each record's post id.

        The end is found by reading, not from ListOffsets: Tansu 0.6 answers "latest" with the
        number of record batches, not records, so its end offset is useless here.
        """
        if not cands:
            return []
        want = {c.offset: c for c in cands}
        lo, hi = min(want), max(want)
        found: dict[int, str | None] = {}
        consumer.seek(tp, lo)
        at_end = False
        while consumer.position(tp) <= hi:
            batch = consumer.poll(timeout_ms=2000).get(tp, [])
            if not batch:
                at_end = not consumer.poll(timeout_ms=1000).get(tp, [])
                break
            for rec in batch:
                if rec.offset in want:
                    found[rec.offset] = _post_id(rec.value)
        reached = consumer.position(tp)
        out = []
        for off, c in want.items():
            if off in found:
                if found[off] != c.post_id:
                    out.append((c, f"{tp.topic}/{tp.partition}@{off} now holds another post (broker reset)"))
            elif at_end and off >= reached:
                out.append((c, f"{tp.topic}/{tp.partition}@{off} is past the partition's end ({reached})"))
        return out


def _post_id(value: bytes | None) -> str | None:
    try:
        post_id: str | None = json.loads(value or b"{}").get("id")
    except (ValueError, AttributeError):
        return None
    return post_id


def _author(payload: str) -> str:
    """The message key of a ledger post: its author id (what `posts.raw` is keyed by)."""
    author_id: str = json.loads(payload)["author"]["id"]
    return author_id


def run_reconciler(
    settings: Settings, gate: IngestGate, bootstrap: str, stop: threading.Event, once: bool = False
) -> PassStats:
    """`voxpop reconcile`: a pass every `reconcile_interval_s` until stopped (or one pass)."""
    rec = Reconciler(settings, gate, bootstrap)
    while True:
        try:
            stats = rec.run_once()
        except Exception:  # an outage of PostgreSQL or the broker: next pass
            log.exception("reconciler pass failed; retrying in %.0f s", settings.reconcile_interval_s)
            stats = PassStats()
        if once or stop.wait(settings.reconcile_interval_s):
            return stats
