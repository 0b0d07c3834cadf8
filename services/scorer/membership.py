"""The scorer's membership of its consumer group, and the way out of a group that stops converging.

A consumer group can stop converging: a join that never completes leaves every member without
partitions, and the pipeline stops while every process looks healthy. Tansu 0.6.0 (the embedded
broker) does this deterministically: if a member leaves the group (LeaveGroup, sent by every
clean `KafkaConsumer.close()`) while another member is joining, the joining member never gets
partitions, and neither does any later member of that group id, until the broker restarts.
Minimal repro with plain kafka-python: consumer 1 subscribes and gets all partitions; consumer 2
subscribes and starts polling; consumer 1 closes -> consumer 2 polls forever with no assignment
(docs/reliability.md). A member that simply goes away (no LeaveGroup: kill -9, or a close that
skips it) is expired after `session_timeout_ms` and the group rebalances normally.

Two defences, both here:

* **Avoid the trigger**: `close()` skips LeaveGroup unless `kafka_leave_group_on_close` is set,
  so a stopped scorer's partitions move after the session timeout instead of at once. On Apache
  Kafka, where leaving is safe and faster, turn it on.
* **Detect and recover**: when this member has not been STABLE in its group for
  `scorer_join_timeout_s`, it moves the group to a new *epoch*: group id `<scorer_group>.e<N>`,
  created with the old group's committed offsets copied over (the new group is empty, so the
  broker accepts the commit), the epoch recorded in PostgreSQL (`consumer_group_epochs`) under
  an advisory lock so concurrent detectors agree on one new epoch. Every scorer reads the epoch
  every `scorer_epoch_check_s` and follows it. Records past the copied offsets are re-delivered
  at most once more; the sinks are idempotent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer
from kafka.structs import MemberState
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from pipelines.advisory_locks import Lock
from services.stream.kafka import make_consumer

log = logging.getLogger("voxpop.scorer.membership")

_READ = text("SELECT epoch FROM consumer_group_epochs WHERE base_group = :b")
_WRITE = text("""
INSERT INTO consumer_group_epochs (base_group, epoch, changed_at, reason) VALUES (:b, :e, now(), :r)
ON CONFLICT (base_group) DO UPDATE SET epoch = EXCLUDED.epoch, changed_at = now(), reason = EXCLUDED.reason
""")


def group_name(base: str, epoch: int) -> str:
    """The group id of one epoch: the base name itself first, so a fresh install looks as before."""
    return base if epoch == 0 else f"{base}.e{epoch}"


def current_epoch(db: Engine, base: str) -> int:
    with db.connect() as conn:
        return int(conn.execute(_READ, {"b": base}).scalar() or 0)


def advance_epoch(db: Engine, bootstrap: str, base: str, seen: int, reason: str) -> int:
    """Move `base` from epoch `seen` to the next, carrying committed offsets; returns the epoch now.

    If another scorer already moved it past `seen`, nothing is done and its epoch is returned.
    """
    with db.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(Lock.GROUP_EPOCH)})
        now = int(conn.execute(_READ, {"b": base}).scalar() or 0)
        if now != seen:
            return now
        old, new = group_name(base, now), group_name(base, now + 1)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="voxpop-group-epoch")
        try:
            offsets = {tp: o for tp, o in admin.list_group_offsets({old: None}).get(old, {}).items() if o.offset >= 0}
            if offsets:
                admin.alter_group_offsets(new, offsets)
        finally:
            admin.close()
        conn.execute(_WRITE, {"b": base, "e": now + 1, "r": reason})
        log.warning("consumer group %s -> %s (%d committed offsets carried): %s", old, new, len(offsets), reason)
        return now + 1


def close_consumer(consumer: KafkaConsumer, leave_group: bool) -> None:
    """Close without committing; without LeaveGroup unless asked (see the module docstring)."""
    if not leave_group:
        coordinator = getattr(consumer, "_coordinator", None)
        if coordinator is not None and hasattr(coordinator, "maybe_leave_group"):
            # kafka-python has no option for this; the member then expires after session_timeout_ms
            coordinator.maybe_leave_group = lambda *a, **k: None
    consumer.close(autocommit=False)


class GroupMembership:
    """Owns the scorer's consumer: opens it in the current epoch, follows and advances epochs.

    Only the polling thread touches it: `check()` once per loop may replace `consumer`.
    """

    def __init__(
        self,
        db: Engine,
        bootstrap: str,
        base_group: str,
        topics: Iterable[str],
        *,
        join_timeout_s: float,
        epoch_check_s: float,
        leave_group: bool,
        listener: ConsumerRebalanceListener | None = None,
        **consumer_overrides: Any,
    ) -> None:
        self.db, self.bootstrap, self.base = db, bootstrap, base_group
        self.topics = list(topics)
        self.join_timeout_s, self.epoch_check_s, self.leave_group = join_timeout_s, epoch_check_s, leave_group
        self.listener, self.overrides = listener, consumer_overrides
        self.epoch = current_epoch(db, base_group)
        self.consumer = self._open()
        self.recoveries = 0

    @property
    def group_id(self) -> str:
        return group_name(self.base, self.epoch)

    def _open(self) -> KafkaConsumer:
        self._unstable_since: float | None = None
        self._checked_at = time.monotonic()
        log.info("joining consumer group %s", self.group_id)
        return make_consumer(self.bootstrap, self.group_id, self.topics, listener=self.listener, **self.overrides)

    def _reopen(self) -> None:
        close_consumer(self.consumer, self.leave_group)
        self.consumer = self._open()

    def check(self) -> bool:
        """Recover from a join that does not complete, follow an epoch change; True if the consumer changed."""
        now = time.monotonic()
        if self.consumer.group_metadata().state is MemberState.STABLE:
            self._unstable_since = None
        elif self._unstable_since is None:
            self._unstable_since = now
        elif now - self._unstable_since > self.join_timeout_s:
            waited = now - self._unstable_since
            try:
                self.epoch = advance_epoch(
                    self.db,
                    self.bootstrap,
                    self.base,
                    self.epoch,
                    f"a member of {self.group_id} was not in a stable group for {waited:.0f} s",
                )
            except OperationalError as e:  # PostgreSQL away: the wedge is still there at the next check
                log.warning("cannot move to a new group epoch yet (%s)", str(e).splitlines()[0][:200])
                return False
            self.recoveries += 1
            self._reopen()
            return True
        if now - self._checked_at >= self.epoch_check_s:
            self._checked_at = now
            try:
                epoch = current_epoch(self.db, self.base)
            except OperationalError as e:  # PostgreSQL away: look again at the next check, keep consuming
                log.warning(
                    "group epoch not readable (%s); checking again in %.0f s",
                    str(e).splitlines()[0][:200],
                    self.epoch_check_s,
                )
                return False
            if epoch != self.epoch:
                log.warning("consumer group moved from %s to epoch %d: following it", self.group_id, epoch)
                self.epoch = epoch
                self._reopen()
                return True
        return False

    def close(self) -> None:
        close_consumer(self.consumer, self.leave_group)
