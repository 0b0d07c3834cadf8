"""Real servers for integration tests, isolated per test session.

Why: integration tests must hit real PostgreSQL, Redis and a Kafka-protocol broker, on the project's
machines (PostgreSQL at 127.0.0.1:5432, Redis at 127.0.0.1:6379, no Kafka) and on fresh ones alike,
without two runs seeing each other's rows, keys or topics.

* Kafka: always a fresh Tansu on a free port for this session (stopped at the end), unless
  `VOXPOP_TEST_KAFKA_BOOTSTRAP` names a broker to use instead.
* PostgreSQL: server from `VOXPOP_DATABASE_URL`, else 127.0.0.1:5432 if reachable (trust auth),
  else an embedded one. On a shared server the session gets a fresh database
  `voxpop_test_<epoch>_<hex>`, dropped at the end (or, without CREATEDB rights, a fresh schema put
  first on the search_path through the URL's `options`). Leftovers older than a day are swept.
* Redis: `VOXPOP_REDIS_URL`, else 127.0.0.1:6379 if reachable, else embedded. On a shared server the
  session claims an empty db number 1-15 (marker key `voxpop:test:claim`) and FLUSHDBs it at the end.

Use the `stack_endpoints` / `stack_settings` fixtures (import them into conftest.py), or call
`get_test_endpoints()` directly; both share one stack per process, torn down at session end or exit.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from infra import local_stack
from infra.local_stack import Endpoints
from services.config import Settings

log = logging.getLogger("voxpop.tests.stack")

LOCAL_PG = ("127.0.0.1", 5432)
LOCAL_REDIS = ("127.0.0.1", 6379)
CLAIM_KEY = "voxpop:test:claim"
_DB_PREFIX = "voxpop_test_"
_STALE_AFTER_S = 24 * 3600

_lock = threading.Lock()
_endpoints: Endpoints | None = None
_cleanups: list[Callable[[], None]] = []


def _reachable(addr: tuple[str, int], timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(addr, timeout=timeout):
            return True
    except OSError:
        return False


def _with_database(url: str, database: str, query: str = "") -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}", query=query or parts.query))


def _embedded_settings() -> Settings:
    """A throw-away state dir for the embedded servers this session starts."""
    state = Path(tempfile.mkdtemp(prefix="voxpop-test-stack-"))
    settings = Settings(state_dir=state, database_url=None, redis_url=None, kafka_bootstrap=None)

    def _stop() -> None:
        local_stack.down(settings)
        shutil.rmtree(state, ignore_errors=True)

    _cleanups.append(_stop)
    return settings


# --- PostgreSQL ---------------------------------------------------------------------------------


def _local_pg_url() -> str | None:
    """The machine's server at 127.0.0.1:5432, with the first role/database trust auth lets in."""
    if not _reachable(LOCAL_PG):
        return None
    for user in dict.fromkeys(("postgres", "root", getpass.getuser())):
        for db in ("test", "postgres"):
            url = f"postgresql+psycopg://{user}@{LOCAL_PG[0]}:{LOCAL_PG[1]}/{db}"
            if local_stack.healthy("postgres", url, timeout_s=2.0):
                return url
    return None


