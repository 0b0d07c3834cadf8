"""`voxpop bench scale`: how the stream scales out, measured on this machine in one run.

Phases (saved after each into performance.json's ``scale``; ``--only`` re-runs one): ``ingest``
(posts onto the broker, posts/s), ``trends`` (the trends fold, one worker process, then two, as a
ratio), ``api`` (the posts, predictions and memberships stored with COPY, then ``/api/trends`` at
16 connections over them, 30 days in hourly buckets). The posts are resampled from the real
airline and SemEval streams: their texts, labels, scores and airlines (the watches), authors with
the real stream's per-author frequencies (real authors cloned as the stream grows), times over 30
days on the airline stream's hours of day.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

from pipelines.trends.airline import AIRLINES
from services.bench import SCALE_PHASES
from services.config import Settings, child_environ

log = logging.getLogger("voxpop.bench")

PARTITIONS = 4  # posts.scored partitions in the trends runs (two per worker with two workers)
SOURCE = "bench-scale"
END = datetime(2026, 1, 31, tzinfo=UTC)  # the synthetic stream's last instant (data time)
DAYS = 30
FIREHOSE = 5000  # posts/s the capacity arithmetic is for


@dataclass
class Synthetic:
    """Column arrays of the resampled posts, in event-time order."""

    ids: list[str]
    authors: list[str]
    created: np.ndarray  # epoch seconds
    watches: np.ndarray  # 1-based watch ids (the airlines)
    labels: list[str]
    scores: np.ndarray
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def scored_json(self, i: int) -> bytes:
        t = datetime.fromtimestamp(float(self.created[i]), tz=UTC).isoformat()
        lab, s = self.labels[i], float(self.scores[i])
        p = {"negative": max(0.0, -s), "positive": max(0.0, s)}
        p["neutral"] = 1.0 - p["negative"] - p["positive"]
        return json.dumps(
            {
                "post_id": self.ids[i],
                "author_id": self.authors[i],
                "created_at": t,
                "watches": [int(self.watches[i])],
                "model_name": "bench",
                "model_version": "1",
                "label": lab,
                "probabilities": p,
                "score": s,
            }
        ).encode()


def _real_rows(data_dir: Path) -> tuple[list[tuple[str, str, int, str, float, str]], np.ndarray]:
    """(author, airline watch, hour of day, label, score, text) of the real streams, and the airline
    stream's hour-of-day weights."""
    ids = {a: i + 1 for i, a in enumerate(AIRLINES)}
    rows, hours = [], np.zeros(24)
    with (data_dir / "airline-tweets" / "airline_tweets_clean.csv").open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            lab = r["airline_sentiment"]
            c = float(r.get("airline_sentiment_confidence") or 1.0)
            s = {"negative": -c, "positive": c}.get(lab, 0.0)
            h = datetime.fromisoformat(r["created_at"]).astimezone(UTC).hour
            hours[h] += 1
            rows.append((f"twitter:{r['user'].lower()}", str(ids[r["airline"]]), h, lab, s, r["text"]))
    for path in sorted((data_dir / "semeval-twitter").glob("twitter-*-A.txt")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1] in ("negative", "neutral", "positive"):
                s = {"negative": -0.8, "positive": 0.8}.get(parts[1], 0.0)
                rows.append(("", "", -1, parts[1], s, parts[2]))
    return rows, hours / hours.sum()


