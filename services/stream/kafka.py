"""Kafka plumbing shared by every service: topic creation, producers, consumers, the DLQ.

kafka-python is used for ingest and the scorer (the design card); Faust (aiokafka) for trends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from services.config import Settings

log = logging.getLogger(__name__)


def stream_topics(s: Settings) -> list[str]:
    return [s.topic_raw, s.topic_scored, s.topic_dlq, s.topic_alerts]


def ensure_topics(bootstrap: str, s: Settings, timeout_s: float = 60.0) -> list[str]:
    """Create the stream's topics if missing (idempotent). Returns the ones created now."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="voxpop-admin",
                                     request_timeout_ms=15000)
            break
        except KafkaError as e:  # broker still starting
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka at {bootstrap} not reachable: {e}") from e
            time.sleep(0.5)
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


def make_producer(bootstrap: str, **overrides) -> KafkaProducer:
    """A producer that waits for the broker's ack: at-least-once from ingest onwards."""
    cfg = dict(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        # one batch per partition per scorer batch: with the default 16 KB, 2,560 scored posts
        # (~550 B) cost 18 us each in send(), with 1 MB 10 us (Tansu, 2026-11-24)
        batch_size=1024 * 1024,
        retries=10,
        max_in_flight_requests_per_connection=1,  # keep per-key order across retries
        max_request_size=4 * 1024 * 1024,
        request_timeout_ms=30000,
    )
    cfg.update(overrides)
    return KafkaProducer(**cfg)


def make_consumer(bootstrap: str, group: str, topics: Iterable[str], listener: ConsumerRebalanceListener | None = None,
                  **overrides) -> KafkaConsumer:
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

    def send(self, *, key: bytes | None, value: bytes, error: str, stage: str, source_topic: str = "",
             partition: int = -1, offset: int = -1, attempts: int = 1):
        headers = [
            ("error", error[:2000].encode("utf-8", "replace")),
            ("stage", stage.encode()),
            ("source_topic", source_topic.encode()),
            ("source_partition", str(partition).encode()),
            ("source_offset", str(offset).encode()),
            ("attempts", str(attempts).encode()),
        ]
        return self.producer.send(self.topic, key=key, value=value, headers=headers)


def dlq_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (headers or [])}
