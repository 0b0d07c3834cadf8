"""Prometheus `/metrics`: the whole pipeline seen from one place.

Counters and histograms that workers keep in Redis (ingest, scorer), consumer lag and DLQ size
read from Kafka (cached for a few seconds: a scrape must stay cheap), webhook outcomes from
PostgreSQL, plus this API's own request counts and latencies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import text

from services.storage import redis_keys as rk
from services.storage.redis_keys import KEYS
from services.storage.redis_stats import HISTOGRAMS, as_text, read_histogram

if TYPE_CHECKING:
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    from services.api.deps import AppState

log = logging.getLogger("voxpop.api.metrics")
REDIS_COUNTERS = {
    "ingest_accepted": "posts accepted by ingest and put on posts.raw",
    "ingest_duplicates": "posts ingest recognised as already seen",
    "ingest_dlq": "records ingest sent to the DLQ",
    "scored": "posts scored and stored (first time only)",
    "scorer_batches": "micro-batches the scorers processed",
}


class KafkaProbe:
    """Committed offsets of the scorer group vs end offsets of posts.raw, and the DLQ's size."""

    def __init__(
        self, bootstrap: str | None, group: str, topic: str, dlq: str, cache_s: float, timeout_s: float
    ) -> None:
        self.bootstrap, self.group, self.topic, self.dlq = bootstrap, group, topic, dlq
        self.cache_s, self.timeout_ms = cache_s, int(timeout_s * 1000)
        self._at = 0.0
        self._value: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._admin: KafkaAdminClient | None = None
        self._consumer: KafkaConsumer | None = None

    def _clients(self) -> tuple[KafkaAdminClient, KafkaConsumer]:
        from kafka import KafkaAdminClient, KafkaConsumer

        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap, client_id="voxpop-api-metrics", request_timeout_ms=self.timeout_ms
            )
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                client_id="voxpop-api-metrics",
                request_timeout_ms=max(self.timeout_ms, 11000),
                enable_auto_commit=False,
            )
        return self._admin, self._consumer

    def _read(self) -> dict[str, Any]:
        from kafka import TopicPartition

        admin, consumer = self._clients()
        parts = consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        committed = self._committed(admin, tps)
        ends = consumer.end_offsets(tps) if tps else {}
        lag: dict[int, int] = {}
        for tp in tps:
            c = committed.get(tp)
            done = c.offset if c is not None and c.offset >= 0 else 0
            lag[tp.partition] = max(0, ends.get(tp, 0) - done)
        dparts = consumer.partitions_for_topic(self.dlq) or set()
        dtps = [TopicPartition(self.dlq, p) for p in dparts]
        dlq = 0
        if dtps:
            d_end, d_begin = consumer.end_offsets(dtps), consumer.beginning_offsets(dtps)
            dlq = sum(d_end[tp] - d_begin.get(tp, 0) for tp in dtps)
        return {"lag": lag, "dlq": dlq}

    def _committed(self, admin: KafkaAdminClient, tps: list[TopicPartition]) -> dict[TopicPartition, Any]:
        """Committed offsets of the group (kafka-python 3 renamed the admin call; support both)."""
        from kafka.errors import KafkaError

        offsets: dict[TopicPartition, Any]  # TopicPartition -> OffsetAndMetadata
        try:
            if hasattr(admin, "list_group_offsets"):
                offsets = admin.list_group_offsets({self.group: tps}).get(self.group, {})
            else:
                offsets = admin.list_consumer_group_offsets(self.group, partitions=tps)
            return offsets
        except KafkaError as e:  # e.g. the group never committed: everything is lag
            log.debug("metrics: no committed offsets for %s: %s", self.group, e)
            return {}

    def read(self) -> dict[str, Any] | None:
        if not self.bootstrap:
            return None
        with self._lock:
            if self._value is not None and time.monotonic() - self._at < self.cache_s:
                return self._value
            try:
                self._value = self._read()
            except Exception as e:  # broker away: report what we can, reconnect next time
                log.warning("metrics: kafka probe failed: %s", e)
                self.close()
                self._value = None
            self._at = time.monotonic()
            return self._value

    def close(self) -> None:
        for c in (self._admin, self._consumer):
            try:
                if c is not None:
                    c.close()
            except Exception:
                pass
        self._admin = self._consumer = None


