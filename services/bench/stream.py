"""End-to-end runs on real servers: saturation, latency at fixed loads, the naive pipeline.

Every run gets fresh topics, an emptied database and Redis, and real airline posts pushed through
the ingest gate. Scorers run as `voxpop score` child processes, exactly as deployed; throughput is
counted from PostgreSQL, latency from `posts.scored` (the scorer publishes after the commit).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import redis
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import text

from infra.local_stack import Endpoints
from pipelines.schemas import Post
from services.config import STREAM_FIELDS, Settings, child_environ, settings_environ
from services.ingest.gate import Incoming, IngestGate
from services.ingest.records import PRESETS
from services.ingest.replay import load_records
from services.storage.db import engine_for, migrate, truncate_stream_tables
from services.stream.kafka import ensure_topics, make_producer
from services.supervisor import one_core_each, terminate

ROOT = Path(__file__).resolve().parents[2]


def airline_posts(data_dir: Path, n: int | None = None) -> list[Incoming]:
    """Unique real airline posts in stream order (duplicates of the original removed)."""
    recs = load_records(data_dir / "airline-tweets" / "airline_tweets_clean.csv", PRESETS["airline"])
    seen, out = set(), []
    for r in recs:
        if r.post is not None and r.post.id not in seen:
            seen.add(r.post.id)
            out.append(r)
    return out[:n] if n else out


def parsed(item: Incoming) -> Post:
    """The post of a bench record: the bench only replays parsed posts (`airline_posts` keeps those)."""
    if item.post is None:
        raise ValueError(f"bench: record without a parsed post ({item.error or 'no error given'})")
    return item.post


@dataclass
class Run:
    """One experiment's settings: its own topics and consumer group."""

    base: Settings
    ep: Endpoints
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def settings(self) -> Settings:
        return self.base.model_copy(
            update={
                "database_url": self.ep.database_url,
                "redis_url": self.ep.redis_url,
                "kafka_bootstrap": self.ep.kafka_bootstrap,
                "topic_raw": f"bench.raw.{self.tag}",
                "topic_scored": f"bench.scored.{self.tag}",
                "topic_dlq": f"bench.dlq.{self.tag}",
                "topic_alerts": f"bench.alerts.{self.tag}",
                "scorer_group": f"bench-{self.tag}",
            }
        )

    def reset(self) -> None:
        migrate(self.ep.database_url)
        with engine_for(self.ep.database_url).begin() as c:
            truncate_stream_tables(c)
        redis.Redis.from_url(self.ep.redis_url).flushdb()
        ensure_topics(self.ep.kafka_bootstrap, self.settings)

    def gate(self) -> IngestGate:
        return IngestGate(
            self.settings,
            make_producer(self.ep.kafka_bootstrap),
            redis.Redis.from_url(self.ep.redis_url),
            engine_for(self.ep.database_url),
        )

    def env(self, **extra: object) -> dict[str, str]:
        s = self.settings
        return child_environ(
            **settings_environ(s, STREAM_FIELDS),
            **{f"VOXPOP_{k.upper()}": str(v) for k, v in extra.items()},
        )

    def stored(self) -> int:
        with engine_for(self.ep.database_url).connect() as c:
            return int(c.execute(text("SELECT count(*) FROM predictions")).scalar_one())


