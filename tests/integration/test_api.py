"""The API on real PostgreSQL, Redis and Kafka, over real airline tweets.

Proves: API keys (none, unknown, wrong scope, revoked), clear 4xx errors, keyset pagination that
neither skips nor repeats, trends/author numbers equal to SQL over the same rows, CRUD of watches,
rules, silences and webhooks (URL policy, secrets shown once), alerts with deliveries, reports over
the API, Prometheus metrics (consumer lag, DLQ, histograms) and a schemathesis run over the served
OpenAPI with no server errors and responses matching their schemas.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from sqlalchemy import insert, text

from services.api.app import create_app
from services.config import ApiSettings
from services.storage.alert_models import TrendWindow
from services.storage.db import engine_for
from services.storage.redis_stats import observe
from services.stream.kafka import make_producer
from tests.conftest import dataset_path
from tests.integration.apikit import airline_posts, api_dataset, new_key

pytestmark = pytest.mark.integration
N = 2500


@pytest.fixture(scope="module")
def env(stack_endpoints, tmp_path_factory):
    ep = stack_endpoints
    csv = dataset_path("airline-tweets") / "airline_tweets_clean.csv"
    s = api_dataset(ep, airline_posts(csv, limit=N), state_dir=tmp_path_factory.mktemp("state"))
    client = TestClient(create_app(s, ApiSettings(lag_cache_s=0.0, trends_fresh_s=0.0)))
    keys = {scope: new_key(ep, scope) for scope in ("read", "write", "admin")}
    engine = engine_for(ep.database_url)
    with engine.connect() as conn:
        watches = dict(conn.execute(text("SELECT name, id FROM watches")).all())
    yield {"c": client, "keys": keys, "ep": ep, "s": s, "engine": engine, "watches": watches}
    client.close()


def H(env, scope="read"):
    return {"X-API-Key": env["keys"][scope]}


def sql(env, q, **p):
    with env["engine"].connect() as conn:
        return conn.execute(text(q), p).all()


# --- auth ---------------------------------------------------------------------------------------
def test_auth_missing_unknown_scope_and_revoked(env):
    c = env["c"]
    r = c.get("/api/watches")
    assert r.status_code == 401 and "missing API key" in r.json()["detail"]
    assert c.get("/api/watches", headers={"X-API-Key": "vpk_nope"}).json()["detail"] == "unknown API key"
    assert c.get("/api/watches", headers={"Authorization": f"Bearer {env['keys']['read']}"}).status_code == 200
    body = {"name": "Delta", "handles": ["Delta"]}
    r = c.post("/api/watches", json=body, headers=H(env, "read"))
    assert r.status_code == 403 and "needs 'write'" in r.json()["detail"]
    assert (
        c.post("/api/webhooks", json={"name": "x", "url": "https://example.com/h"}, headers=H(env, "write")).status_code
        == 403
    )
    assert c.get("/api/keys", headers=H(env, "write")).status_code == 403
    # a new key works until revoked, then is refused with the reason
    made = c.post("/api/keys", json={"name": "temp", "scope": "read"}, headers=H(env, "admin")).json()
    assert made["token"].startswith("vpk_") and made["scope"] == "read"
    tok = {"X-API-Key": made["token"]}
    assert c.get("/api/whoami", headers=tok).json()["name"] == "temp"
    assert c.delete(f"/api/keys/{made['id']}", headers=H(env, "admin")).json()["revoked_at"]
    r = c.get("/api/watches", headers=tok)
    assert r.status_code == 401 and r.json()["detail"] == "API key revoked"
    listed = c.get("/api/keys", headers=H(env, "admin")).json()
    assert all("token" not in k and "token_sha256" not in k for k in listed)
    stored = sql(env, "SELECT token_sha256 FROM api_keys WHERE id = :i", i=made["id"])[0][0]
    assert made["token"] not in stored and len(stored) == 64


# --- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,path,body,status,needle",
    [
        ("post", "/api/watches", {"name": "X"}, 422, "at least one keyword"),
        ("post", "/api/watches", {"name": "United", "handles": ["united"]}, 409, "already exists"),
        ("post", "/api/rules", {"name": "r", "kind": "spike"}, 422, "z_score"),
        ("post", "/api/rules", {"name": "r", "window_size": "2m", "threshold": 0.5}, 422, "window_size"),
        ("post", "/api/rules", {"name": "r", "threshold": 0.5, "watch_id": 99999}, 404, "watch 99999"),
        ("post", "/api/webhooks", {"name": "h", "url": "http://127.0.0.1:9/x"}, 422, "VOXPOP_ALERTS_ALLOW_CIDRS"),
        ("post", "/api/silences", {"ends_at": "2001-01-01T00:00:00Z"}, 422, "after starts_at"),
        ("post", "/api/silences", {"ends_at": "2031-01-01T00:00:00"}, 422, "timezone"),
        ("get", "/api/trends?bucket=7x", None, 400, "bad bucket"),
        ("get", "/api/trends?bucket=1m&since=2000-01-01T00:00:00Z&until=2015-01-01T00:00:00Z", None, 400, "buckets"),
        ("get", "/api/trends?watch_id=4242", None, 404, "4242"),
        ("get", "/api/posts?since=2015-02-20T00:00:00", None, 400, "timezone"),
        ("get", "/api/posts?cursor=garbage", None, 400, "malformed cursor"),
        ("get", "/api/posts?limit=0", None, 422, "limit"),
        ("get", "/api/watches/0", None, 422, "watch_id"),
        ("get", "/api/posts/twitter:none", None, 404, "not found"),
    ],
)
def test_clear_client_errors(env, method, path, body, status, needle):
    r = getattr(env["c"], method)(path, headers=H(env, "admin"), **({"json": body} if body is not None else {}))
    assert r.status_code == status, r.text
    assert needle in r.text


# --- posts ----------------------------------------------------------------------------------------
def test_keyset_pages_cover_a_watch_exactly_once(env):
    jb = env["watches"]["JetBlue"]
    seen, cursor, pages, last = [], None, 0, None
    while True:
        r = env["c"].get("/api/posts", params={"watch_id": jb, "limit": 97, "cursor": cursor}, headers=H(env)).json()
        for p in r["items"]:
            key = (p["created_at"], p["id"])
            assert last is None or key < last, "newest first, strictly"
            last = key
            assert jb in p["watches"]
        seen += [p["id"] for p in r["items"]]
        pages += 1
        cursor = r["next_cursor"]
        if cursor is None:
            break
    want = {r[0] for r in sql(env, "SELECT post_id FROM post_watches WHERE watch_id = :w", w=jb)}
    assert len(seen) == len(set(seen)) == len(want) and set(seen) == want
    assert pages == -(-len(want) // 97)


def test_filters_and_score_order(env):
    c, ua = env["c"], env["watches"]["US Airways"]
    r = c.get(
        "/api/posts", params={"watch_id": ua, "label": "negative", "q": "delayed", "limit": 500}, headers=H(env)
    ).json()
    want = sql(
        env,
        """SELECT count(*) FROM post_watches pw JOIN posts p ON p.id = pw.post_id
                       JOIN predictions pr ON pr.post_id = p.id
                       WHERE pw.watch_id = :w AND pr.label = 'negative' AND p.text ILIKE '%delayed%'""",
        w=ua,
    )[0][0]
    assert len(r["items"]) == want > 0
    assert all("delayed" in p["text"].lower() and p["prediction"]["label"] == "negative" for p in r["items"])
    scores, cursor = [], None
    for _ in range(3):
        page = c.get(
            "/api/posts", params={"order": "most_negative", "limit": 50, "cursor": cursor}, headers=H(env)
        ).json()
        scores += [p["prediction"]["score"] for p in page["items"]]
        cursor = page["next_cursor"]
    assert scores == sorted(scores) and len(scores) == 150
    words = c.get("/api/posts", params={"q": "lost bag", "search": "words", "limit": 5}, headers=H(env)).json()
    assert all("lost" in p["text"].lower() for p in words["items"])
    assert c.get("/api/posts", params={"modality": "image"}, headers=H(env)).json()["items"] == []
    one = r["items"][0]
    got = c.get(f"/api/posts/{one['id']}", headers=H(env)).json()
    assert got["prediction"]["dominant_modality"] == "text" and got["author"] == one["author"]


# --- trends and authors ---------------------------------------------------------------------------
def test_trends_equal_sql(env):
    r = env["c"].get("/api/trends", params={"bucket": "6h", "days": 30}, headers=H(env)).json()
    since, until = r["since"], r["until"]
    for s in r["series"]:
        n = sql(
            env,
            "SELECT count(*) FROM post_watches WHERE watch_id = :w AND created_at >= :a AND created_at < :b",
            w=s["watch_id"],
            a=since,
            b=until,
        )[0][0]
        assert s["total"] == n == sum(p["n"] for p in s["points"])
        for p in s["points"]:
            assert sum(p["counts"].values()) == p["n"]
            if p["n"]:
                assert p["share_negative"] == pytest.approx(p["counts"]["negative"] / p["n"])
    by_t: dict[str, float] = {}
    for s in r["series"]:
        for p in s["points"]:
            if p["share_of_voice"] is not None:
                by_t[p["t"]] = by_t.get(p["t"], 0) + p["share_of_voice"]
    assert by_t and all(v == pytest.approx(1.0) for v in by_t.values())
    # one hourly bucket (the stored window size: exact) cross-checked in SQL: mean score and authors
    hourly = env["c"].get("/api/trends", params={"bucket": "1h", "days": 30}, headers=H(env)).json()
    united = next(s for s in hourly["series"] if s["watch_name"] == "United")
    p = max(united["points"], key=lambda x: x["n"])
    mean, ua = sql(
        env,
        """SELECT avg(pr.score), count(DISTINCT p.author_id) FROM post_watches pw
                           JOIN posts p ON p.id = pw.post_id JOIN predictions pr ON pr.post_id = p.id
                           WHERE pw.watch_id = :w AND p.created_at >= :t
                             AND p.created_at < CAST(:t AS timestamptz) + interval '1 hour'""",
        w=united["watch_id"],
        t=p["t"],
    )[0]
    assert p["mean_score"] == pytest.approx(mean) and p["unique_authors"] == ua
    six = next(s for s in r["series"] if s["watch_name"] == "United")
    assert six["total"] == sum(x["n"] for x in united["points"] if since <= x["t"] < until)
    # served from the windows, never from the predictions: without windows there is nothing
    with engine_for(env["ep"].database_url).begin() as c:
        saved = c.execute(text("SELECT * FROM trend_windows")).mappings().all()
        c.execute(text("DELETE FROM trend_windows"))
        c.execute(text("UPDATE trend_progress SET closed_through = closed_through + interval '1 second'"))
    try:
        gone = env["c"].get("/api/trends", params={"bucket": "6h", "since": since, "until": until}, headers=H(env))
        assert gone.status_code == 200 and all(s["total"] == 0 for s in gone.json()["series"])
    finally:
        with engine_for(env["ep"].database_url).begin() as c:
            c.execute(insert(TrendWindow), [dict(w) for w in saved])
    assert env["c"].get("/api/trends", params={"bucket": "90s"}, headers=H(env)).status_code == 400


def test_trends_trust_their_data_version_for_trends_fresh_s_then_see_the_change(env):
    """A cached answer costs no PostgreSQL round trip while its data version is fresh; after
    that, a merged window shows up (here with the freshness window at an hour, then at zero)."""
    params = {"bucket": "1h", "days": 30}
    lazy = TestClient(create_app(env["s"], ApiSettings(trends_fresh_s=3600)))
    before = lazy.get("/api/trends", params=params, headers=H(env)).json()
    with env["engine"].begin() as c:
        c.execute(text("UPDATE trend_progress SET closed_through = closed_through + interval '1 second'"))
        saved = c.execute(text("SELECT * FROM trend_windows")).mappings().all()
        c.execute(text("DELETE FROM trend_windows"))
    try:
        assert lazy.get("/api/trends", params=params, headers=H(env)).json() == before  # within its hour
        now = env["c"].get("/api/trends", params=params, headers=H(env)).json()  # trends_fresh_s=0
        assert sum(s["total"] for s in now["series"]) < sum(s["total"] for s in before["series"])
    finally:
        lazy.close()
        with env["engine"].begin() as c:
            c.execute(insert(TrendWindow), [dict(w) for w in saved])


def test_concurrent_trends_requests_read_the_data_version_once_and_build_each_body_once(env, monkeypatch):
    """A burst that misses the cache together (a new data version, or a cold process) costs one
    PostgreSQL reading and one body build, not one per request."""
    import asyncio

    import httpx

    from services.api.routes import data

    calls = {"read": 0, "build": 0}
    read, build = data._DataVersion.read, data._trends_body

    def counted_read(st):
        calls["read"] += 1
        return read(st)

    def counted_build(*a):
        calls["build"] += 1
        return build(*a)

    monkeypatch.setattr(data._DataVersion, "read", staticmethod(counted_read))
    monkeypatch.setattr(data, "_trends_body", counted_build)
    app = create_app(env["s"], ApiSettings(trends_fresh_s=60))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            get = lambda: c.get("/api/trends", params={"bucket": "1h", "days": 30}, headers=H(env))  # noqa: E731
            return await asyncio.gather(*(get() for _ in range(16)))

    answers = asyncio.run(burst())
    assert all(r.status_code == 200 for r in answers) and len({r.content for r in answers}) == 1
    assert calls == {"read": 1, "build": 1}


def test_trends_are_sent_gzipped_to_clients_that_accept_it_and_plain_to_others(env):
    import gzip

    params = {"bucket": "1h", "days": 30}
    plain = env["c"].get("/api/trends", params=params, headers={**H(env), "Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    raw = env["c"].stream("GET", "/api/trends", params=params, headers={**H(env), "Accept-Encoding": "gzip"})
    with raw as r:
        body = b"".join(r.iter_raw())
        assert r.headers["content-encoding"] == "gzip" and "accept-encoding" in r.headers["vary"].lower()
    assert len(body) < len(plain.content) / 4, "a month of hourly points compresses well"
    assert gzip.decompress(body) == plain.content


def test_author_history_shows_state_n_and_running_mean(env):
    aid, n = sql(env, "SELECT author_id, count(*) FROM posts GROUP BY author_id ORDER BY 2 DESC, 1 LIMIT 1")[0]
    d = env["c"].get(f"/api/authors/{aid}", headers=H(env)).json()
    hist = d["history"]
    assert len(hist) == n and d["post_count"] == n
    assert [h["user_prior_count"] for h in hist] == list(range(n))
    scores = [h["score"] for h in hist]
    for i, h in enumerate(hist):
        assert h["running_mean"] == pytest.approx(sum(scores[: i + 1]) / (i + 1))
    assert d["mean_score"] == pytest.approx(hist[-1]["running_mean"])
    top = env["c"].get("/api/authors", params={"limit": 1}, headers=H(env)).json()[0]
    assert top["id"] == aid and top["posts"] == n


# --- management -----------------------------------------------------------------------------------
def test_rule_silence_webhook_lifecycle(env):
    c, w = env["c"], H(env, "write")
    rule = c.post(
        "/api/rules",
        json={"name": "jb-neg", "watch_id": env["watches"]["JetBlue"], "threshold": 0.6, "min_volume": 5},
        headers=w,
    )
    assert rule.status_code == 201, rule.text
    rid = rule.json()["id"]
    assert c.patch(f"/api/rules/{rid}", json={"threshold": 0.7, "enabled": False}, headers=w).json()["threshold"] == 0.7
    assert c.patch(f"/api/rules/{rid}", json={"kind": "spike"}, headers=w).status_code == 422  # would be invalid
    sil = c.post(
        "/api/silences", json={"rule_id": rid, "ends_at": "2031-01-01T00:00:00Z", "comment": "deploy"}, headers=w
    ).json()
    assert sil["active"] and sil["created_by"] == "test-write"
    assert c.delete(f"/api/silences/{sil['id']}", headers=w).json()["active"] is False
    hook = c.post("/api/webhooks", json={"name": "ops", "url": "https://93.184.216.34/hook"}, headers=H(env, "admin"))
    assert hook.status_code == 201, hook.text
    assert hook.json()["secret"].startswith("whsec_")
    listed = c.get("/api/webhooks", headers=w).json()
    assert "secret" not in listed[0] and listed[0]["secret_hint"].endswith("...")
    hid, a = hook.json()["id"], H(env, "admin")  # what the dashboard's Manage page does with it
    assert c.patch(f"/api/webhooks/{hid}", json={"enabled": False}, headers=a).json()["enabled"] is False
    assert c.delete(f"/api/webhooks/{hid}", headers=a).status_code == 204
    assert c.get(f"/api/webhooks/{hid}", headers=a).status_code == 404
    assert all(h["id"] != hid for h in c.get("/api/webhooks", headers=a).json())
    assert c.delete(f"/api/rules/{rid}", headers=w).status_code == 204
    assert c.get(f"/api/rules/{rid}", headers=w).status_code == 404
    wid = c.post("/api/watches", json={"name": "Delta", "handles": ["Delta"]}, headers=w).json()["id"]
    assert c.patch(f"/api/watches/{wid}", json={"active": False}, headers=w).json()["active"] is False
    assert c.delete(f"/api/watches/{wid}", headers=w).status_code == 204


def test_alerts_with_deliveries(env):
    jb = env["watches"]["JetBlue"]
    with env["engine"].begin() as conn:
        rid = conn.execute(
            text(
                "INSERT INTO alert_rules (name, watch_id, window_size, kind, metric, op, threshold, "
                "min_delta, baseline_method, ewma_alpha, lookback, min_baseline, std_floor, min_volume,"
                " severity, cooldown_s, enabled, labels, direction) VALUES ('t', :w, '1h', 'threshold',"
                " 'share_negative', '>=', 0.5, 0, 'mean', 0.3, 24, 6, 0, 0, 'critical', 0, true, '{}',"
                " 'up') RETURNING id"
            ),
            {"w": jb},
        ).scalar_one()
        fid = conn.execute(
            text(
                "INSERT INTO alert_firings (rule_id, rule_name, status, watch_id, window_size, "
                "window_start, window_end, metric, observed, baseline, n_posts, severity, "
                "sample_post_ids) VALUES (:r, 't', 'firing', :w, '1h', '2015-02-20T10:00Z', "
                "'2015-02-20T11:00Z', 'share_negative', 0.8, 0.4, 30, 'critical', '{twitter:1}') "
                "RETURNING id"
            ),
            {"r": rid, "w": jb},
        ).scalar_one()
        eid = conn.execute(
            text(
                "INSERT INTO webhook_endpoints (name, url, secret, kind, min_severity, timeout_s, "
                "max_attempts, enabled) VALUES ('dead-end', 'https://example.com/x', 'whsec_AAAA', "
                "'json', 'info', 1, 2, true) RETURNING id"
            )
        ).scalar_one()
        nid = conn.execute(
            text(
                "INSERT INTO notifications (msg_id, rule_id, watch_id, endpoint_id, firing_id, reason, "
                "status, body, state, attempts, last_error) VALUES ('msg_1', :r, :w, :e, :f, "
                "'initial', 'firing', '{}', 'dead', 2, 'HTTP 500') RETURNING id"
            ),
            {"r": rid, "w": jb, "e": eid, "f": fid},
        ).scalar_one()
        for a, outcome in ((1, "retry"), (2, "dead")):
            conn.execute(
                text(
                    "INSERT INTO webhook_deliveries (notification_id, attempt, msg_id, url, started_at, "
                    "duration_ms, status_code, error, outcome) VALUES (:n, :a, 'msg_1', "
                    "'https://example.com/x', now(), 12.5, 500, 'HTTP 500', :o)"
                ),
                {"n": nid, "a": a, "o": outcome},
            )
    c = env["c"]
    page = c.get("/api/alerts", params={"watch_id": jb, "status": "firing"}, headers=H(env)).json()
    assert [a["id"] for a in page["items"]] == [fid] and page["items"][0]["watch_name"] == "JetBlue"
    d = c.get(f"/api/alerts/{fid}", headers=H(env)).json()
    assert d["notifications"][0]["state"] == "dead"
    assert [x["outcome"] for x in d["notifications"][0]["deliveries"]] == ["retry", "dead"]
    assert len(c.get("/api/deliveries", params={"outcome": "dead"}, headers=H(env)).json()) == 1
    metrics = c.get("/metrics").text
    assert 'voxpop_webhook_deliveries_total{outcome="dead"} 1.0' in metrics
    assert "voxpop_webhook_failures_total 2.0" in metrics


# --- metrics --------------------------------------------------------------------------------------
def test_metrics_lag_dlq_and_histograms(env):
    s, ep = env["s"], env["ep"]
    prod = make_producer(ep.kafka_bootstrap)
    # one record per produce request: Tansu reports a partition's end offset per record batch
    # (3 records in one batch read as end offset 1), Apache Kafka per record
    for i in range(5):
        prod.send(s.topic_raw, key=b"k%d" % i, value=b"{}")
        prod.flush()
    for _ in range(2):
        prod.send(s.topic_dlq, key=b"d", value=b"bad")
        prod.flush()
    prod.close()
    r = redis.Redis.from_url(ep.redis_url)
    pipe = r.pipeline()
    observe(pipe, "scorer_batch_size", 12)
    observe(pipe, "scorer_batch_ms", 180.0)
    pipe.incrby("vp:stats:scored", 12)
    pipe.execute()
    text_ = env["c"].get("/metrics").text
    assert f'voxpop_consumer_lag_total{{group="{s.scorer_group}",topic="{s.topic_raw}"}} 5.0' in text_
    assert f'voxpop_dlq_records{{topic="{s.topic_dlq}"}} 2.0' in text_
    assert 'voxpop_scorer_batch_size_bucket{le="16.0"} 1.0' in text_
    assert 'voxpop_scorer_batch_seconds_bucket{le="0.25"} 1.0' in text_
    assert "voxpop_scored_total 12.0" in text_
    assert "voxpop_api_requests_total" in text_


# --- reports over the API -------------------------------------------------------------------------
def test_report_over_api_is_generated_once(env):
    c, jb = env["c"], env["watches"]["JetBlue"]
    body = {"watch_id": jb, "period": "daily", "end": "2015-02-19T00:00:00Z"}
    r = c.post("/api/reports", json=body, headers=H(env, "write"))
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "done" and set(run["files"]) == {"html", "pdf", "csv"}
    n = sql(
        env,
        "SELECT count(*) FROM post_watches WHERE watch_id = :w AND created_at >= '2015-02-18' "
        "AND created_at < '2015-02-19'",
        w=jb,
    )[0][0]
    assert run["summary"]["posts"] == n
    again = c.post("/api/reports", json=body, headers=H(env, "write")).json()
    assert again["id"] == run["id"]
    pdf = c.get(run["files"]["pdf"], headers=H(env))
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    csv_rows = c.get(run["files"]["csv"], headers=H(env)).text.strip().splitlines()
    assert len(csv_rows) >= n + 1  # header + one row per post (texts may hold newlines)


def test_report_over_api_defaults_to_the_datas_latest_period(env):
    """No end: the daily report covers the newest day holding the watch's posts (2015 here), not
    today's empty day; an unknown watch is a 404."""
    c, jb = env["c"], env["watches"]["JetBlue"]
    r = c.post("/api/reports", json={"watch_id": jb, "period": "daily"}, headers=H(env, "write"))
    assert r.status_code == 201, r.text
    run = r.json()
    newest = sql(env, "SELECT max(created_at) FROM post_watches WHERE watch_id = :w", w=jb)[0][0]
    assert run["period_start"].startswith("2015-") and run["summary"]["posts"] > 0
    end = datetime.fromisoformat(run["period_end"])
    assert newest - timedelta(days=1) < end <= newest + timedelta(days=1)  # the newest (full) day
    missing = c.post("/api/reports", json={"watch_id": 999_999, "period": "daily"}, headers=H(env, "write"))
    assert missing.status_code == 404, missing.text