class PipelineCollector:
    """Collected on each scrape (prometheus_client custom collector protocol)."""

    def __init__(self, st: AppState, probe: KafkaProbe) -> None:
        self.st, self.probe = st, probe

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._redis()
        yield from self._kafka()
        yield from self._postgres()

    def _redis(self) -> Iterator[Metric]:
        r = self.st.redis
        try:
            vals = r.mget([KEYS.stats(k) for k in REDIS_COUNTERS])
            for (name, doc), v in zip(REDIS_COUNTERS.items(), vals, strict=True):
                m = CounterMetricFamily(f"voxpop_{name}", doc)
                m.add_metric([], float(v or 0))
                yield m
            for name, buckets in HISTOGRAMS.items():
                pairs, total, _count = read_histogram(r.hgetall(rk.stats_hist(name)), buckets)
                if name.endswith("_ms"):
                    pairs = [(le if le == "+Inf" else str(float(le) / 1000), c) for le, c in pairs]
                    name, total = name[:-3] + "_seconds", total / 1000
                h = HistogramMetricFamily(f"voxpop_{name}", f"{name.replace('_', ' ')} per scorer micro-batch")
                h.add_metric([], pairs, total)
                yield h
            late = GaugeMetricFamily(
                "voxpop_trends_late_posts", "posts that arrived after their window closed", labels=["size"]
            )
            for size, v in (r.hgetall(rk.TRENDS_LATE_TOTAL) or {}).items():
                late.add_metric([as_text(size)], float(v))
            yield late
            inv = CounterMetricFamily("voxpop_trends_invalid", "posts.scored records the trends app rejected")
            inv.add_metric([], float(r.get(rk.TRENDS_INVALID_TOTAL) or 0))
            yield inv
            up = GaugeMetricFamily("voxpop_redis_up", "1 if Redis answered this scrape")
            up.add_metric([], 1.0)
            yield up
        except Exception as e:
            log.warning("metrics: redis failed: %s", e)
            up = GaugeMetricFamily("voxpop_redis_up", "1 if Redis answered this scrape")
            up.add_metric([], 0.0)
            yield up

    def _kafka(self) -> Iterator[Metric]:
        v = self.probe.read()
        up = GaugeMetricFamily("voxpop_kafka_up", "1 if the broker answered the lag probe")
        up.add_metric([], 1.0 if v is not None else 0.0)
        yield up
        if v is None:
            return
        lag = GaugeMetricFamily(
            "voxpop_consumer_lag",
            "end offset - committed offset of the scorer group",
            labels=["group", "topic", "partition"],
        )
        for p, n in sorted(v["lag"].items()):
            lag.add_metric([self.probe.group, self.probe.topic, str(p)], float(n))
        yield lag
        total = GaugeMetricFamily(
            "voxpop_consumer_lag_total", "scorer lag summed over partitions", labels=["group", "topic"]
        )
        total.add_metric([self.probe.group, self.probe.topic], float(sum(v["lag"].values())))
        yield total
        dlq = GaugeMetricFamily("voxpop_dlq_records", "records held in the dead-letter topic", labels=["topic"])
        dlq.add_metric([self.probe.dlq], float(v["dlq"]))
        yield dlq

    def _postgres(self) -> Iterator[Metric]:
        try:
            with self.st.engine.connect() as conn:
                outcomes = conn.execute(text("SELECT outcome, count(*) FROM webhook_deliveries GROUP BY outcome")).all()
                states = conn.execute(text("SELECT state, count(*) FROM notifications GROUP BY state")).all()
                firing = conn.execute(text("SELECT count(*) FROM alert_rule_state WHERE firing")).scalar_one()
        except Exception as e:
            log.warning("metrics: postgres failed: %s", e)
            return
        d = CounterMetricFamily("voxpop_webhook_deliveries", "webhook HTTP attempts by outcome", labels=["outcome"])
        counts = {"ok": 0, "retry": 0, "dead": 0, "blocked": 0} | {o: n for o, n in outcomes}
        for o, n in counts.items():
            d.add_metric([o], float(n))
        yield d
        fails = CounterMetricFamily("voxpop_webhook_failures", "webhook attempts that did not deliver")
        fails.add_metric([], float(sum(n for o, n in outcomes if o != "ok")))
        yield fails
        ns = GaugeMetricFamily("voxpop_notifications", "webhook notifications by state", labels=["state"])
        for s, n in states:
            ns.add_metric([s], float(n))
        yield ns
        f = GaugeMetricFamily("voxpop_alerts_firing", "rule/watch pairs currently firing")
        f.add_metric([], float(firing))
        yield f


def build_registry(st: AppState, probe: KafkaProbe) -> tuple[CollectorRegistry, Counter, Histogram]:
    reg = CollectorRegistry()
    reg.register(PipelineCollector(st, probe))
    requests = Counter("voxpop_api_requests", "API requests", ["method", "route", "status"], registry=reg)
    latency = Histogram(
        "voxpop_api_request_seconds",
        "API request latency",
        ["route"],
        registry=reg,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )
    return reg, requests, latency