class Scorers:
    """K scorer processes and a sampler of their resident memory."""

    def __init__(self, run: Run, k: int, log_dir: Path, **env: object) -> None:
        self.procs = []
        self.logs = [log_dir / f"scorer-{run.tag}-{i}.log" for i in range(k)]
        pins = one_core_each(k)  # as `voxpop up` does
        for i in range(k):
            log = self.logs[i].open("wb")
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.cli", "score"],
                    cwd=ROOT,
                    env={**run.env(**env), **pins[i]},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        self.peak_rss_mb = 0.0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for p in self.procs:
                try:
                    rss = psutil.Process(p.pid).memory_info().rss / 2**20
                    self.peak_rss_mb = max(self.peak_rss_mb, rss)
                except psutil.Error:
                    pass

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def death_report(self) -> str:
        """The exit code and log tail of the first scorer that died (logs are removed with the run)."""
        for p, path in zip(self.procs, self.logs, strict=True):
            if p.poll() is not None:
                tail = path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"
                return f"scorer exited with {p.returncode}; its log ends:\n{tail}"
        return "all scorers alive"

    def owned(self) -> list[set[str] | None]:
        """Per scorer, the partitions its last rebalance gave it (None: none yet, or mid-rebalance)."""
        out: list[set[str] | None] = []
        for path in self.logs:
            last = None
            for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
                if "partitions assigned: " in line:
                    last = set(line.split("partitions assigned: ", 1)[1].strip().split(",")) - {"-"}
                elif "partitions revoked: " in line:
                    last = None
            out.append(last)
        return out

    def wait_balanced(self, partitions: int, timeout_s: float = 120) -> None:
        """Until every scorer owns partitions, none twice, all covered: the group is stable.

        A scorer that joins while load is offered makes the group rebalance and stall for
        seconds; latency measured through that measures the rebalance, not the pipeline.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            owned = self.owned()
            sets = [o for o in owned if o]  # all(owned): every scorer owns some
            if len(sets) == len(owned) and sum(map(len, sets)) == len(set[str]().union(*sets)) == partitions:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"scorer group not balanced after {timeout_s}s: {owned}")
            if not self.alive():
                raise RuntimeError(f"a scorer died. {self.death_report()}")
            time.sleep(0.25)

    def stop(self) -> None:
        self._stop.set()
        terminate(self.procs)


def wait_stored(run: Run, n: int, timeout_s: float, scorers: Scorers | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while run.stored() < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {run.stored()} of {n} posts stored after {timeout_s}s")
        if scorers is not None and not scorers.alive():
            raise RuntimeError(f"a scorer died. {scorers.death_report()}")
        time.sleep(0.25)


def saturation(
    base: Settings,
    ep: Endpoints,
    posts: list[Incoming],
    log_dir: Path,
    *,
    k: int = 1,
    batch: int = 64,
    wait_ms: int = 50,
    precision: str = "fp32",
    bucket: int = 0,
    **scorer_env: object,
) -> dict[str, Any]:
    """Pre-load the topic, then let K scorers drain it: posts/s between the first and last commit."""
    run = Run(base, ep)
    run.reset()
    run.gate().submit([Incoming(raw=p.raw, post=parsed(p).model_copy(), source="bench") for p in posts])
    sc = Scorers(
        run,
        k,
        log_dir,
        scorer_max_batch=batch,
        scorer_max_wait_ms=wait_ms,
        scorer_precision=precision,
        scorer_bucket_call_tokens=bucket,
        **{"scorer_threads": max(1, (os.cpu_count() or 2) // k), **scorer_env},
    )
    try:
        wait_stored(run, len(posts), 900, sc)
    finally:
        sc.stop()
    with engine_for(ep.database_url).connect() as c:
        stored = np.array(
            c.execute(text("SELECT extract(epoch FROM stored_at) FROM posts ORDER BY 1")).scalars().all(),
            dtype=np.float64,
        )
    return {
        "scorers": k,
        "batch": batch,
        "wait_ms": wait_ms,
        "precision": precision,
        "bucket": bucket,
        "posts": len(posts),
        "posts_per_s": rate_between(stored, 0.1, 0.9),
        "posts_per_s_whole_run": rate_between(stored, 0.0, 1.0),
        "peak_rss_mb": round(sc.peak_rss_mb, 1),
    }


@contextlib.contextmanager
def busy_neighbour(n: int) -> Iterator[None]:
    """``n`` processes spinning on the CPU for the duration: a co-tenant that never sleeps."""
    spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in spin:
            p.kill()
            p.wait()


def rate_between(stored_at: np.ndarray, lo: float, hi: float) -> float | None:
    """Posts/s stored after the commit holding the `lo` quantile post, up to the one holding `hi`.

    The middle 80% is the steady state, comparable with the encoder-only ceiling (timed after a
    warm-up): it leaves out the start (scorers joining the group, the first rebalance) and the
    drain (the scorer whose partitions hold fewer posts idles while the other finishes), both of
    which last about one batch time and so weigh more the larger the batch. Posts committed
    together share one timestamp, so the count is taken between commit instants.
    """
    t = np.sort(stored_at)
    if len(t) < 2:
        return None
    t0, t1 = t[int(lo * (len(t) - 1))], t[int(hi * (len(t) - 1))]
    n = int(((t > t0) & (t <= t1)).sum())
    return round(n / (t1 - t0), 1) if t1 > t0 else None


def scored_latencies(run: Run, n: int, exclude: set[str], timeout_s: float = 60) -> np.ndarray:
    """ms from ingest to publication on posts.scored (after the database commit), per post."""
    c = KafkaConsumer(bootstrap_servers=run.ep.kafka_bootstrap, group_id=None, enable_auto_commit=False)
    tps = [
        TopicPartition(run.settings.topic_scored, p)
        for p in sorted(c.partitions_for_topic(run.settings.topic_scored) or [])
    ]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    out: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            for r in recs:
                d = json.loads(r.value)
                if d.get("ingested_at") and d["post_id"] not in exclude:
                    ing = datetime.fromisoformat(d["ingested_at"].replace("Z", "+00:00")).timestamp()
                    out[d["post_id"]] = r.timestamp - ing * 1000
    c.close()
    return np.array(list(out.values()))


def latency_at(
    base: Settings,
    ep: Endpoints,
    posts: list[Incoming],
    rate: float,
    seconds: float,
    log_dir: Path,
    k: int = 1,
    **scorer_env: object,
) -> dict[str, Any]:
    """Offer `rate` posts/s for `seconds` to K warm scorers; ingest-to-stored percentiles."""
    run = Run(base, ep)
    run.reset()
    gate = run.gate()
    warm = posts[:64]
    gate.submit([Incoming(raw=p.raw, post=parsed(p).model_copy(), source="bench") for p in warm])
    sc = Scorers(run, k, log_dir, **scorer_env)
    try:
        wait_stored(run, len(warm), 300, sc)
        sc.wait_balanced(run.settings.topic_partitions)
        todo = posts[64 : 64 + int(rate * seconds)]
        t0, sent, tick = time.monotonic(), 0, 0.02
        while sent < len(todo):
            due = min(len(todo), int((time.monotonic() - t0) * rate) + 1)
            if due > sent:
                gate.submit([Incoming(raw=p.raw, post=parsed(p).model_copy(), source="bench") for p in todo[sent:due]])
                sent = due
            time.sleep(tick)
        offered = sent / (time.monotonic() - t0)
        wait_stored(run, len(warm) + len(todo), 300, sc)
    finally:
        sc.stop()
    lat = scored_latencies(run, len(todo), {parsed(p).id for p in warm})
    return {
        "offered_per_s": round(offered, 1),
        "posts": int(len(lat)),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
    }