def synthetic(data_dir: Path, n: int, seed: int = 24) -> Synthetic:
    """``n`` posts resampled from the real streams (deterministic for a seed); vectorised, seconds per million."""
    rows, hour_w = _real_rows(data_dir)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(rows), n)
    airline = [r for r in rows if r[1]]
    # authors: the real stream's own per-author frequencies (each post's author drawn as a real
    # post's author), each real author cloned into n / len(airline) accounts so the pool grows with n
    clones = max(1, n // len(airline))
    author_pick = rng.integers(0, len(airline), n)
    author_clone = rng.integers(0, clones, n)
    watch_pick = rng.integers(0, len(airline), n)
    day = rng.integers(0, DAYS, n)
    hour = rng.choice(24, n, p=hour_w)
    created = (END - timedelta(days=DAYS)).timestamp() + day * 86400 + hour * 3600 + rng.uniform(0, 3600, n)
    order = np.argsort(created, kind="stable")
    created, pick, watch_pick = created[order], pick[order], watch_pick[order]
    author_pick, author_clone = author_pick[order], author_clone[order]
    watches = np.array([int(airline[j][1]) for j in watch_pick])
    return Synthetic(
        ids=[f"bench:{i}" for i in range(n)],
        authors=[f"{airline[j][0]}~{c}" for j, c in zip(author_pick.tolist(), author_clone.tolist(), strict=True)],
        created=created,
        watches=watches,
        labels=[rows[j][3] for j in pick.tolist()],
        scores=np.array([rows[j][4] for j in pick.tolist()]),
        texts=[rows[j][5] for j in pick.tolist()],
    )


def at_rate(posts: Synthetic, rate: float | None) -> Synthetic:
    """The same posts with their event times squeezed to ``rate`` posts/s (order and hour-of-day
    shape kept, ending at END): a firehose's density, where one window holds thousands of posts.
    ``None``: unchanged (30 days, a few posts per watch and minute)."""
    if rate is None:
        return posts
    end = END.timestamp()
    span = len(posts) / rate
    return replace(posts, created=end - (end - posts.created) * (span / (DAYS * 86400)))


def partition_of(author: str) -> int:
    return zlib.crc32(author.encode()) % PARTITIONS


# --- ingest ------------------------------------------------------------------------------------
def ingest_rate(s: Settings, posts: Synthetic, n: int) -> dict[str, Any]:
    """Posts published to a fresh posts.raw topic, keyed by author, every send acknowledged."""
    from kafka.admin import KafkaAdminClient, NewTopic

    from services.stream.kafka import make_producer

    assert s.kafka_bootstrap
    topic = f"bench.scale.raw.{int(time.time())}"
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    admin.close()
    prod = make_producer(s.kafka_bootstrap)
    n = min(n, len(posts))
    values = [posts.scored_json(i) for i in range(n)]
    keys = [a.encode() for a in posts.authors[:n]]
    t0 = time.perf_counter()
    for k, v in zip(keys, values, strict=True):
        prod.send(topic, key=k, value=v)
    prod.flush()
    dt = time.perf_counter() - t0
    prod.close()
    return {"posts": n, "seconds": round(dt, 2), "posts_per_s": round(n / dt, 1)}


# --- trends ------------------------------------------------------------------------------------
def _trends_child(
    database_url: str,
    data_dir: str,
    n: int,
    rate: float | None,
    parts: list[int],
    batch: int,
    merge_interval_s: float,
    ready: Any,
    go: Any,
    done: Any,
) -> None:
    """One trends worker: its partitions' posts as posts.scored records, folded batch by batch."""
    from pipelines.schemas import ScoredPost
    from pipelines.trends.processor import TrendConfig, TrendProcessor
    from services.storage.db import engine_for

    posts = at_rate(synthetic(Path(data_dir), n), rate)
    mine = [(partition_of(a), i) for i, a in enumerate(posts.authors) if partition_of(a) in parts]
    records = [(p, posts.scored_json(i)) for p, i in mine]
    cfg = TrendConfig(source=SOURCE, expected_partitions=PARTITIONS, merge_interval_s=merge_interval_s)
    proc = TrendProcessor(engine_for(database_url), cfg)
    ready.put(len(records))
    go.wait()
    t0 = time.perf_counter()
    for k in range(0, len(records), batch):
        proc.process([(p, ScoredPost.model_validate_json(v)) for p, v in records[k : k + batch]])
    proc.close_partitions(parts, END + timedelta(days=2))  # what its watermark would close as time moves on
    done.put(time.perf_counter() - t0)


def trends_rate(s: Settings, n: int, workers: int, batch: int, rate: float | None = None) -> dict[str, Any]:
    """Posts/s of ``workers`` trends processes folding ``n`` posts (each its share of the
    partitions), up to every window closed and merged: the fold, then the close of what is still
    open (a live stream closes those as time moves on; a bench that stopped at the fold would leave
    a dense stream's closes unpaid). ``rate``: event times at that many posts/s (see at_rate)."""
    from pipelines.trends.processor import TrendConfig, TrendProcessor
    from services.storage.db import TREND_TABLES, engine_for

    assert s.database_url
    eng = engine_for(s.database_url)
    with eng.begin() as c:
        c.execute(text(f"TRUNCATE {', '.join(TREND_TABLES)}"))
    ctx = mp.get_context("spawn")
    ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    share = [list(range(PARTITIONS))[w::workers] for w in range(workers)]
    procs = [
        ctx.Process(
            target=_trends_child,
            args=(s.database_url, str(s.data_dir), n, rate, parts, batch, s.trends.merge_interval_s, ready, go, done),
            daemon=True,
        )
        for parts in share
    ]
    for p in procs:
        p.start()
    total = sum(ready.get(timeout=600) for _ in procs)  # readiness handshake: every child has its posts
    t0 = time.perf_counter()
    go.set()
    per = [done.get(timeout=3600) for _ in procs]
    fold = time.perf_counter() - t0
    TrendProcessor(eng, TrendConfig(source=SOURCE, expected_partitions=PARTITIONS)).advance(END + timedelta(days=2))
    wall = time.perf_counter() - t0  # the fold and the workers' closes, then the merge of what they closed
    for p in procs:
        p.join(30)
    with eng.connect() as c:
        windows = c.execute(text("SELECT count(*) FROM trend_windows")).scalar_one()
    return {
        "windows": windows,
        "workers": workers,
        "posts": total,
        "seconds": round(wall, 2),
        "fold_seconds": round(fold, 2),
        "merge_seconds": round(wall - fold, 2),
        "posts_per_s": round(total / wall, 1),
        "per_worker_seconds": [round(x, 2) for x in per],
    }


def trends_scaling(s: Settings, n: int, batch: int, rate: float | None = None) -> dict[str, Any]:
    """One worker, then two (last: their windows are what the api phase reads), and the ratio."""
    one = trends_rate(s, n, 1, batch, rate)
    two = trends_rate(s, n, 2, batch, rate)
    return {"one": one, "two": two, "ratio": round(two["posts_per_s"] / one["posts_per_s"], 3)}


# --- store + api -------------------------------------------------------------------------------
def _copy(conn: Any, table: str, cols: str, rows: Any) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)


