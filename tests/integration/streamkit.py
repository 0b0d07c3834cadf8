"""Helpers for stream integration tests: a clean slate, a scorer subprocess, waiting on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from sqlalchemy import text

from infra.local_stack import Endpoints
from services.config import STREAM_FIELDS, Settings, child_environ, settings_environ
from services.storage.db import engine_for, migrate, truncate_stream_tables
from services.stream.kafka import ensure_topics
from tests.stack import settings_for

ROOT = Path(__file__).resolve().parents[2]


def fresh_stream(ep: Endpoints, **overrides) -> Settings:
    """Settings with this test's own topics, an empty schema and an empty Redis db."""
    tag = uuid.uuid4().hex[:8]
    s = settings_for(
        ep,
        topic_raw=f"posts.raw.{tag}",
        topic_scored=f"posts.scored.{tag}",
        topic_dlq=f"posts.dlq.{tag}",
        topic_alerts=f"alerts.fired.{tag}",
        scorer_group=f"scorer-{tag}",
        state_dir=ROOT / ".voxpop" / "test",
        **overrides,
    )
    migrate(ep.database_url)
    with engine_for(ep.database_url).begin() as conn:
        truncate_stream_tables(conn, "watches", "consumer_group_epochs")
    redis.Redis.from_url(ep.redis_url).flushdb()
    ensure_topics(ep.kafka_bootstrap, s)
    return s


def airline_gate(ep: Endpoints, s: Settings):
    """An ingest gate onto `s`'s topics (airline watches seeded) and the producer behind it."""
    from services.ingest.gate import IngestGate, WatchCache
    from services.storage.watches import load_watch_specs, seed_airline_watches
    from services.stream.kafka import make_producer

    seed_airline_watches(ep.database_url)
    producer = make_producer(ep.kafka_bootstrap)
    gate = IngestGate(
        s,
        producer,
        redis.Redis.from_url(ep.redis_url),
        engine_for(ep.database_url),
        WatchCache(lambda: load_watch_specs(ep.database_url)),
    )
    return gate, producer


SCORER_FIELDS = (
    "scorer_max_batch",
    "scorer_max_wait_ms",
    "scorer_threads",
    "scorer_model",
    "scorer_precision",
    "scorer_cpus",
    "scorer_epoch_check_s",
)


def child_env(s: Settings) -> dict[str, str]:
    """A stream child's environment: the stream fields every child needs, plus the scorer's knobs."""
    return child_environ(**settings_environ(s, (*STREAM_FIELDS, *SCORER_FIELDS)))


def start_scorer(s: Settings, log_path: Path) -> subprocess.Popen:
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "score"],
        env=child_env(s),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def count(ep: Endpoints, sql: str, **params) -> int:
    with engine_for(ep.database_url).connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def wait_for(
    cond: Callable[[], bool],
    timeout_s: float,
    what: str,
    proc: subprocess.Popen | None = None,
    log_path: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text()[-3000:] if log_path else ""
            raise AssertionError(f"scorer exited with {proc.returncode} while waiting for {what}:\n{tail}")
        time.sleep(0.5)
    tail = log_path.read_text()[-3000:] if log_path else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tail}")
