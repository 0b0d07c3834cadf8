"""Helpers for API, dashboard and report tests: scored airline posts straight into PostgreSQL,
an API server subprocess, and keys.

`load_scored_airline` writes real airline tweets through the scorer's own sink (`write_batch`), with
the data set's gold label as the prediction (a stand-in model named ``gold``), so API tests need no
model and take seconds; the end-to-end tests use the real scorer for the live part.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy.dialects.postgresql import insert

from infra.local_stack import Endpoints
from pipelines.schemas import Post
from pipelines.watch_match import WatchMatcher
from services.api.keys import create_key
from services.config import Settings
from services.ingest.records import PRESETS
from services.ingest.replay import load_records
from services.scorer.sinks import PredictionRow
from services.storage import models as m
from services.storage.db import engine_for
from services.storage.watches import load_watch_specs
from tests.integration.streamkit import ROOT, child_env

LABELS = ("negative", "neutral", "positive")


def airline_posts(csv: Path, limit: int | None = None, skip: int = 0) -> list[Post]:
    """Valid airline posts in time order (the CSV's own order is not chronological)."""
    recs = load_records(csv, PRESETS["airline"], limit=None)
    unique = {r.post.id: r.post for r in recs if r.post is not None}  # the CSV repeats some tweets
    posts = sorted(unique.values(), key=lambda p: (p.created_at, p.id))
    return posts[skip : None if limit is None else skip + limit]


def gold_row(post: Post, prior: int) -> PredictionRow:
    lab = str(post.extra.get("airline_sentiment") or "neutral")
    lab = lab if lab in LABELS else "neutral"
    jitter = int(hashlib.sha256(post.id.encode()).hexdigest()[:6], 16) / 0xFFFFFF
    top = 0.5 + 0.45 * jitter
    probs = {k: (top if k == lab else (1 - top) / 2) for k in LABELS}
    return PredictionRow(
        post=post,
        model_name="gold",
        model_version="airline-v1",
        label=lab,
        probabilities=probs,
        score=probs["positive"] - probs["negative"],
        emotion=None,
        modality_weights={"text": 1.0},
        user_prior_count=prior,
        timings_ms={},
        media_status=[],
    )


def load_scored_airline(ep: Endpoints, posts: list[Post]) -> int:
    """Match watches like ingest does, then store the rows the scorer stores (authors, posts, gold
    predictions, post_watches). Uses executemany: the scorer's multi-VALUES statements recompile per
    batch, which makes bulk loads of thousands of posts take a minute."""
    matcher = WatchMatcher(load_watch_specs(ep.database_url))
    seen: Counter[str] = Counter()
    authors: dict[str, dict] = {}
    post_rows, pred_rows, match_rows = [], [], []
    for p in posts:
        p.watches = matcher.match(p.text, p.lang, p.author.handle)
        g = gold_row(p, seen[p.author.id])
        seen[p.author.id] += 1
        a = authors.setdefault(
            p.author.id,
            {
                "id": p.author.id,
                "platform": p.platform,
                "handle": p.author.handle,
                "first_seen": p.created_at,
                "last_seen": p.created_at,
                "post_count": 0,
            },
        )
        a["last_seen"], a["post_count"] = p.created_at, a["post_count"] + 1
        post_rows.append(
            {
                "id": p.id,
                "platform": p.platform,
                "author_id": p.author.id,
                "text": p.text,
                "lang": p.lang,
                "created_at": p.created_at,
                "thread_id": p.thread_id,
                "reply_to": p.reply_to,
                "modalities": sorted(p.modalities),
                "extra": p.extra,
                "ingested_at": p.created_at,
            }
        )
        pred_rows.append(
            {
                "post_id": p.id,
                "model_name": g.model_name,
                "model_version": g.model_version,
                "label": g.label,
                "probabilities": g.probabilities,
                "score": g.score,
                "emotion": None,
                "modality_weights": g.modality_weights,
                "user_prior_count": g.user_prior_count,
                "timings_ms": {},
            }
        )
        match_rows += [{"post_id": p.id, "watch_id": w, "created_at": p.created_at} for w in p.watches]
    with engine_for(ep.database_url).begin() as conn:
        conn.execute(insert(m.Author).on_conflict_do_nothing(), list(authors.values()))
        conn.execute(insert(m.Post).on_conflict_do_nothing(), post_rows)
        conn.execute(insert(m.Prediction).on_conflict_do_nothing(), pred_rows)
        if match_rows:
            conn.execute(insert(m.PostWatch).on_conflict_do_nothing(), match_rows)
    return len(post_rows)


def api_dataset(
    ep: Endpoints,
    posts: list[Post],
    state_dir: Path | None = None,
    trends_lateness_s: float | None = None,
    **overrides,
) -> Settings:
    """A clean stream (core, trends/alerts and API tables emptied), airline watches, these posts
    stored and folded into trend windows under the stream's own source (the API reads windows).

    ``trends_lateness_s``: None closes every window (a finished stream); a number folds as a live
    trends worker with that lateness would, leaving the newest windows open for the worker to go on.
    """
    from sqlalchemy import text

    from services.storage.watches import seed_airline_watches
    from tests.integration.streamkit import fresh_stream
    from tests.integration.trendkit import TREND_TABLES, fold_stored

    s = fresh_stream(ep, **overrides)
    if state_dir is not None:
        s = s.model_copy(update={"state_dir": state_dir})
    with engine_for(ep.database_url).begin() as conn:
        conn.execute(
            text(
                f"TRUNCATE {', '.join(TREND_TABLES)}, api_keys, report_runs, apscheduler_jobs RESTART IDENTITY CASCADE"
            )
        )
    seed_airline_watches(ep.database_url)
    load_scored_airline(ep, posts)
    fold_stored(engine_for(ep.database_url), s.topic_scored, trends_lateness_s)  # as the trends worker would
    return s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(s: Settings, log_path: Path, port: int, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = child_env(s) | {"VOXPOP_API_BOOTSTRAP_KEY": "false", "VOXPOP_STATE_DIR": str(s.state_dir)}
    env |= extra_env or {}
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"api exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"api did not come up:\n{log_path.read_text()[-3000:]}")


def new_key(ep: Endpoints, scope: str, name: str | None = None) -> str:
    return create_key(engine_for(ep.database_url), name or f"test-{scope}", scope)[1]
