"""The embedded stack for real: start all three servers, use them, stop them, check nothing is left."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from infra import local_stack
from services.config import Settings
from tests.stack import get_test_endpoints

pytestmark = pytest.mark.integration


def _settings(tmp_path: Path, redis_url: str | None = None) -> Settings:
    """Embedded everything (whatever VOXPOP_* says) except what the test names."""
    state = tmp_path / "state"
    return Settings(state_dir=state, database_url=None, redis_url=redis_url, kafka_bootstrap=None)


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    # zombies awaiting their reaper still count as group members for a moment
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        live = []
        for p in pids:
            try:
                stat = Path(f"/proc/{p}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                live.append(p)
        if not live:
            return True
        time.sleep(0.1)
    return False


def test_embedded_stack_up_use_status_down(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    try:
        ep = local_stack.up(settings)
        state = local_stack.read_state(settings.state_dir)
        timings = {name: state[name]["startup_s"] for name in local_stack.SERVERS}
        print(f"startup seconds: {timings}")
        assert ep.database_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
        assert ep.database_url.endswith("/voxpop")
        assert ep.redis_url.startswith("redis://127.0.0.1:")

        # idempotent: a second up reuses the same processes
        assert local_stack.up(settings) == ep
        assert {n: local_stack.read_state(settings.state_dir)[n]["pid"] for n in state} == {
            n: state[n]["pid"] for n in state
        }

        _roundtrip_postgres(ep.database_url)
        _roundtrip_redis(ep.redis_url)
        _roundtrip_kafka(ep.kafka_bootstrap)

        st = local_stack.status(settings)
        assert all(st[n]["running"] and st[n]["healthy"] and st[n]["embedded"] for n in local_stack.SERVERS)
        pids = {n: st[n]["pid"] for n in local_stack.SERVERS}
    finally:
        stopped = local_stack.down(settings)

    assert sorted(stopped) == sorted(local_stack.SERVERS)
    for name, pid in pids.items():
        assert not local_stack.pid_alive(pid), f"{name} pid {pid} still running"
        assert _group_gone(pid), f"{name}: processes of group {pid} still running"
    st = local_stack.status(settings)
    assert not any(st[n]["running"] for n in local_stack.SERVERS)
    assert local_stack.read_state(settings.state_dir) == {}


def test_stale_record_is_replaced(tmp_path: Path) -> None:
    """A recorded pid that is gone is ignored: status says not running, up starts a fresh server."""
    settings = _settings(tmp_path)
    try:
        first = local_stack.up(settings, which=("redis",))
        pid = local_stack.read_state(settings.state_dir)["redis"]["pid"]
        os.kill(pid, 9)
        deadline = time.monotonic() + 5
        while local_stack.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not local_stack.status(settings)["redis"]["running"]
        second = local_stack.up(settings, which=("redis",))
        assert second.redis_url and local_stack.read_state(settings.state_dir)["redis"]["pid"] != pid
        assert first.database_url == "" and first.kafka_bootstrap == ""
    finally:
        local_stack.down(settings)


def test_external_url_is_not_started(tmp_path: Path) -> None:
    external = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings = _settings(tmp_path, redis_url=external)
    ep = local_stack.up(settings, which=("redis",))
    assert ep.redis_url == external
    assert "redis" not in local_stack.read_state(settings.state_dir)
    st = local_stack.status(settings)["redis"]
    assert st["embedded"] is False and st["healthy"] is False


def test_session_endpoints_are_isolated() -> None:
    ep = get_test_endpoints()
    assert get_test_endpoints() is ep
    _roundtrip_postgres(ep.database_url)
    _roundtrip_redis(ep.redis_url)
    _roundtrip_kafka(ep.kafka_bootstrap)


def _roundtrip_postgres(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE IF NOT EXISTS stack_probe (k text PRIMARY KEY, v int)"))
            conn.execute(sa.text("INSERT INTO stack_probe VALUES ('a', 42) ON CONFLICT (k) DO NOTHING"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT v FROM stack_probe WHERE k = 'a'")).scalar_one() == 42
    finally:
        engine.dispose()


def _roundtrip_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.set("stack:probe", "ok", ex=60)
        assert client.get("stack:probe") == b"ok"
    finally:
        client.close()


def _roundtrip_kafka(bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"stack-probe-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer.send(topic, key=b"k", value=b"hello").get(timeout=10)
        consumer.assign([TopicPartition(topic, 0)])
        first = next(iter(consumer), None)  # consumer_timeout_ms bounds the wait
        assert first is not None and (first.key, first.value) == (b"k", b"hello")
    finally:
        consumer.close()
        producer.close()
        admin.close()
