"""`voxpop up`: servers, migrations, then every service as a child process with one log view.

Children get the resolved server URLs in their environment, so they never start servers of
their own. Their output is prefixed with the service name. Ctrl-C (or SIGTERM) stops the
children gracefully (SIGTERM, then SIGKILL after a grace period), then the embedded servers.
A child that crashes is restarted with backoff; a replay that finishes is simply done.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.retry import delay_after, exponential
from services.config import Settings, child_environ
from services.ingest.sources import LIVE_SOURCES

log = logging.getLogger("voxpop.up")
COLOURS = ["\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m", "\033[37m"]
RESET = "\033[0m"
RESTART_BACKOFF = exponential(1.0, 30.0)  # a crashed child waits 1, 2, 4 ... 30 s before each restart


@dataclass
class Child:
    name: str
    argv: list[str]
    restart: bool = True
    env: dict[str, str] = field(default_factory=dict)  # on top of the supervisor's environment
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    done: bool = False
    colour: str = field(default="")


def one_core_each(n: int) -> list[dict[str, str]]:
    """Per scorer, the env that pins its model thread to a core of its own, when there is one per core.

    The OS otherwise moves the encoder thread between cores and its L2 goes cold (the scorer
    layouts of docs/performance.md).
    """
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if n < 2 or len(cores) != n:
        return [{} for _ in range(n)]
    return [{"VOXPOP_SCORER_CPUS": f"[{c}]"} for c in cores]


def plan_children(settings: Settings, source: str, speed: float) -> list[Child]:
    cli = [sys.executable, "-m", "services.cli"]
    n = settings.scorer_processes or max(1, min(os.cpu_count() or 1, settings.topic_partitions))
    threads = settings.scorer_threads or max(1, (os.cpu_count() or 1) // n)
    cores = one_core_each(n)
    kids = [
        Child(
            "scorer" if n == 1 else f"scorer{i}",
            cli + ["score"],
            env={} if n == 1 else {"VOXPOP_SCORER_THREADS": str(threads), **cores[i]},
        )
        for i in range(n)
    ]
    kids += [
        Child("reconc", cli + ["reconcile"]),
        Child("trends", cli + ["trends"]),
        Child("alerts", cli + ["alerts", "run"]),
        Child("api", cli + ["api"]),
        Child("sched", cli + ["scheduler"]),
    ]
    airline = settings.data_dir / "airline-tweets" / "airline_tweets_clean.csv"
    if source == "auto":
        source = "airline" if airline.exists() else "jetstream"
    if source == "airline":
        kids.append(
            Child(
                "ingest",
                cli + ["ingest", "replay", str(airline), "--preset", "airline", "--speed", str(speed)],
                restart=False,
            )
        )
    elif source in LIVE_SOURCES:
        kids.append(Child("ingest", cli + ["ingest", source]))
    elif source != "none":
        raise ValueError(f"unknown source {source!r}: auto, airline, none or one of {sorted(LIVE_SOURCES)}")
    for i, k in enumerate(kids):
        k.colour = COLOURS[i % len(COLOURS)] if sys.stdout.isatty() else ""
    return kids


def _pipe_output(child: Child) -> None:
    assert child.proc is not None and child.proc.stdout is not None
    tag = f"{child.colour}{child.name:>7}{RESET if child.colour else ''} | "
    for line in iter(child.proc.stdout.readline, b""):
        sys.stdout.write(tag + line.decode("utf-8", "replace"))
        sys.stdout.flush()


def _start(child: Child, env: dict[str, str]) -> None:
    child.proc = subprocess.Popen(
        child.argv, env={**env, **child.env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    threading.Thread(target=_pipe_output, args=(child,), daemon=True).start()
    log.info("started %s (pid %d)", child.name, child.proc.pid)


def terminate(procs: Sequence[subprocess.Popen[Any]], grace_s: float = 60.0) -> None:
    """SIGTERM every process still running, then SIGKILL whatever has not exited after `grace_s`."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


def _stop_all(kids: list[Child], grace_s: float = 20.0) -> None:
    for k in kids:
        if k.proc and k.proc.poll() is None:
            k.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for k in kids:
        if k.proc and k.proc.poll() is None:
            try:
                k.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", k.name, grace_s)
                k.proc.kill()


def run_up(settings: Settings, speed: float = 600.0, source: str = "auto", keep_servers: bool = False) -> int:
    from infra.local_stack import SERVERS, down, read_state, resolve_endpoints
    from services.storage.db import migrate
    from services.storage.watches import seed_airline_watches
    from services.stream.kafka import ensure_topics

    already = set(read_state(settings.state_dir))  # servers an earlier `services up` started: leave them
    ep = resolve_endpoints(settings)
    migrate(ep.database_url)
    ensure_topics(ep.kafka_bootstrap, settings)
    if (settings.data_dir / "airline-tweets").exists() and source in ("auto", "airline"):
        seed_airline_watches(ep.database_url)
    env = child_environ(
        VOXPOP_DATABASE_URL=ep.database_url, VOXPOP_REDIS_URL=ep.redis_url, VOXPOP_KAFKA_BOOTSTRAP=ep.kafka_bootstrap
    )
    kids = plan_children(settings, source, speed)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "VoxPop is up: PostgreSQL %s, Redis %s, Kafka %s. Ctrl-C stops everything.",
        ep.database_url.rsplit("@", 1)[-1],
        ep.redis_url.rsplit("@", 1)[-1],
        ep.kafka_bootstrap,
    )
    log.info("dashboard: http://%s:%d", settings.api_host, settings.api_port)
    for k in kids:
        _start(k, env)
    try:
        while not stop.wait(0.5):
            for k in kids:
                if k.done or k.proc is None or k.proc.poll() is None:
                    continue
                rc = k.proc.returncode
                if not k.restart and rc == 0:
                    log.info("%s finished", k.name)
                    k.done = True
                elif k.restarts >= 5:
                    log.error("%s exited %d five times; leaving it stopped", k.name, rc)
                    k.done = True
                elif k.next_start == 0.0:
                    k.next_start = time.monotonic() + delay_after(RESTART_BACKOFF, k.restarts + 1)
                    log.warning("%s exited with %d; restarting", k.name, rc)
                elif time.monotonic() >= k.next_start:
                    k.restarts += 1
                    k.next_start = 0.0
                    _start(k, env)
    finally:
        log.info("stopping services ...")
        _stop_all(kids)
        if not keep_servers:
            stopped = down(settings, which=[n for n in SERVERS if n not in already])
            if stopped:
                log.info("stopped embedded %s", ", ".join(stopped))
    return 0