# --- OpenAPI fuzzing ------------------------------------------------------------------------------
EXAMPLES = 10  # per operation: ~40 operations, a few seconds each on a shared 2-core machine


def test_openapi_no_server_errors(env):
    """Every operation (but the endless event stream and slow report generation, tested above) gets
    schema-generated requests; none may answer 5xx, and every answer must match its documented schema."""
    import schemathesis
    from hypothesis import given
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_asgi("/openapi.json", env["c"].app)
    schema = schema.exclude(path="/api/live").exclude(path="/api/reports", method="POST")
    failures, ran = [], 0
    for result in schema.get_all_operations():
        op = result.ok()

        @given(case=op.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case):
            case.call_and_validate(headers=H(env, "admin"), checks=[not_a_server_error, response_schema_conformance])

        try:
            run()
            ran += 1
        except Exception as e:  # collect every operation's failure, then fail once with all of them
            failures.append(f"{op.method.upper()} {op.path}: {str(e)[:1500]}")
    assert ran >= 35 and not failures, "\n\n".join(failures)


def test_openapi_document(env):
    doc = env["c"].get("/openapi.json").json()
    paths = doc["paths"]
    for p in (
        "/api/watches",
        "/api/rules",
        "/api/silences",
        "/api/webhooks",
        "/api/posts",
        "/api/trends",
        "/api/authors/{author_id}",
        "/api/alerts/{firing_id}",
        "/api/reports",
        "/api/live",
        "/api/keys",
    ):
        assert p in paths, p
    assert {"APIKeyHeader", "HTTPBearer"} <= set(doc["components"]["securitySchemes"])
    get_posts = paths["/api/posts"]["get"]["responses"]
    assert get_posts["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PostPage")
    assert "401" in get_posts and "403" in get_posts


