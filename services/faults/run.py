"""Fault runs on the real embedded stack: posts in, stored, lost, duplicated, DLQ, recovery time.

Each scenario starts from empty tables and fresh topics on one embedded PostgreSQL, Redis and
Tansu (its own state dir), runs two scorers and the reconciler as `voxpop` child processes,
ingests real airline posts through the gate, injects one fault while they are being scored,
then waits until every accepted post is stored (or a deadline) and counts from PostgreSQL.

* lost = accepted posts not in `posts`; duplicated = author post counts above the posts stored
  (a double-counted post bumps its author twice); recovery = seconds from the fault until the
  stored count moves again.
* per-author state consistent = every (author, view) in Redis has PostgreSQL's `n`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
from sqlalchemy import text

from infra import local_stack
from services.config import PROJECT_ROOT, Settings
from services.ingest.gate import IngestGate
from services.ingest.records import PRESETS
from services.ingest.replay import load_records
from services.storage.db import engine_for, migrate, truncate_stream_tables
from services.storage.redis_keys import KEYS
from services.stream.kafka import ensure_topics, make_producer
from services.supervisor import terminate

ENV_FIELDS = ("database_url", "redis_url", "kafka_bootstrap", "topic_raw", "topic_scored", "topic_dlq",
              "topic_alerts", "scorer_group", "data_dir", "scorer_max_batch", "scorer_threads",
              "reconcile_grace_s", "reconcile_interval_s", "scorer_join_timeout_s", "scorer_av_models")


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
    seconds: float
    note: str = ""


class Run:
    """One embedded stack shared by the scenarios; each scenario gets fresh tables and topics."""

    def __init__(self, posts: int, log_dir: Path) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="voxpop-faults-"))
        self.base = Settings(state_dir=self.state, database_url=None, redis_url=None, kafka_bootstrap=None)
        self.ep = local_stack.up(self.base)
        migrate(self.ep.database_url)
        self.db = engine_for(self.ep.database_url)
        csv = self.base.data_dir / "airline-tweets" / "airline_tweets_clean.csv"
        self.records = [r for r in load_records(csv, PRESETS["airline"], limit=posts) if r.post is not None]
        self.log_dir = log_dir
        self.kids: list[subprocess.Popen] = []

    def settings(self) -> Settings:
        tag = uuid.uuid4().hex[:8]
        return self.base.model_copy(update={
            "database_url": self.ep.database_url, "redis_url": self.ep.redis_url,
            "kafka_bootstrap": self.ep.kafka_bootstrap, "topic_raw": f"f.raw.{tag}", "topic_scored": f"f.scored.{tag}",
            "topic_dlq": f"f.dlq.{tag}", "topic_alerts": f"f.alerts.{tag}", "scorer_group": f"f-{tag}",
            "scorer_max_batch": 32, "scorer_threads": 1, "reconcile_grace_s": 10.0, "reconcile_interval_s": 5.0,
            "scorer_join_timeout_s": 45.0, "scorer_av_models": []})

    def spawn(self, s: Settings, name: str, *argv: str) -> subprocess.Popen:
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        for f in ENV_FIELDS:
            v = getattr(s, f)
            env[f"VOXPOP_{f.upper()}"] = json.dumps(v) if isinstance(v, list) else str(v)
        log = (self.log_dir / f"{name}.log").open("ab")
        p = subprocess.Popen([sys.executable, "-m", "services.cli", *argv], env=env, cwd=PROJECT_ROOT,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.kids.append(p)
        return p

    def stored(self) -> int:
        with self.db.connect() as c:
            return int(c.execute(text("SELECT count(*) FROM posts")).scalar_one())

    def scenario(self, name: str, fault: Callable[[Settings, list[subprocess.Popen]], str], deadline_s: float = 600
                 ) -> Outcome:
        s = self.settings()
        with self.db.begin() as c:
            truncate_stream_tables(c, "consumer_group_epochs")
        redis.Redis.from_url(self.ep.redis_url).flushdb()
        ensure_topics(self.ep.kafka_bootstrap, s)
        t0 = time.monotonic()
        scorers = [self.spawn(s, f"{name}-scorer{i}", "score") for i in range(2)]
        self.spawn(s, f"{name}-reconcile", "reconcile")
        gate = IngestGate(s, make_producer(self.ep.kafka_bootstrap), redis.Redis.from_url(self.ep.redis_url), self.db)
        accepted = 0
        for i in range(0, len(self.records), 500):
            accepted += len(gate.submit(self.records[i:i + 500]).accepted)
        while self.stored() < accepted // 4 and time.monotonic() - t0 < deadline_s:
            time.sleep(0.5)
        note = fault(s, scorers)
        t_fault, before = time.monotonic(), self.stored()
        recovery = None
        while time.monotonic() - t0 < deadline_s:
            n = self.stored()
            if recovery is None and n > before:
                recovery = time.monotonic() - t_fault
            if n >= accepted:
                break
            time.sleep(0.5)
        time.sleep(2)
        stored = self.stored()
        with self.db.connect() as c:
            bumps = int(c.execute(text("SELECT coalesce(sum(post_count), 0) FROM authors")).scalar_one())
            truth = {(a, v): n for a, v, n in c.execute(text("SELECT author_id, view, n FROM author_states"))}
        consistent = _redis_matches(redis.Redis.from_url(self.ep.redis_url), truth)
        dlq = _dlq_count(self.ep.kafka_bootstrap, s.topic_dlq)
        self.stop_kids()
        return Outcome(name, accepted, stored, accepted - stored, bumps - stored, dlq,
                       None if recovery is None else round(recovery, 1), consistent,
                       round(time.monotonic() - t0, 1), note)

    def stop_kids(self) -> None:
        terminate(self.kids)
        self.kids.clear()

    def restart(self, server: str, sig: int = signal.SIGKILL) -> float:
        """kill `server` with `sig`, start it again (same port); returns the seconds it was away."""
        rec = local_stack.read_state(self.state)[server]
        os.kill(rec["pid"], sig)
        t = time.monotonic()
        while local_stack.pid_alive(rec["pid"], rec["exe"]):
            time.sleep(0.1)
        time.sleep(3)
        ep = local_stack.up(self.base, which=(server,))
        assert ep == self.ep, f"{server} came back elsewhere: {ep} vs {self.ep}"
        return time.monotonic() - t

    def close(self) -> None:
        self.stop_kids()
        local_stack.down(self.base)


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


def scenarios(run: Run) -> dict[str, Callable[[Settings, list[subprocess.Popen]], str]]:
    def kill_scorer(_s, scorers):
        scorers[0].kill()
        return "scorer 0 kill -9; the other takes over its partitions after the session timeout"

    def term_scorer(_s, scorers):
        scorers[0].send_signal(signal.SIGTERM)
        return f"scorer 0 SIGTERM -> exit {scorers[0].wait(120)}; the other must stay up"

    def broker(s, _scorers):
        away = run.restart("kafka")
        ensure_topics(run.ep.kafka_bootstrap, s)  # a memory broker comes back empty
        return f"Tansu kill -9 and restart ({away:.1f} s away, topics recreated empty)"

    def postgres(_s, _scorers):
        return f"PostgreSQL kill -9 and restart ({run.restart('postgres'):.1f} s away)"

    def redis_(_s, _scorers):
        return f"Redis kill -9 and restart ({run.restart('redis'):.1f} s away)"

    return {"scorer kill -9": kill_scorer, "scorer SIGTERM (1 of 2)": term_scorer, "broker kill -9 + restart": broker,
            "PostgreSQL kill -9 + restart": postgres, "Redis kill -9 + restart": redis_}


def run_faults(posts: int = 3000, only: list[str] | None = None, out: Path | None = None) -> list[Outcome]:
    out = out or PROJECT_ROOT / "docs"
    log_dir = Path(tempfile.mkdtemp(prefix="voxpop-faults-logs-"))
    run = Run(posts, log_dir)
    results: list[Outcome] = []
    try:
        for name, fault in scenarios(run).items():
            if only and not any(o.lower() in name.lower() for o in only):
                continue
            print(f"--- {name}", flush=True)
            results.append(run.scenario(name, fault))
            print(json.dumps(asdict(results[-1])), flush=True)
            write(results, out)  # a crash keeps what finished
    finally:
        run.close()
    return results


def write(results: list[Outcome], out: Path) -> None:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU")
    meta = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "cpu": cpu, "cores": os.cpu_count()}
    (out / "reliability.json").write_text(json.dumps({**meta, "runs": [asdict(r) for r in results]}, indent=2))
    rows = ["| scenario | posts in | stored | lost | duplicated | DLQ | recovery s | author state consistent | note |",
            "|---|---|---|---|---|---|---|---|---|"]
    rows += [f"| {r.scenario} | {r.posts_in} | {r.stored} | {r.lost} | {r.duplicated} | {r.dlq} | "
             f"{'-' if r.recovery_s is None else r.recovery_s} | {'yes' if r.state_consistent else 'NO'} | {r.note} |"
             for r in results]
    table = "\n".join(rows)
    doc = out / "reliability.md"
    text_ = doc.read_text() if doc.exists() else "# Reliability\n"
    start, end = "<!-- faults:begin -->", "<!-- faults:end -->"
    block = (f"{start}\n## Measured fault runs (`voxpop faults`)\n\n{meta['when']}, {meta['cpu']}, "
             f"{meta['cores']} cores; embedded PostgreSQL, Redis and Tansu; two scorers (one thread each) and the "
             f"reconciler; real airline posts.\n\n{table}\n{end}")
    if start in text_:
        text_ = text_[:text_.index(start)] + block + text_[text_.index(end) + len(end):]
    else:
        text_ = text_.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text_)
