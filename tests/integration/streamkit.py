"""Helpers for stream integration tests: a clean slate, a scorer subprocess, waiting on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from sqlalchemy import text

from infra.local_stack import Endpoints
from services.config import Settings
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


def child_env(s: Settings) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    for name in (
        "database_url",
        "redis_url",
        "kafka_bootstrap",
        "topic_raw",
        "topic_scored",
        "topic_dlq",
        "topic_alerts",
        "scorer_group",
        "scorer_max_batch",
        "scorer_max_wait_ms",
        "data_dir",
        "scorer_threads",
        "scorer_model",
        "scorer_precision",
        "scorer_cpus",
        "scorer_epoch_check_s",
    ):
        v = getattr(s, name)
        if v is not None:
            env[f"VOXPOP_{name.upper()}"] = str(v)
    return env


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