def _isolated_pg(server_url: str) -> str:
    """A fresh database on `server_url` (or a fresh schema when we may not create databases)."""
    import psycopg
    from psycopg import sql

    name = f"{_DB_PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
    libpq = local_stack._libpq_url(server_url)
    with psycopg.connect(libpq, autocommit=True, connect_timeout=5) as conn:
        _sweep_stale_databases(conn)
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
            _cleanups.append(lambda: _drop(libpq, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE"), name))
            log.info("postgres: test schema %s on %s", name, local_stack.mask_url(server_url))
            return _with_database(server_url, urlsplit(server_url).path.lstrip("/"),
                                  "options=" + quote(f"-csearch_path={name}"))  # fmt: skip
    _cleanups.append(lambda: _drop(libpq, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)"), name))
    log.info("postgres: test database %s on %s", name, local_stack.mask_url(server_url))
    return _with_database(server_url, name)


def _drop(libpq_url: str, stmt: object, name: str) -> None:
    import psycopg
    from psycopg import sql

    assert isinstance(stmt, sql.SQL)
    with psycopg.connect(libpq_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(stmt.format(sql.Identifier(name)))


def _sweep_stale_databases(conn: object) -> None:
    """Drop test databases left by sessions killed more than a day ago (name carries the epoch)."""
    from psycopg import Connection, sql

    assert isinstance(conn, Connection)
    like = (_DB_PREFIX + "%",)
    rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", like).fetchall()
    for (name,) in rows:
        try:
            born = int(name[len(_DB_PREFIX) :].split("_")[0])
        except ValueError:
            continue
        if time.time() - born > _STALE_AFTER_S:
            with contextlib.suppress(Exception):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _test_database_url(embedded: Callable[[], Settings]) -> str:
    server = os.environ.get("VOXPOP_DATABASE_URL") or _local_pg_url()
    if server:
        return _isolated_pg(server)
    return local_stack.up(embedded(), which=("postgres",)).database_url  # fresh cluster: already isolated


# --- Redis --------------------------------------------------------------------------------------


def _claim_redis_db(server_url: str) -> str:
    """Claim an empty db 1-15 on a shared Redis; FLUSHDB it at the end."""
    import redis

    token = f"{os.getpid()}:{secrets.token_hex(4)}"
    parts = urlsplit(server_url)
    for db in range(1, 16):
        url = urlunsplit(parts._replace(path=f"/{db}"))
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            if not client.set(CLAIM_KEY, token, nx=True, ex=6 * 3600):
                continue
            if client.dbsize() != 1:  # someone else's data lives here
                if client.get(CLAIM_KEY) == token.encode():
                    client.delete(CLAIM_KEY)
                continue
        except redis.ResponseError:  # fewer databases configured
            break
        finally:
            client.close()
        _cleanups.append(lambda u=url: _flush_redis(u))
        log.info("redis: test db %d on %s", db, local_stack.mask_url(server_url))
        return url
    raise RuntimeError(f"no empty Redis db (1-15) to claim on {local_stack.mask_url(server_url)}")


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.flushdb()
    finally:
        client.close()


def _test_redis_url(embedded: Callable[[], Settings]) -> str:
    server = os.environ.get("VOXPOP_REDIS_URL")
    if not server and _reachable(LOCAL_REDIS):
        candidate = f"redis://{LOCAL_REDIS[0]}:{LOCAL_REDIS[1]}/0"
        server = candidate if local_stack.healthy("redis", candidate, timeout_s=2.0) else None
    if server:
        return _claim_redis_db(server)
    return local_stack.up(embedded(), which=("redis",)).redis_url  # fresh server: already isolated


# --- public -------------------------------------------------------------------------------------


def get_test_endpoints() -> Endpoints:
    """Start (once per process) and return this test session's isolated servers."""
    global _endpoints
    with _lock:
        if _endpoints is not None:
            return _endpoints
        settings: Settings | None = None

        def embedded() -> Settings:
            nonlocal settings
            if settings is None:
                settings = _embedded_settings()
            return settings

        atexit.register(shutdown_test_endpoints)
        try:
            kafka = os.environ.get("VOXPOP_TEST_KAFKA_BOOTSTRAP") or ""
            if not kafka:
                kafka = local_stack.up(embedded(), which=("kafka",)).kafka_bootstrap
            database_url = _test_database_url(embedded)
            redis_url = _test_redis_url(embedded)
        except BaseException:
            _run_cleanups()
            raise
        _endpoints = Endpoints(database_url=database_url, redis_url=redis_url, kafka_bootstrap=kafka)
        return _endpoints


def shutdown_test_endpoints() -> None:
    """Drop the session's database, flush its Redis db, stop the servers it started. Idempotent."""
    global _endpoints
    with _lock:
        _run_cleanups()
        _endpoints = None


def _run_cleanups() -> None:
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception:  # noqa: BLE001 - one failed cleanup must not skip the others
            log.exception("test stack cleanup failed")


def settings_for(endpoints: Endpoints, **overrides: object) -> Settings:
    """Settings pointing at `endpoints` (plus any field overrides) for code under test."""
    return Settings(
        database_url=endpoints.database_url,
        redis_url=endpoints.redis_url,
        kafka_bootstrap=endpoints.kafka_bootstrap,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
def stack_endpoints() -> Iterator[Endpoints]:
    yield get_test_endpoints()
    shutdown_test_endpoints()


@pytest.fixture(scope="session")
def stack_settings(stack_endpoints: Endpoints) -> Settings:
    return settings_for(stack_endpoints)
