"""Fault runs on the real embedded stack: posts in, stored, lost, duplicated, DLQ, recovery time.

Each scenario starts from empty tables and fresh topics on one embedded PostgreSQL, Redis and
Tansu (its own state dir) and runs the whole pipeline as `voxpop` child processes: the push
endpoint, two scorers, the reconciler, the trends worker and the alerts dispatcher, with the
airline watches, the airline alert rules and one webhook endpoint whose receiver verifies every
request with `standardwebhooks`. A client feeds real airline posts through the push endpoint at
a fixed rate (retrying what was not acknowledged, as a real client does); one fault is injected
once a quarter of them is stored; then the run waits until everything settled and counts:

* posts in = posts the push endpoint acknowledged; lost = acknowledged posts not in `posts`;
  duplicated = author post counts above the posts stored (a double-counted post bumps its
  author twice); recovery = seconds from the fault until the affected stage moves again.
* author state consistent = every (author, view) cached in Redis carries PostgreSQL's `n`.
* windows = closed hourly windows compared with a recount from `posts`/`predictions`.
* notifications = delivered (verified by the receiver) / created; dead ones are re-sent once
  the receiver is back, as an operator would with `voxpop alerts resend`.
"""

from __future__ import annotations

import faulthandler
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from kafka import KafkaProducer
from pydantic import SecretStr
from sqlalchemy import text

from infra import local_stack
from pipelines.trends.recount import closed_through, hourly_mismatches, late_explained
from services.alerts import manage
from services.alerts.policy import UrlPolicy
from services.alerts.receiver import Receiver, free_port
from services.alerts.signing import new_secret
from services.config import PROJECT_ROOT, STREAM_FIELDS, Settings, child_environ, settings_environ
from services.ingest.records import PRESETS
from services.ingest.replay import load_records
from services.storage.db import ALERT_TABLES, TREND_TABLES, engine_for, migrate, truncate_stream_tables
from services.storage.redis_keys import KEYS
from services.storage.watches import seed_airline_watches
from services.stream.kafka import ensure_topics
from services.supervisor import terminate
from services.trends.replay import AIRLINE_RULES

#: Settings the children get from the run (the rest comes from the caller's environment).
ENV_FIELDS = (
    *STREAM_FIELDS,
    "scorer_max_batch",
    "scorer_threads",
    "reconcile_grace_s",
    "reconcile_interval_s",
    "scorer_join_timeout_s",
    "scorer_av_models",
    "push_port",
    "push_api_key",
)
PROCESSES = {
    "push": ("ingest", "push"),
    "scorer0": ("score",),
    "scorer1": ("score",),
    "reconcile": ("reconcile",),
    "trends": ("trends",),
    "alerts": ("alerts", "run"),
}
LOOPBACK = ["127.0.0.1/32"]


@dataclass
class Outcome:
    scenario: str
    posts_in: int
    stored: int
    lost: int
    duplicated: int
    dlq: int
    recovery_s: float | None
    state_consistent: bool
    windows_checked: int
    window_diffs: int  # closed windows that differ from the recount
    windows_late: int  # ... of which only by posts that arrived after the close (counted in late_posts)
    notifications: int
    delivered: int
    bad_signatures: int
    seconds: float
    note: str = ""
    machine: str = ""  # where this row was measured (rows of several machines share one table)
    when: str = ""
    #: [seconds since scoring began, lag (posts), scorers' resident memory (MB)] every few seconds
    samples: list[list[float]] = field(default_factory=list)


@dataclass
class Feeder:
    """Posts batches to the push endpoint at `rate` posts/s; a batch is retried until acknowledged."""

    url: str
    key: str
    posts: list[dict[str, Any]]
    rate: float
    batch: int = 50
    acked: set[str] = field(default_factory=set)
    retries: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Feeder:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        with httpx.Client(timeout=30, headers={"X-API-Key": self.key}) as client:
            for i in range(0, len(self.posts), self.batch):
                chunk = self.posts[i : i + self.batch]
                while True:
                    try:
                        r = client.post(self.url, json=chunk)
                        if r.status_code == 200:
                            bad = {e["index"] for e in r.json()["errors"]}
                            self.acked.update(p["id"] for j, p in enumerate(chunk) if j not in bad)
                            break
                    except httpx.HTTPError:
                        pass
                    self.retries += 1
                    time.sleep(0.5)
                ahead = t0 + (i + len(chunk)) / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        self.done.set()