def test_webhook_urls_hidden_below_admin_ids_with_slashes_and_dead_notifications_resent(env):
    c = env["c"]
    reader = {"X-API-Key": new_key(env["ep"], "read")}  # the module's read key may be revoked by now
    hook = c.post(
        "/api/webhooks",
        json={"name": "slack", "url": "https://93.184.216.35/services/T0/B0/tok3n"},
        headers=H(env, "admin"),
    ).json()
    listed = c.get("/api/webhooks", headers=reader)
    assert listed.status_code == 200, listed.text
    shown = {h["name"]: h["url"] for h in listed.json()}
    assert shown["slack"] == "https://93.184.216.35/***"
    assert c.get(f"/api/webhooks/{hook['id']}", headers=H(env, "admin")).json()["url"].endswith("/tok3n")
    one = sql(env, "SELECT id, author_id, created_at FROM posts LIMIT 1")[0]
    with env["engine"].begin() as conn:  # an id whose native part holds "/" (an AT-URI, a URL)
        conn.execute(
            text(
                "INSERT INTO posts (id, platform, author_id, text, created_at, modalities, extra) "
                "VALUES ('bsky:at://did:plc:x/app.bsky.feed.post/3k', 'bsky', :a, 'hi', :t, '{}', '{}')"
            ),
            {"a": one.author_id, "t": one.created_at},
        )
    got = c.get("/api/posts/bsky:at://did:plc:x/app.bsky.feed.post/3k", headers=reader)
    assert got.status_code == 200 and got.json()["id"] == "bsky:at://did:plc:x/app.bsky.feed.post/3k"
    with env["engine"].begin() as conn:
        nid = conn.execute(
            text(
                "INSERT INTO notifications (msg_id, rule_id, watch_id, endpoint_id, reason, status, body, state, "
                "attempts) VALUES ('msg_dead1', 1, 1, :e, 'initial', 'firing', '{}', 'dead', 8) RETURNING id"
            ),
            {"e": hook["id"]},
        ).scalar_one()
    assert c.post("/api/notifications/resend", json={"ids": [nid]}, headers=reader).status_code == 403
    assert c.post("/api/notifications/resend", json={"ids": [nid]}, headers=H(env, "write")).json() == {"queued": [nid]}
    assert sql(env, "SELECT state, attempts FROM notifications WHERE id = :i", i=nid)[0] == ("pending", 0)