def store_posts(s: Settings, posts: Synthetic) -> dict[str, Any]:
    """Authors, posts, predictions and memberships with COPY (what the scorer stores per post)."""
    import psycopg

    from services.storage.db import engine_for, truncate_stream_tables
    from services.storage.watches import seed_airline_watches

    assert s.database_url
    eng = engine_for(s.database_url)
    with eng.begin() as c:
        truncate_stream_tables(c)
    seed_airline_watches(s.database_url)
    url = s.database_url.replace("postgresql+psycopg://", "postgresql://")
    ts = [datetime.fromtimestamp(float(t), tz=UTC) for t in posts.created]
    first: dict[str, datetime] = {}
    count: dict[str, int] = {}
    for a, t in zip(posts.authors, ts, strict=True):
        first.setdefault(a, t)
        count[a] = count.get(a, 0) + 1
    labels = {lab: json.dumps({lab: 1.0}) for lab in set(posts.labels)}
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        _copy(
            conn,
            "authors",
            "id, platform, first_seen, last_seen, post_count",
            ((a, "twitter", t, t, count[a]) for a, t in first.items()),
        )
        _copy(
            conn,
            "posts",
            "id, platform, author_id, text, lang, created_at, modalities, extra",
            (
                (posts.ids[i], "twitter", posts.authors[i], posts.texts[i], "en", ts[i], ["text"], "{}")
                for i in range(len(posts))
            ),
        )
        _copy(
            conn,
            "predictions",
            "post_id, model_name, model_version, label, probabilities, score, modality_weights, "
            "user_prior_count, timings_ms",
            (
                (
                    posts.ids[i],
                    "bench",
                    "1",
                    posts.labels[i],
                    labels[posts.labels[i]],
                    float(posts.scores[i]),
                    "{}",
                    0,
                    "{}",
                )
                for i in range(len(posts))
            ),
        )
        _copy(
            conn,
            "post_watches",
            "post_id, watch_id, created_at",
            ((posts.ids[i], int(posts.watches[i]), ts[i]) for i in range(len(posts))),
        )
        conn.commit()
    dt = time.perf_counter() - t0
    with eng.connect() as c:
        sizes = {
            t: int(c.execute(text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": t}).scalar_one())
            for t in ("authors", "posts", "predictions", "post_watches", "trend_members", "trend_windows")
        }
    return {"posts": len(posts), "seconds": round(dt, 1), "rows_per_s": round(4 * len(posts) / dt), "bytes": sizes}


def api_p99(s: Settings, state: Path, seconds: float, connections: int = 16) -> dict[str, Any]:
    """``/api/trends`` (every watch, 30 days, hourly buckets) at ``connections`` concurrent clients."""
    import httpx

    from services.api.keys import create_key
    from services.config import settings_environ
    from services.storage.db import engine_for

    assert s.database_url
    token = create_key(engine_for(s.database_url), "bench-scale", "read")[1]
    with socket_port() as port:
        pass  # free now; the API binds it next
    env = child_environ(
        **settings_environ(s, ("database_url", "redis_url", "kafka_bootstrap")),
        VOXPOP_API_BOOTSTRAP_KEY="false",
        VOXPOP_STATE_DIR=str(state),
    )
    log_f = (state / "api-scale.log").open("ab")
    api = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api", "--port", str(port)], env=env, stdout=log_f, stderr=log_f
    )
    base, hdr = f"http://127.0.0.1:{port}", {"X-API-Key": token}
    try:
        deadline = time.monotonic() + 90
        while True:  # readiness handshake: the health endpoint answers
            try:
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise RuntimeError("the API did not come up; see api-scale.log")
            time.sleep(0.3)
        params: dict[str, str | int] = {"bucket": "1h", "days": 30}
        with httpx.Client(timeout=30) as c:
            first = c.get(base + "/api/trends", params=params, headers=hdr)
            first.raise_for_status()
            body = first.json()
            cold = []
            for d in range(8, 30):  # distinct ranges: every one a cache miss
                t0 = time.perf_counter()
                c.get(base + "/api/trends", params={"bucket": "1h", "days": d}, headers=hdr).raise_for_status()
                cold.append(1000 * (time.perf_counter() - t0))
        url = str(httpx.URL(base + "/api/trends", params=params))
        load = _wrk(url, hdr, seconds, connections) if shutil.which("wrk") else _threads(url, hdr, seconds, connections)
    finally:
        api.terminate()
        api.wait(20)
    return {
        "connections": connections,
        **load,
        "uncached_p50_ms": round(float(np.percentile(cold, 50)), 1),
        "uncached_max_ms": round(max(cold), 1),
        "series": len(body["series"]),
        "points_per_series": len(body["series"][0]["points"]) if body["series"] else 0,
        "posts_in_range": sum(x["total"] for x in body["series"]),
        "response_bytes": len(first.content),
    }


def _wrk(url: str, headers: dict[str, str], seconds: float, connections: int) -> dict[str, Any]:
    """The load from wrk (native, one thread per core), gzip accepted as a browser does: a client
    in Python would share the GIL and the two cores with the server and time itself."""
    hdrs = [a for k, v in {**headers, "Accept-Encoding": "gzip"}.items() for a in ("-H", f"{k}: {v}")]
    cmd = ["wrk", f"-t{min(connections, os.cpu_count() or 1)}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    out = subprocess.run([*cmd, "--latency", *hdrs, url], capture_output=True, text=True, check=True).stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1000.0}

    def ms(v: str) -> float:
        num, suffix = re.fullmatch(r"([\d.]+)(us|ms|s)", v).groups()  # type: ignore[union-attr]
        return round(float(num) * unit[suffix], 1)

    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} failed responses:\n{out}")
    return {
        "client": "wrk",
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "requests_per_s": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), 1),  # type: ignore[union-attr]
        "p50_ms": ms(pct["50"]),
        "p99_ms": ms(pct["99"]),
    }


