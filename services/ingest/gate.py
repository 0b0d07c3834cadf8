"""The one way into the stream: validate -> dedup -> match watches -> `posts.raw`.

Every connector (file replay, HTTP push, Jetstream, Mastodon) hands its records to an
`IngestGate`. Bad records go to `posts.dlq` with the reason; nothing is dropped silently.
Dedup markers are written only after the broker acknowledged the post, so a crash can at
worst re-send a post (the scorer's sinks are idempotent), never lose one.
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
from pydantic import ValidationError

from pipelines.schemas import Post
from pipelines.watch_match import WatchMatcher, WatchSpec
from services.config import Settings
from services.storage.redis_keys import KEYS
from services.stream.kafka import DeadLetter

log = logging.getLogger(__name__)


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
    def __init__(self, settings: Settings, producer: KafkaProducer, rds: redis.Redis,
                 watches: WatchCache | None = None) -> None:
        self.s, self.producer, self.redis = settings, producer, rds
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

        # Dedup against posts already accepted (Redis) and within this batch.
        ids = [it.post.id for _, it in good]  # type: ignore[union-attr]
        seen = self.redis.mget([KEYS.seen(p) for p in ids]) if ids else []
        batch_seen: set[str] = set()
        to_send: list[Post] = []
        for (_, it), prior in zip(good, seen, strict=True):
            post = it.post
            assert post is not None
            if prior is not None or post.id in batch_seen:
                res.duplicates.append(post.id)
                continue
            batch_seen.add(post.id)
            if self.watches is not None:
                post.watches = self.watches.matcher().match(post.text, post.lang, post.author.handle)
            post.ingested_at = now
            to_send.append(post)

        futures = [
            self.producer.send(self.s.topic_raw, key=p.author.id.encode(), value=p.model_dump_json().encode())
            for p in to_send
        ]
        self.producer.flush()
        for f in futures:
            f.get(timeout=30)  # raise if the broker refused: the caller retries the batch
        pipe = self.redis.pipeline(transaction=False)
        for p in to_send:
            pipe.set(KEYS.seen(p.id), 1, ex=self.s.dedup_ttl_s)
        pipe.incrby(KEYS.stats("ingest_accepted"), len(to_send))
        pipe.incrby(KEYS.stats("ingest_duplicates"), len(res.duplicates))
        pipe.incrby(KEYS.stats("ingest_dlq"), len(res.rejected))
        pipe.execute()
        res.accepted = [p.id for p in to_send]
        return res

