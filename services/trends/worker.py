"""`voxpop trends`: the trend-window Faust worker wired to PostgreSQL, Redis and Kafka.

Entry point: :func:`main` (runs until SIGTERM/SIGINT). Redis gets, per watch and window size, the
live snapshot of the newest open window and the last closed one (keys in
``services.storage.redis_keys``), late/invalid counters, the watermark, and pub/sub messages on
``vp:trends:updates`` / ``vp:alerts:events`` for the dashboard.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis

from pipelines.trends.app import TrendHooks, create_app, firing_event
from pipelines.trends.processor import BatchResult, TrendConfig, TrendProcessor
from pipelines.trends.windows import parse_specs
from services.config import Settings, TrendsSettings, freeze_startup_heap, get_settings
from services.storage import redis_keys as rk
from services.storage.db import engine_for, migrate

if TYPE_CHECKING:
    import faust

log = logging.getLogger("voxpop.trends")


def _json_default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    raise TypeError(type(v).__name__)


def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, default=_json_default, separators=(",", ":"))


class RedisHooks(TrendHooks):
    """Writes batch results to Redis (best effort: PostgreSQL stays the source of truth)."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        super().__init__()
        self.r = client
        self.ttl = ttl_s
        self.on_batch = self._on_batch
        self.on_invalid = self._on_invalid

    def _on_batch(self, res: BatchResult) -> None:
        try:
            pipe = self.r.pipeline(transaction=False)
            for snap in res.live:
                pipe.set(rk.trend_live(snap["watch_id"], snap["size"]), _dumps(snap), ex=self.ttl)
            last: dict[tuple[int, str], dict[str, Any]] = {}
            for win in res.closed:
                last[(win["watch_id"], win["size"])] = win
            for (watch, size), win in last.items():
                pipe.set(rk.trend_closed(watch, size), _dumps({**win, "open": False}), ex=self.ttl)
            for lp in res.late:
                pipe.hincrby(rk.TRENDS_LATE_TOTAL, lp.size, 1)
                pipe.hincrby(rk.trend_late(lp.watch_id), lp.size, 1)
            if res.watermark is not None:
                pipe.set(rk.TRENDS_WATERMARK, res.watermark.isoformat())
            if res.live or res.closed:
                pipe.publish(
                    rk.TRENDS_UPDATES_CHANNEL,
                    _dumps({"watermark": res.watermark, "live": len(res.live), "closed": len(res.closed)}),
                )
            for f in res.firings:
                pipe.publish(rk.ALERTS_EVENTS_CHANNEL, _dumps(firing_event(f)))
            pipe.execute()
        except redis.RedisError as e:  # never fail a committed batch because of the cache
            log.warning("redis update failed: %s", e)
        if res.late:
            sizes = sorted({lp.size for lp in res.late})
            log.warning(
                "%d late (watch, post, window) memberships beyond allowed lateness in %s; "
                "counted in trend_windows.late_posts",
                len(res.late),
                sizes,
            )
        for f in res.firings:
            log.info(
                "alert %s: rule=%s watch=%s window=%s %s observed=%s baseline=%s",
                f["status"],
                f["rule_name"],
                f["watch_id"],
                f["window_size"],
                f["window_start"],
                f["observed"],
                f["baseline"],
            )

    def _on_invalid(self, partition: int, offset: int, value: bytes | None, error: str) -> None:
        try:
            self.r.incr(rk.TRENDS_INVALID_TOTAL)
        except redis.RedisError:
            pass


def discover_partitions(bootstrap: str, topic: str) -> int:
    """Partition count of ``topic`` (the watermark waits for every partition to report)."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        parts = c.partitions_for_topic(topic)
    finally:
        c.close()
    return len(parts) if parts else 1


def build_processor(s: Settings, ts: TrendsSettings, partitions: int) -> TrendProcessor:
    assert s.database_url, "VOXPOP_DATABASE_URL is required"
    cfg = TrendConfig(
        source=s.topic_scored,
        specs=parse_specs(ts.windows),
        lateness_s=ts.lateness_s,
        expected_partitions=partitions,
        idle_s=ts.idle_s,
        top_n=ts.top_n,
        retention_days=dict(ts.retention_days),
        members_retention_days=ts.members_retention_days,
        merge_interval_s=ts.merge_interval_s,
    )
    return TrendProcessor(engine_for(s.database_url), cfg)


def build_app(s: Settings | None = None, ts: TrendsSettings | None = None) -> faust.App:
    """The configured Faust app (servers must be reachable); migrates the database first."""
    s = s or get_settings()
    ts = ts or s.trends
    if not (s.database_url and s.redis_url and s.kafka_bootstrap):
        raise SystemExit(
            "voxpop trends needs VOXPOP_DATABASE_URL, VOXPOP_REDIS_URL and VOXPOP_KAFKA_BOOTSTRAP "
            "(or run it through `voxpop up`)"
        )
    migrate(s.database_url)
    from services.stream.kafka import ensure_topics

    ensure_topics(s.kafka_bootstrap, s)
    partitions = ts.partitions or discover_partitions(s.kafka_bootstrap, s.topic_scored)
    processor = build_processor(s, ts, partitions)
    hooks = RedisHooks(redis.Redis.from_url(s.redis_url), ts.live_ttl_s)
    log.info(
        "trends: %s (%d partitions) windows=%s lateness=%ss",
        s.topic_scored,
        partitions,
        ",".join(ts.windows),
        ts.lateness_s,
    )
    return create_app(
        app_id=ts.app_id,
        bootstrap=s.kafka_bootstrap,
        source_topic=s.topic_scored,
        alerts_topic=s.topic_alerts,
        processor=processor,
        hooks=hooks,
        batch_max=ts.batch_max,
        batch_within_s=ts.batch_within_s,
        publish_interval_s=ts.publish_interval_s,
        session_timeout_s=ts.session_timeout_s,
        retention_interval_s=ts.retention_interval_s,
    )


def main() -> None:
    """Run the trends worker until SIGTERM/SIGINT (Faust drains the batch in hand and commits)."""
    import faust

    s = get_settings()
    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app(s)
    freeze_startup_heap()
    worker = faust.Worker(app, loglevel=s.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
