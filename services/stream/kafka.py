"""Kafka plumbing shared by every service: topic creation, producers, consumers, the DLQ.

kafka-python is used for ingest and the scorer (synchronous, explicit commits); Faust (aiokafka) for trends.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RebalanceInProgressError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
)

from pipelines.retry import retrying, wait_fixed
from services.config import Settings

if TYPE_CHECKING:
    from kafka.producer.future import FutureRecordMetadata

log = logging.getLogger("voxpop.kafka")

# The most a producer sends in one request; a record (with headers) must fit well inside it.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# A dead letter keeps at most this much of the refused value (its size and sha256 go in headers):
# the original stays on its source topic; the DLQ write of a huge record must never fail.
DLQ_MAX_VALUE_BYTES = 64 * 1024

# What kafka-python raises when a commit meets a rebalance: the partitions have moved (or are
# moving), so the new owner redoes the uncommitted records, idempotently. Never fatal.
REBALANCE_ERRORS: tuple[type[KafkaError], ...] = (
    CommitFailedError,
    RebalanceInProgressError,
    IllegalGenerationError,
    UnknownMemberIdError,
)
# What kafka-python raises while the broker is away (restarting, unreachable): wait and poll again.
BROKER_AWAY_ERRORS: tuple[type[KafkaError], ...] = (KafkaConnectionError, KafkaTimeoutError)
# A record the broker will never take: a property of the record, not of the infrastructure.
RECORD_TOO_LARGE_ERRORS: tuple[type[KafkaError], ...] = (MessageSizeTooLargeError, RecordListTooLargeError)


def stream_topics(s: Settings) -> list[str]:
    return [s.topic_raw, s.topic_scored, s.topic_dlq, s.topic_alerts]


def ensure_topics(bootstrap: str, s: Settings, timeout_s: float = 60.0) -> list[str]:
    """Create the stream's topics if missing (idempotent). Returns the ones created now."""
    try:  # the broker may still be starting
        admin = retrying(KafkaError, timeout_s=timeout_s, wait=wait_fixed(0.5))(
            KafkaAdminClient, bootstrap_servers=bootstrap, client_id="voxpop-admin", request_timeout_ms=15000
        )
    except KafkaError as e:
        raise RuntimeError(f"Kafka at {bootstrap} not reachable: {e}") from e
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in stream_topics(s) if t not in existing]
        created = []
        for t in wanted:
            try:
                admin.create_topics([NewTopic(t, s.topic_partitions, s.topic_replication)])
                created.append(t)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics %s with %d partitions", created, s.topic_partitions)
        return created
    finally:
        admin.close()


def make_producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    """A producer that waits for the broker's ack: at-least-once from ingest onwards."""
    cfg = dict(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        # one batch per partition per scorer batch: the default 16 KB splits a scorer batch's
        # records over many small broker requests, each paid for in send()
        batch_size=1024 * 1024,
        retries=10,
        max_in_flight_requests_per_connection=1,  # keep per-key order across retries
        # Dedup is end to end by post id (ingest ledger, idempotent sinks); broker-side idempotence
        # only adds a fatal UnknownProducerIdError when the broker forgets producer state (a restart).
        enable_idempotence=False,
        max_block_ms=10_000,  # a send with no broker metadata fails in 10 s rather than 60
        max_request_size=MAX_REQUEST_BYTES,
        request_timeout_ms=30000,
    )
    cfg.update(overrides)
    return KafkaProducer(**cfg)


def make_consumer(
    bootstrap: str,
    group: str,
    topics: Iterable[str],
    listener: ConsumerRebalanceListener | None = None,
    **overrides: Any,
) -> KafkaConsumer:
    """A group consumer with manual commits: offsets move only after the sinks succeeded."""
    cfg = dict(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
        max_poll_interval_ms=300_000,
        session_timeout_ms=30_000,
        heartbeat_interval_ms=3_000,
        # A fetch that finds nothing new may be held this long by the broker before it answers,
        # even if records arrive meanwhile (Tansu does so): 500 ms (the default) put ~200 ms on
        # the median ingest -> stored latency at light load, 20 ms costs a few idle fetches/s.
        fetch_max_wait_ms=20,
    )
    cfg.update(overrides)
    consumer = KafkaConsumer(**cfg)
    consumer.subscribe(list(topics), listener=listener)
    return consumer


@dataclass
class DeadLetter:
    """Writes a failed record to `posts.dlq` with its original key and bytes and why it failed."""

    producer: KafkaProducer
    topic: str

    def send(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        error: str,
        stage: str,
        source_topic: str = "",
        partition: int = -1,
        offset: int = -1,
        attempts: int = 1,
    ) -> FutureRecordMetadata:
        """Queue one dead letter. A value over `DLQ_MAX_VALUE_BYTES` is cut to that size (headers say so)."""
        value = value or b""
        headers = [
            ("error", error[:2000].encode("utf-8", "replace")),
            ("stage", stage.encode()),
            ("source_topic", source_topic.encode()),
            ("source_partition", str(partition).encode()),
            ("source_offset", str(offset).encode()),
            ("attempts", str(attempts).encode()),
        ]
        if len(value) > DLQ_MAX_VALUE_BYTES:
            headers += [
                ("value_truncated", b"true"),
                ("original_bytes", str(len(value)).encode()),
                ("original_sha256", hashlib.sha256(value).hexdigest().encode()),
            ]
            value = value[:DLQ_MAX_VALUE_BYTES]
        if key is not None and len(key) > DLQ_MAX_VALUE_BYTES:
            key = key[:DLQ_MAX_VALUE_BYTES]
        return self.producer.send(self.topic, key=key, value=value, headers=headers)


def dlq_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (headers or [])}