def _threads(url: str, headers: dict[str, str], seconds: float, connections: int) -> dict[str, Any]:
    """Without wrk (``apt-get install wrk``): Python client threads, which share the GIL and the
    cores with the server, so the tail they report is partly their own."""
    import httpx

    lat: list[float] = []
    lock, stop = threading.Lock(), time.monotonic() + seconds

    def client() -> None:
        mine = []
        with httpx.Client(timeout=30) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                with c.stream("GET", url, headers=headers) as r:  # to the last byte, as sent (gzip)
                    r.raise_for_status()
                    for _ in r.iter_raw():
                        pass
                mine.append(1000 * (time.perf_counter() - t0))
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    a = np.array(lat)
    return {
        "client": "python threads",
        "requests": len(lat),
        "requests_per_s": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p99_ms": round(float(np.percentile(a, 99)), 1),
    }


class socket_port:
    """A free local TCP port (``with socket_port() as port``)."""

    def __enter__(self) -> int:
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return int(self.s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.s.close()


# --- the run -----------------------------------------------------------------------------------
def capacity(sc: dict[str, Any]) -> dict[str, Any]:
    """Pods per stage and PostgreSQL bytes per day for a FIREHOSE posts/s stream, from the rates
    measured here (the report adds scorer pods from the stream bench's newest end-to-end rate)."""
    out: dict[str, Any] = {"posts_per_s": FIREHOSE}
    if "ingest" in sc:
        out["ingest_pods"] = -(-FIREHOSE // int(sc["ingest"]["posts_per_s"]))
    if "trends" in sc:  # at a firehose's density where measured
        tr = sc["trends"].get("firehose", sc["trends"])
        out["trends_workers"] = -(-FIREHOSE // int(tr["one"]["posts_per_s"]))
    if "api" in sc:
        st = sc["api"]["store"]
        per_post = sum(v for k, v in st["bytes"].items() if k != "trend_windows") / st["posts"]
        out["pg_bytes_per_post"] = round(per_post)
        out["pg_bytes_per_day"] = round(per_post * FIREHOSE * 86400)
        out["trend_windows_bytes_per_day_of_data"] = round(st["bytes"]["trend_windows"] / DAYS)
    return out


def run_scale(
    settings: Settings, n: int, out_dir: Path | None = None, only: list[str] | None = None, api_seconds: float = 20.0
) -> dict[str, Any]:
    """Run the scale phases against an embedded stack, saving performance.json/.md after each."""

    from infra import local_stack
    from services.bench.run import bench_stack, machine, write_report
    from services.bench.stream import ROOT
    from services.storage.db import migrate

    out_dir = out_dir or ROOT / "docs"
    unknown = set(only or ()) - set(SCALE_PHASES)
    if unknown:
        raise ValueError(f"unknown scale phase(s) {sorted(unknown)}; the phases are {', '.join(SCALE_PHASES)}")
    prev = out_dir / "performance.json"
    res: dict[str, Any] = json.loads(prev.read_text()) if prev.exists() else {}
    if not only:
        res["scale"] = {}
    sc = res.setdefault("scale", {})
    sc.update(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        command=f"voxpop bench scale --posts {n}" + "".join(f" --only {p}" for p in only or ()),
    )
    sc.setdefault("phases", {})
    state, stack = bench_stack(settings, "voxpop-scale-")
    ep = local_stack.resolve_endpoints(stack)
    s = settings.model_copy(
        update={"database_url": ep.database_url, "redis_url": ep.redis_url, "kafka_bootstrap": ep.kafka_bootstrap}
    )
    assert s.database_url
    migrate(s.database_url)
    t0 = time.perf_counter()
    posts = synthetic(s.data_dir, n)
    sc["posts"], sc["generate_seconds"] = n, round(time.perf_counter() - t0, 1)
    batch = s.trends.batch_max

    def run_phase(name: str) -> None:
        if name == "ingest":
            sc["ingest"] = ingest_rate(s, posts, min(n, 200_000))
        elif name == "trends":
            firehose = {"rate": FIREHOSE, **trends_scaling(s, n, batch, FIREHOSE)}
            sc["trends"] = {"batch": batch, "firehose": firehose, **trends_scaling(s, n, batch)}
        elif name == "api":
            if "trends" not in sc["phases"] or only:  # a fresh stack: fold the windows the API reads
                trends_rate(s, n, 2, batch)
            store = store_posts(s, posts)
            sc["api"] = {"store": store, **api_p99(s, state, api_seconds)}

    try:
        for name in SCALE_PHASES:
            if only and name not in only:
                continue
            log.info("scale: %s", name)
            t1 = time.monotonic()
            try:
                run_phase(name)
                sc["phases"][name] = {"status": "ok", "seconds": round(time.monotonic() - t1, 1)}
            except Exception as e:  # noqa: BLE001 (a failed phase is reported; the others still run)
                log.exception("scale phase %s failed", name)
                sc["phases"][name] = {"status": "failed", "why": f"{type(e).__name__}: {e}"}
            sc["capacity"] = capacity(sc)  # a pod = the bench machine
            write_report(res, out_dir)
    finally:
        local_stack.down(stack)
        shutil.rmtree(state, ignore_errors=True)
    return res
