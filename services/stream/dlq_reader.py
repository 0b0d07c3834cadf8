"""Read the dead-letter topic back: the original bytes and why they were refused."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, TopicPartition

from services.stream.kafka import dlq_headers


def read_dead_letters(
    bootstrap: str, topic: str, limit: int | None = None, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """All (or the newest `limit`) dead letters, oldest first, without joining a consumer group."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, consumer_timeout_ms=int(timeout_s * 1000)
    )
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not parts:
            return []
        consumer.assign(parts)
        end = consumer.end_offsets(parts)
        if limit is not None:
            for tp in parts:
                consumer.seek(tp, max(0, end[tp] - limit))
        else:
            consumer.seek_to_beginning(*parts)
        out = []
        remaining = {tp for tp in parts if consumer.position(tp) < end[tp]}
        while remaining:
            batch = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not batch:
                break
            for tp, recs in batch.items():
                for r in recs:
                    out.append(
                        {
                            "key": r.key.decode("utf-8", "replace") if r.key else None,
                            "value": r.value.decode("utf-8", "replace") if r.value is not None else None,
                            **dlq_headers(r.headers),
                            "timestamp_ms": r.timestamp,
                        }
                    )
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        out.sort(key=lambda d: d["timestamp_ms"])
        return out[-limit:] if limit else out
    finally:
        consumer.close()