class Run:
    """One embedded stack shared by the scenarios; each scenario gets fresh tables and topics."""

    def __init__(self, log_dir: Path) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="voxpop-faults-"))
        self.base = Settings(state_dir=self.state, database_url=None, redis_url=None, kafka_bootstrap=None)
        self.ep = local_stack.up(self.base)
        migrate(self.ep.database_url)
        self.db = engine_for(self.ep.database_url)
        csv = self.base.data_dir / "airline-tweets" / "airline_tweets_clean.csv"
        self.posts = [
            r.post.model_dump(mode="json") for r in load_records(csv, PRESETS["airline"]) if r.post is not None
        ]
        self.log_dir = log_dir
        self.kids: dict[str, subprocess.Popen[bytes]] = {}
        self.s = self.base
        self.tag = ""

    # --- processes ------------------------------------------------------------------------------
    def settings(self) -> Settings:
        self.tag = uuid.uuid4().hex[:8]
        t = self.tag
        return self.base.model_copy(
            update={
                "database_url": self.ep.database_url,
                "redis_url": self.ep.redis_url,
                "kafka_bootstrap": self.ep.kafka_bootstrap,
                "topic_raw": f"f.raw.{t}",
                "topic_scored": f"f.scored.{t}",
                "topic_dlq": f"f.dlq.{t}",
                "topic_alerts": f"f.alerts.{t}",
                "scorer_group": f"f-{t}",
                "scorer_max_batch": 32,
                "scorer_threads": 1,
                "reconcile_grace_s": 10.0,
                "reconcile_interval_s": 5.0,
                "scorer_join_timeout_s": 45.0,
                "scorer_av_models": [],
                "push_port": free_port(),
                "push_api_key": SecretStr(secrets.token_urlsafe(24)),
            }
        )

    def env(self) -> dict[str, str]:
        return child_environ(
            VOXPOP_TRENDS_APP_ID=f"trends-{self.tag}",
            VOXPOP_TRENDS_LATENESS_S="60",
            VOXPOP_TRENDS_IDLE_S="600",
            VOXPOP_TRENDS_SESSION_TIMEOUT_S="10",
            VOXPOP_ALERTS_GROUP_WAIT_S="0",
            VOXPOP_ALERTS_ALLOW_CIDRS=json.dumps(LOOPBACK),
            **settings_environ(self.s, ENV_FIELDS),
        )

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{self.tag}-{name}.log").open("ab")
        p = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *PROCESSES[name]],
            env=self.env(),
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.kids[name] = p
        return p

    def kill(self, name: str, restart_after_s: float | None = 2.0) -> str:
        """kill -9 one child (and its process group); start it again like a supervisor would."""
        p = self.kids[name]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
        if restart_after_s is not None:
            time.sleep(restart_after_s)
            self.spawn(name)
            return f"{name} kill -9, restarted {restart_after_s:g} s later"
        return f"{name} kill -9, not restarted"

    def restart_server(self, server: str) -> float:
        """kill -9 an embedded server, start it again on the same port; returns seconds away."""
        rec = local_stack.read_state(self.state)[server]
        os.kill(rec["pid"], signal.SIGKILL)
        t = time.monotonic()
        while local_stack.pid_alive(rec["pid"], rec["exe"]):
            time.sleep(0.1)
        time.sleep(3)
        ep = local_stack.up(self.base, which=(server,))
        assert ep == self.ep, f"{server} came back elsewhere: {ep} vs {self.ep}"
        return time.monotonic() - t

    def stop_kids(self) -> None:
        terminate(list(self.kids.values()))
        self.kids.clear()

    def close(self) -> None:
        self.stop_kids()
        local_stack.down(self.base)

    # --- counts ---------------------------------------------------------------------------------
    def count(self, sql: str) -> int:
        with self.db.connect() as c:
            return int(c.execute(text(sql)).scalar_one())

    def stored(self) -> int:
        return self.count("SELECT count(*) FROM posts")

    def members(self) -> int:
        return self.count("SELECT count(*) FROM trend_members")

    def unsettled_notifications(self) -> int:
        return self.count("SELECT count(*) FROM notifications WHERE state IN ('pending', 'sending')")

    # --- one scenario ---------------------------------------------------------------------------
    def prepare(self) -> tuple[Receiver, str]:
        self.s = self.settings()
        with self.db.begin() as c:
            truncate_stream_tables(c, *TREND_TABLES, *ALERT_TABLES, "consumer_group_epochs")
        redis.Redis.from_url(self.ep.redis_url).flushdb()
        ensure_topics(self.ep.kafka_bootstrap, self.s)
        seed_airline_watches(self.ep.database_url)
        for rule in AIRLINE_RULES:
            manage.create_rule(self.db, **rule)
        secret = new_secret()
        rx = Receiver(secret)
        manage.create_endpoint(self.db, "faults", rx.url, secret=secret, policy=UrlPolicy(allow_cidrs=LOOPBACK))
        return rx, secret

    def scenario(self, sc: Scenario) -> Outcome:
        rx, _ = self.prepare()
        if not sc.receiver_down_s:
            rx.start()
        t0 = time.monotonic()
        for name in PROCESSES:
            self.spawn(name)
        posts = resample(self.posts, sc.posts)
        push_key = self.s.push_api_key
        if push_key is None:  # settings() sets one for the run's push endpoint
            raise RuntimeError("faults: no push_api_key in the run's settings")
        feeder = Feeder(
            f"http://127.0.0.1:{self.s.push_port}/ingest/posts", push_key.get_secret_value(), posts, sc.rate
        ).start()
        probe = Probe(self, feeder).start()
        deadline = t0 + sc.deadline_s
        _until(lambda: self.stored() >= len(posts) // 4, deadline)
        metric = self.members if sc.metric == "members" else self.stored
        t_fault, before = time.monotonic(), metric()
        note = sc.fault(self)
        recovery = _until(lambda: metric() > before, deadline)
        recovery = None if recovery is None else time.monotonic() - t_fault
        _until(lambda: feeder.done.is_set() and self.stored() >= len(feeder.acked), deadline)
        # Trends settles when every stored post's watch memberships are folded in.
        _until(lambda: self.members() >= self.count("SELECT count(*) FROM post_watches"), deadline)
        if sc.receiver_down_s:
            _until(lambda: False, t0 + sc.receiver_down_s)
            rx.start()
        _until(lambda: self.unsettled_notifications() == 0, time.monotonic() + 120)
        resent = manage.resend_dead(self.db)
        if resent:
            _until(lambda: self.unsettled_notifications() == 0, time.monotonic() + 300)
        time.sleep(2)
        probe.stop()
        out = self.collect(
            sc, feeder, rx, recovery, t0, note + (f"; {len(resent)} dead re-sent" if resent else "") + probe.summary()
        )
        out.samples = probe.samples()
        rx.stop()
        self.stop_kids()
        return out

    def collect(
        self, sc: Scenario, feeder: Feeder, rx: Receiver, recovery: float | None, t0: float, note: str
    ) -> Outcome:
        with self.db.connect() as c:
            stored_ids = {r[0] for r in c.execute(text("SELECT id FROM posts"))}
            bumps = int(c.execute(text("SELECT coalesce(sum(post_count), 0) FROM authors")).scalar_one())
            truth = {(a, v): n for a, v, n in c.execute(text("SELECT author_id, view, n FROM author_states"))}
            notes = [r[0] for r in c.execute(text("SELECT msg_id FROM notifications"))]
        through = closed_through(self.db, self.s.topic_scored)
        checked, diffs = hourly_mismatches(self.db, through) if through else (0, [])
        late = late_explained(self.db, through) if through and diffs else 0
        if diffs:
            (self.log_dir / f"{self.tag}-window-diffs.txt").write_text("\n".join(diffs))
        return Outcome(
            sc.name,
            len(feeder.acked),
            len(stored_ids),
            len(feeder.acked - stored_ids),
            bumps - len(stored_ids),
            _dlq_count(self.ep.kafka_bootstrap, self.s.topic_dlq),
            None if recovery is None else round(recovery, 1),
            _redis_matches(redis.Redis.from_url(self.ep.redis_url), truth),
            checked,
            len({d.split(")")[0] for d in diffs}),
            late,
            len(notes),
            len(set(notes) & {r["id"] for r in rx.ok}),
            rx.bad,
            round(time.monotonic() - t0, 1),
            note,
        )


@dataclass
class Probe:
    """Samples lag (acknowledged - stored) and the scorers' resident memory every few seconds."""

    run: Run
    feeder: Feeder
    every_s: float = 5.0
    lag: list[int] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    t_s: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Probe:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            stored = _or_none(self.run.stored)
            if not stored:  # scorers still loading their models, or PostgreSQL away: not lag
                continue
            self.lag.append(len(self.feeder.acked) - stored)
            self.rss_mb.append(sum(_rss_mb(p.pid) for n, p in list(self.run.kids.items()) if n.startswith("scorer")))
            self.t_s.append(time.monotonic())

    def stop(self) -> None:
        self._stop.set()

    def samples(self) -> list[list[float]]:
        t0 = self.t_s[0] if self.t_s else 0.0
        return [[round(t - t0, 1), lag, round(r)] for t, lag, r in zip(self.t_s, self.lag, self.rss_mb, strict=False)]

    def summary(self) -> str:
        if len(self.rss_mb) < 4:
            return ""
        return (
            f"; lag max {max(self.lag)} posts once scoring began, {self.lag[-1]} at the end; "
            + memory_note(self.samples())
            + f"; client retries {self.feeder.retries}"
        )


def memory_note(samples: list[list[float]]) -> str:
    """The scorers' memory over a load row: its floor (each minute's lowest reading) from the first
    to the last quarter, the floor's slope over the second half (the steady state: warm-up is
    over) and the highest reading. The floor, because a scorer's heap is a sawtooth: it keeps
    freed memory between batches and gives it back every VOXPOP_SCORER_TRIM_INTERVAL_S; a
    leak raises the floor, the sawtooth does not."""
    per_min: dict[int, float] = {}
    for t, _lag, rss in samples:
        per_min[int(t // 60)] = min(rss, per_min.get(int(t // 60), rss))
    mins, floor = list(per_min), list(per_min.values())
    if len(floor) < 4:
        return f"scorers' RSS up to {max(r for *_, r in samples):.0f} MB"
    q, half = max(1, len(floor) // 4), len(floor) // 2
    slope = float(np.polyfit(mins[half:], floor[half:], 1)[0]) if len(floor) - half >= 2 else 0.0
    return (
        f"scorers' RSS floor {sum(floor[:q]) / q:.0f} MB (first quarter) -> {sum(floor[-q:]) / q:.0f} MB (last "
        f"quarter), {slope:+.1f} MB/min over the second half, peak {max(r for *_, r in samples):.0f} MB"
    )


@dataclass
class Scenario:
    name: str
    fault: Callable[[Run], str]
    posts: int = 3000
    rate: float = 100.0
    metric: str = "stored"  # the stage whose recovery is timed: stored | members
    receiver_down_s: float = 0.0
    deadline_s: float = 900.0


def _until(pred: Callable[[], bool], deadline: float, every_s: float = 0.5) -> float | None:
    """Poll `pred` until true (returns the monotonic time) or the deadline passes (None)."""
    while time.monotonic() < deadline:
        try:
            if pred():
                return time.monotonic()
        except Exception:  # noqa: BLE001 (a server being restarted: keep polling)
            pass
        time.sleep(every_s)
    return None


def _or_none(f: Callable[[], int]) -> int | None:
    try:
        return f()
    except Exception:  # noqa: BLE001 (a server being restarted)
        return None


def resample(posts: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """`n` posts in time order; past the end of the stream, copies with new ids shifted in time."""
    span = datetime.fromisoformat(posts[-1]["created_at"]) - datetime.fromisoformat(posts[0]["created_at"])
    out = []
    for i in range(n):
        k, j = divmod(i, len(posts))
        p = posts[j]
        if k:
            t = datetime.fromisoformat(p["created_at"]) + k * (span + timedelta(hours=1))
            p = {**p, "id": f"{p['id']}-r{k}", "created_at": t.isoformat()}
        out.append(p)
    return out


def _rss_mb(pid: int) -> float:
    try:
        for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _redis_matches(rds: redis.Redis, truth: dict[tuple[str, str], int]) -> bool:
    """Every cached (author, view) carries PostgreSQL's n (a missing entry is reloaded on use)."""
    pipe = rds.pipeline(transaction=False)
    keys = list(truth)
    for a, v in keys:
        pipe.hget(KEYS.user_state(a, v), "n")
    return all(got is None or int(got) == truth[k] for k, got in zip(keys, pipe.execute(), strict=True))


def _dlq_count(bootstrap: str, topic: str) -> int:
    from services.stream.dlq_reader import read_dead_letters

    return len(read_dead_letters(bootstrap, topic, timeout_s=3))


def _poison(size: int) -> Callable[[Run], str]:
    def fault(run: Run) -> str:
        prod = KafkaProducer(bootstrap_servers=run.ep.kafka_bootstrap, max_request_size=32 << 20)
        prod.send(run.s.topic_raw, key=b"poison", value=b"{" + b"g" * (size - 1)).get(timeout=60)
        prod.close()
        return f"one {size / 1e6:.1f} MB record straight onto posts.raw (bypassing ingest)"

    return fault


def scenarios(webhook_down_s: float = 900, load_s: float = 600) -> list[Scenario]:
    def term_scorer(run: Run) -> str:
        p = run.kids["scorer0"]
        p.send_signal(signal.SIGTERM)
        return f"scorer0 SIGTERM -> exit {p.wait(120)}; scorer1 must stay up and take its partitions"

    def server(name: str) -> Callable[[Run], str]:
        def fault(run: Run) -> str:
            away = run.restart_server(name)
            if name == "kafka":
                ensure_topics(run.ep.kafka_bootstrap, run.s)  # a memory broker comes back empty
            return f"{name} kill -9 and restart ({away:.1f} s away)"

        return fault

    full = 14640
    return [
        Scenario("scorer kill -9", lambda r: r.kill("scorer0", restart_after_s=5)),
        Scenario("scorer SIGTERM (1 of 2)", term_scorer),
        Scenario("push ingest kill -9", lambda r: r.kill("push")),
        Scenario("reconciler kill -9", lambda r: r.kill("reconcile")),
        Scenario("trends kill -9", lambda r: r.kill("trends"), metric="members"),
        Scenario("alerts dispatcher kill -9", lambda r: r.kill("alerts"), posts=full, rate=150),
        Scenario("broker kill -9 + restart", server("kafka")),
        Scenario("PostgreSQL kill -9 + restart", server("postgres")),
        Scenario("Redis kill -9 + restart", server("redis")),
        Scenario("poison record 10 MB", _poison(10_000_000)),
        Scenario("poison record 4.2 MB", _poison(4_200_000)),
        Scenario(
            f"webhook receiver down {webhook_down_s / 60:g} min",
            lambda r: "receiver down from the start",
            posts=full,
            rate=150,
            receiver_down_s=webhook_down_s,
            deadline_s=webhook_down_s + 900,
        ),
        Scenario(
            f"100 posts/s for {load_s / 60:g} min",
            lambda r: "steady load, no fault",
            posts=int(100 * load_s),
            rate=100,
            deadline_s=load_s + 900,
        ),
    ]


def run_faults(
    only: list[str] | None = None, out: Path | None = None, webhook_down_s: float = 900, load_s: float = 600
) -> list[Outcome]:
    out = out or PROJECT_ROOT / "docs"
    log_dir = Path(tempfile.mkdtemp(prefix="voxpop-faults-logs-"))
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where a stuck run waits
    print(f"logs: {log_dir} (pid {os.getpid()})", flush=True)
    run = Run(log_dir)
    results: list[Outcome] = []
    try:
        for sc in scenarios(webhook_down_s, load_s):
            if only and not any(o.lower() in sc.name.lower() for o in only):
                continue
            print(f"--- {sc.name}", flush=True)
            results.append(run.scenario(sc))
            print(json.dumps(asdict(results[-1])), flush=True)
            write(results, out)  # a crash keeps what finished
    finally:
        run.close()
    return results


def machine_label() -> str:
    """The CPU as the bench names it, with AMX called out: it decides whether bf16 scoring keeps
    up, and two Xeons with and without it carry the same model name."""
    from services.bench.run import machine

    m = machine()
    return f"{m['cpu']}{', AMX' if 'amx_bf16' in m['isa'] else ''}, {m['cores']} cores"


def _merged(path: Path, results: list[Outcome]) -> list[Outcome]:
    """This run's outcomes over an earlier run's (`--only` re-runs one scenario). Each row keeps
    the machine and date it was measured on; rows from an older file take the file's."""
    fresh = {r.scenario for r in results}
    try:
        old = json.loads(path.read_text())
        known = {f.name for f in fields(Outcome)}
        default = {"windows_late": 0, "machine": f"{old.get('cpu', '?')}, {old.get('cores', '?')} cores"}
        default["when"] = old.get("when", "")
        keep = [
            Outcome(**{**default, **{k: v for k, v in r.items() if k in known}})
            for r in old.get("runs", [])
            if r["scenario"] not in fresh
        ]
    except (OSError, ValueError, TypeError):  # none yet, or an older format
        return results
    order = [sc.name for sc in scenarios()]
    rank = {n: i for i, n in enumerate(order)}
    return sorted([*keep, *results], key=lambda r: rank.get(r.scenario, len(order)))


def _plot_load(results: list[Outcome], path: Path) -> bool:
    """Lag and the scorers' memory over time for every row that sampled them under steady load."""
    rows = [r for r in results if r.samples and "posts/s" in r.scenario]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lag_ax, mem_ax) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    for r in rows:
        t = [x[0] / 60 for x in r.samples]
        label = f"{r.machine} ({r.when[:10]})"
        lag_ax.plot(t, [x[1] for x in r.samples], label=label)
        mem_ax.plot(t, [x[2] for x in r.samples], label=label)
    lag_ax.set_ylabel("lag (accepted - stored posts)")
    mem_ax.set_ylabel("scorers' resident memory (MB)")
    mem_ax.set_xlabel("minutes since scoring began")
    mem_ax.set_ylim(bottom=0)
    lag_ax.legend(fontsize=7)
    lag_ax.set_title("100 posts/s through the push endpoint (voxpop faults)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(results: list[Outcome], out: Path) -> None:
    """docs/reliability.json, and the measured table between the markers of docs/reliability.md."""
    now, here = datetime.now(UTC).isoformat(timespec="seconds"), machine_label()
    for r in results:
        r.machine, r.when = r.machine or here, r.when or now
    results = _merged(out / "reliability.json", results)
    (out / "reliability.json").write_text(json.dumps({"when": now, "runs": [asdict(r) for r in results]}, indent=2))
    rows = [
        "| scenario | posts in | stored | lost | duplicated | DLQ | recovery s | author state consistent "
        "| closed 1h windows = recount | webhooks delivered / created (bad signatures) | measured on | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows += [
        f"| {r.scenario} | {r.posts_in} | {r.stored} | {r.lost} | {r.duplicated} | {r.dlq} | "
        f"{'-' if r.recovery_s is None else r.recovery_s} | {'yes' if r.state_consistent else 'NO'} | "
        f"{r.windows_checked - r.window_diffs} / {r.windows_checked}"
        f"{f' ({r.windows_late} more with their late posts)' if r.windows_late else ''} | "
        f"{r.delivered} / {r.notifications} "
        f"({r.bad_signatures}) | {r.machine}, {r.when[:10]} | {r.note} |"
        for r in results
    ]
    table = "\n".join(rows)
    plot = out / "reliability" / "load.png"
    figure = "\n\n![lag and memory under steady load](reliability/load.png)" if _plot_load(results, plot) else ""
    doc = out / "reliability.md"
    text_ = doc.read_text() if doc.exists() else "# Reliability\n"
    start, end = "<!-- faults:begin -->", "<!-- faults:end -->"
    block = (
        f"{start}\n## Measured fault runs (`voxpop faults`)\n\nEmbedded PostgreSQL, Redis and Tansu; the push "
        "endpoint, two scorers (one thread each), the reconciler, the trends worker and the alerts dispatcher as "
        "processes; real airline posts fed through the push endpoint. Each row names the machine it was measured "
        f"on (`voxpop faults --only NAME` re-runs one row).\n\n{table}{figure}\n{end}"
    )
    if start in text_:
        text_ = text_[: text_.index(start)] + block + text_[text_.index(end) + len(end) :]
    else:
        text_ = text_.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text_)
