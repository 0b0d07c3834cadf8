"""The one way into the stream: validate -> match watches -> ledger (dedup) -> `posts.raw`.

Every connector (file replay, HTTP push, Jetstream, Mastodon) hands its records to an
`IngestGate`. Bad records go to `posts.dlq` with the reason; nothing is dropped silently.
A post is accepted once it is in the ingest ledger (PostgreSQL, `services.ingest.ledger`); that
is also what makes a later copy a duplicate. The gate then publishes it; if the broker refuses
or is down, the post stays in the ledger unpublished and the reconciler publishes it later, so
neither a broker outage nor a broker that forgets loses an accepted post.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from kafka import KafkaProducer
from kafka.errors import KafkaError
from pydantic import ValidationError
from sqlalchemy import Engine

from pipelines.schemas import Post
from pipelines.watch_match import WatchMatcher, WatchSpec
from services.config import Settings
from services.ingest import ledger
from services.storage.redis_keys import KEYS
from services.stream.kafka import DeadLetter

log = logging.getLogger("voxpop.ingest")


@dataclass
class Incoming:
    """One record from a connector: its raw bytes and either a parsed Post or why it failed."""

    raw: bytes
    post: Post | None = None
    error: str | None = None
    source: str = ""


@dataclass
class GateResult:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (index in batch, reason)
    unpublished: int = 0  # accepted (in the ledger) but not yet on the broker: the reconciler sends them


def validation_reason(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, er['loc'])) or 'record'}: {er['msg']}" for er in e.errors())
    return str(e)


def parse_post_bytes(raw: bytes) -> Post:
    """Parse a Post sent as JSON bytes; raises ValueError/ValidationError with a clear message."""
    return Post.model_validate_json(raw)


class WatchCache:
    """Watches loaded from PostgreSQL, refreshed every `refresh_s` seconds."""

    def __init__(self, loader: Callable[[], list[WatchSpec]], refresh_s: float = 10.0) -> None:
        self._loader, self._refresh_s = loader, refresh_s
        self._matcher = WatchMatcher([])
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def matcher(self) -> WatchMatcher:
        if time.monotonic() - self._loaded_at > self._refresh_s:
            with self._lock:
                if time.monotonic() - self._loaded_at > self._refresh_s:
                    try:
                        self._matcher = WatchMatcher(self._loader())
                    except Exception as e:  # keep matching with the last good set
                        log.warning("could not refresh watches: %s", e)
                    self._loaded_at = time.monotonic()
        return self._matcher


class IngestGate:
    def __init__(
        self,
        settings: Settings,
        producer: KafkaProducer,
        rds: redis.Redis,
        db: Engine,
        watches: WatchCache | None = None,
    ) -> None:
        self.s, self.producer, self.redis, self.db = settings, producer, rds, db
        self.dlq = DeadLetter(producer, settings.topic_dlq)
        self.watches = watches

    def submit(self, items: Sequence[Incoming]) -> GateResult:
        """Send a batch; returns what was accepted, what was a duplicate, what went to the DLQ."""
        res = GateResult()
        now = datetime.now(UTC)
        good: list[tuple[int, Incoming]] = []
        for i, it in enumerate(items):
            reason = it.error
            if reason is None and len(it.raw) > self.s.max_record_bytes:
                reason = f"oversized record: {len(it.raw)} bytes > limit {self.s.max_record_bytes}"
            if reason is None and it.post is None:
                reason = "no post parsed"
            if reason is not None:
                self.dlq.send(key=None, value=it.raw, error=reason, stage="ingest", source_topic=it.source)
                res.rejected.append((i, reason))
            else:
                good.append((i, it))

        # Dedup within this batch, then against the ledger (which records the new ones).
        batch: dict[str, Post] = {}
        for _, it in good:
            post = it.post
            assert post is not None
            if post.id in batch:
                res.duplicates.append(post.id)
                continue
            if self.watches is not None:
                post.watches = self.watches.matcher().match(post.text, post.lang, post.author.handle)
            post.ingested_at = now
            batch[post.id] = post
        payloads = {pid: p.model_dump_json() for pid, p in batch.items()}
        new = ledger.accept(self.db, payloads)
        res.duplicates += [pid for pid in batch if pid not in new]
        res.accepted = [pid for pid in batch if pid in new]
        res.unpublished = len(res.accepted) - self.publish(
            {pid: payloads[pid] for pid in res.accepted}, {pid: batch[pid].author.id for pid in res.accepted}
        )
        pipe = self.redis.pipeline(transaction=False)
        pipe.incrby(KEYS.stats("ingest_accepted"), len(res.accepted))
        pipe.incrby(KEYS.stats("ingest_duplicates"), len(res.duplicates))
        pipe.incrby(KEYS.stats("ingest_dlq"), len(res.rejected))
        pipe.execute()
        return res

    def publish(self, payloads: dict[str, str], keys: dict[str, str]) -> int:
        """Send ledger posts to `posts.raw` and record where they landed; returns how many the broker took.

        A refusal or an outage is logged, not raised: the posts are already accepted (in the
        ledger) and the reconciler publishes what is still unpublished.
        """
        landed: dict[str, tuple[int, int]] = {}
        failed: list[str] = []
        futures = {}
        try:
            for pid, payload in payloads.items():
                futures[pid] = self.producer.send(self.s.topic_raw, key=keys[pid].encode(), value=payload.encode())
            self.producer.flush(timeout=self.s.kafka_send_timeout_s)
        except KafkaError as e:  # no metadata (broker down) or the flush timed out: what was sent may land
            failed.append(f"{type(e).__name__}: {e}")
        for pid, f in futures.items():
            try:
                md = f.get(timeout=self.s.kafka_send_timeout_s)
                landed[pid] = (md.partition, md.offset)
            except KafkaError as e:
                failed.append(f"{type(e).__name__}: {e}")
        if len(landed) < len(payloads):
            log.warning(
                "%d of %d accepted posts not yet on %s (%s); the reconciler will publish them",
                len(payloads) - len(landed),
                len(payloads),
                self.s.topic_raw,
                failed[0] if failed else "?",
            )
        ledger.mark_published(self.db, landed)
        return len(landed)
