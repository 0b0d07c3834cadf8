"""The why of an alert on real PostgreSQL and a `standardwebhooks` receiver: the webhook carries
the window's reason mix, distinguishing phrases and sample posts with working dashboard links,
and keeps it on the firing, so the API and dashboard show the same why.

Data: American's negative airline tweets around the 2015-02-22 incident, stored with their human
reasons (the why reads stored reasons, whoever wrote them: the scorer's head in production)."""

from __future__ import annotations

import csv
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import insert, text

from models.text_normalise import unescape_entities
from pipelines.trends.themes import clean
from services.alerts import manage
from services.alerts.dispatcher import Dispatcher
from services.alerts.policy import UrlPolicy
from services.alerts.receiver import Receiver
from services.config import AlertsSettings
from services.storage.db import truncate_stream_tables
from services.storage.models import Author, Post, PostWatch, Prediction, Watch
from tests.conftest import dataset_path
from tests.integration.trendkit import clean_alert_db

pytestmark = pytest.mark.integration
W = datetime(2015, 2, 23, 0, tzinfo=UTC)  # 16:00 PT: the incident's peak, its first hours in the baseline
BASE = "https://voxpop.example.com"


def _tweets() -> list[dict]:
    path = dataset_path("airline-tweets") / "airline_tweets_clean.csv"
    seen, out = set(), []
    with path.open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            t = datetime.fromisoformat(r["created_at"]).astimezone(UTC)
            if (
                r["airline"] != "American"
                or r["airline_sentiment"] != "negative"
                or r["tweet_id"] in seen
                or not W - timedelta(hours=24) <= t < W + timedelta(hours=1)
            ):
                continue
            seen.add(r["tweet_id"])
            out.append(
                {
                    "id": f"twitter:{r['tweet_id']}",
                    "user": r["user"],
                    "t": t,
                    "text": unescape_entities(r["text"]),
                    "reason": r["negativereason"] or None,
                }
            )
    return out


def _store(engine, tweets: list[dict]) -> None:
    with engine.begin() as c:
        truncate_stream_tables(c, "watches")
        c.execute(
            insert(Watch),
            [
                {
                    "id": 1,
                    "name": "American",
                    "kind": "brand",
                    "keywords": ["american"],
                    "handles": [],
                    "hashtags": [],
                    "languages": [],
                    "active": True,
                }
            ],
        )
        users = {tw["user"]: tw["t"] for tw in tweets}
        c.execute(
            insert(Author),
            [
                {
                    "id": f"twitter:{u}",
                    "platform": "twitter",
                    "handle": u,
                    "first_seen": t,
                    "last_seen": t,
                    "post_count": 1,
                }
                for u, t in users.items()
            ],
        )
        c.execute(
            insert(Post),
            [
                {
                    "id": tw["id"],
                    "platform": "twitter",
                    "author_id": f"twitter:{tw['user']}",
                    "text": tw["text"],
                    "lang": "en",
                    "created_at": tw["t"],
                    "modalities": ["text"],
                    "extra": {},
                }
                for tw in tweets
            ],
        )
        c.execute(
            insert(Prediction),
            [
                {
                    "post_id": tw["id"],
                    "model_name": "production",
                    "model_version": "t",
                    "label": "negative",
                    "probabilities": {},
                    "score": -0.9,
                    "reason": tw["reason"],
                    "reason_probability": 0.9,
                }
                for tw in tweets
            ],
        )
        c.execute(insert(PostWatch), [{"post_id": tw["id"], "watch_id": 1, "created_at": tw["t"]} for tw in tweets])


def test_webhook_carries_the_windows_why_and_the_firing_keeps_it() -> None:
    engine = clean_alert_db()
    tweets = _tweets()
    window = [tw for tw in tweets if tw["t"] >= W]
    baseline = [tw for tw in tweets if tw["t"] < W]
    assert len(window) >= 20 and len(baseline) >= 5
    _store(engine, tweets)
    rule = manage.create_rule(
        engine, name="neg-spike", kind="spike", metric="n_negative", z_score=3, min_baseline=6, lookback=24
    )["id"]
    local = UrlPolicy(allow_cidrs=["127.0.0.1/32"])
    ep = manage.create_endpoint(engine, "ops", "http://127.0.0.1:1/x", policy=local)
    rx = Receiver(ep["secret"]).start()
    samples = [window[0]["id"], window[1]["id"]]
    with engine.begin() as c:
        c.execute(text("UPDATE webhook_endpoints SET url = :u WHERE id = :i"), {"u": rx.url, "i": ep["id"]})
        fid = c.execute(
            text(
                "INSERT INTO alert_firings (rule_id, rule_name, status, watch_id, window_size, window_start, "
                "window_end, metric, observed, n_posts, severity, sample_post_ids) "
                "VALUES (:r, 'neg-spike', 'firing', 1, '1h', :s, :e, 'n_negative', :n, :n, 'warning', :ids) "
                "RETURNING id"
            ),
            {"r": rule, "s": W, "e": W + timedelta(hours=1), "n": len(window), "ids": samples},
        ).scalar_one()
        c.execute(text("INSERT INTO alert_outbox (firing_id) VALUES (:f)"), {"f": fid})
        c.execute(
            text("INSERT INTO trend_progress (source, closed_through) VALUES ('test', :t)"),
            {"t": W + timedelta(hours=2)},
        )
    cfg = AlertsSettings(group_wait_s=0.0, poll_interval_s=0.05, dashboard_url=BASE)
    d = Dispatcher(engine, cfg, policy=local)
    try:
        deadline = time.monotonic() + 20
        while not rx.ok and time.monotonic() < deadline:
            d.run_once()
            time.sleep(0.05)
    finally:
        d.close()
        rx.stop()
    assert len(rx.ok) == 1 and rx.bad == 0
    why = rx.ok[0]["payload"]["data"]["why"]
    assert why["window_posts"] == len(window) and why["baseline_posts"] == len(baseline)
    assert why["volume_ratio"] == pytest.approx(len(window) / (len(baseline) / 24), rel=0.01)
    counts = Counter(tw["reason"] for tw in window if tw["reason"])
    assert [(m["reason"], m["posts"]) for m in why["reasons"]] == sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert sum(m["share"] for m in why["reasons"]) == pytest.approx(1.0, abs=1e-3)
    assert why["phrases"], "an incident hour has words its baseline lacks"
    for p in why["phrases"]:
        n_win = sum(
            all(w in re.findall(r"\b[a-z][a-z]+\b", clean(tw["text"])) for w in p["term"].split()) for tw in window
        )
        assert n_win >= p["window_posts"] >= 2 and p["window_share"] > (p["baseline_share"] or 0)
    by_id = {tw["id"]: tw for tw in tweets}
    got = why["samples"]
    assert 3 <= len(got) <= 5 and [s["post_id"] for s in got[:2]] == samples
    for s in got:
        tw = by_id[s["post_id"]]
        assert s["text"] == tw["text"][:500] and s["author_handle"] == tw["user"]
        assert W <= tw["t"] < W + timedelta(hours=1)
        assert datetime.fromisoformat(s["created_at"]) == tw["t"]
        assert s["url"] == f"{BASE}/#/post/{quote(s['post_id'], safe='')}"
    with engine.connect() as c:
        kept = c.execute(text("SELECT why FROM alert_firings WHERE id = :f"), {"f": fid}).scalar_one()
    assert kept == {**why, "samples": [{k: v for k, v in s.items() if k != "url"} for s in got]}
