"""The Faust app: ``posts.scored`` -> trend windows (PostgreSQL) -> ``alerts.fired``.

One agent reads ``posts.scored`` in batches (``take_events``: Faust acks a batch's events only
after the agent body returned, so offsets never pass a record whose transaction did not commit)
and hands them to :class:`TrendProcessor` in a thread (the SQL is synchronous). Window state
lives in PostgreSQL, not in a Faust table: see ``processor.py`` for why (faust changelog writes
and offset commits are not atomic, robinhood/faust#340, faust-streaming/faust#517).

Firings are written with an outbox flag (``published_at``) in the window-close transaction; a
relay publishes unpublished ones to ``alerts.fired`` after each batch and on a timer, so a crash
between commit and publish only delays the event (consumers dedupe by firing ``id``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import faust
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from pipelines.retry import delay_after, exponential
from pipelines.schemas import ScoredPost
from pipelines.trends.processor import BatchResult, TrendProcessor

log = logging.getLogger("voxpop.trends")
DB_BACKOFF = exponential(0.5, 30.0)


async def _in_db(call: Callable[..., Any], *args: Any) -> Any:
    """Run a PostgreSQL step off the event loop; an outage is waited out and the step done again
    (each step is one transaction, so a retry neither skips nor doubles anything)."""
    failures = 0
    while True:
        try:
            return await asyncio.to_thread(call, *args)
        except OperationalError as e:
            failures += 1
            wait = delay_after(DB_BACKOFF, failures)
            log.warning("PostgreSQL unavailable (%s); trying again in %.1f s", str(e).splitlines()[0][:200], wait)
            await asyncio.sleep(wait)


@dataclass
class TrendHooks:
    """Side effects the service layer plugs in (Redis snapshots, metrics)."""

    on_batch: Callable[[BatchResult], None] = lambda r: None
    on_invalid: Callable[[int, int, bytes | None, str], None] = lambda p, o, v, e: None


def firing_event(row: dict[str, Any]) -> dict[str, Any]:
    """The ``alerts.fired`` message for one ``alert_firings`` row (JSON-safe)."""
    out: dict[str, Any] = {"schema_version": 1}
    for k in (
        "id",
        "rule_id",
        "rule_name",
        "status",
        "watch_id",
        "window_size",
        "window_start",
        "window_end",
        "metric",
        "observed",
        "baseline",
        "baseline_std",
        "zscore",
        "n_posts",
        "severity",
        "sample_post_ids",
        "fired_at",
    ):
        v = row.get(k)
        out[k] = v.isoformat() if isinstance(v, datetime) else v
    out["sample_post_ids"] = list(out.get("sample_post_ids") or [])
    return out


def create_app(
    *,
    app_id: str,
    bootstrap: str,
    source_topic: str,
    alerts_topic: str,
    processor: TrendProcessor,
    hooks: TrendHooks | None = None,
    batch_max: int = 500,
    batch_within_s: float = 0.5,
    publish_interval_s: float = 2.0,
    session_timeout_s: float = 60.0,
    retention_interval_s: float = 3600.0,
) -> faust.App:
    """Build the trends Faust app (not started). ``bootstrap`` is ``host:port[,host:port]``."""
    hooks = hooks or TrendHooks()
    brokers = ";".join(f"kafka://{b.strip()}" for b in bootstrap.split(",") if b.strip())
    app = faust.App(
        app_id,
        broker=brokers,
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        topic_disable_leader=True,  # no leader topic: nothing of ours needs one
        topic_allow_declare=False,  # topics are created by `ensure_topics`
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session_timeout_s,  # Tansu can take 5-25 s to join a group
        broker_heartbeat_interval=3.0,
        broker_rebalance_timeout=max(60.0, session_timeout_s),
        broker_request_timeout=max(90.0, session_timeout_s + 30),
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        producer_acks=-1,
    )
    source = app.topic(source_topic, value_serializer="raw", key_serializer="raw", internal=False)
    alerts = app.topic(alerts_topic, value_serializer="raw", key_serializer="raw", internal=False)
    publish_lock = asyncio.Lock()

    async def publish_pending() -> int:
        sent = 0
        async with publish_lock:
            while True:
                rows = await _in_db(processor.unpublished_firings, 500)
                if not rows:
                    return sent
                for row in rows:
                    key = str(row.get("rule_id") or 0).encode()
                    fut = await alerts.send(key=key, value=json.dumps(firing_event(row)).encode(), force=True)
                    await fut  # wait for the broker's ack before marking it published
                await _in_db(processor.mark_published, [r["id"] for r in rows])
                sent += len(rows)

    @app.agent(source, name="trend-windows")
    async def windows(stream: faust.StreamT) -> None:
        async for events in stream.take_events(batch_max, within=batch_within_s):
            items: list[tuple[int, ScoredPost]] = []
            for ev in events:
                msg = ev.message
                try:
                    raw = ev.value if isinstance(ev.value, bytes | bytearray) else msg.value
                    items.append((msg.partition, ScoredPost.model_validate_json(raw)))
                except (ValidationError, ValueError, TypeError) as e:
                    log.warning("invalid posts.scored record p%s@%s: %s", msg.partition, msg.offset, e)
                    hooks.on_invalid(msg.partition, msg.offset, msg.value, str(e)[:500])
            if not items:
                continue
            res = await _in_db(processor.process, items)
            await asyncio.to_thread(hooks.on_batch, res)
            if res.firings:
                await publish_pending()

    @app.timer(publish_interval_s)
    async def relay() -> None:
        merged = await _in_db(processor.merge)  # windows a batch's skipped merge left (another was merging)
        if merged.closed or merged.firings:
            await asyncio.to_thread(hooks.on_batch, merged)
        n = await publish_pending()
        if n:
            log.info("published %d alert events to %s", n, alerts_topic)

    @app.timer(retention_interval_s)
    async def retention() -> None:
        deleted = await _in_db(processor.prune)
        if any(deleted.values()):
            log.info("retention deleted %s", deleted)

    return app
