"""The dashboard in headless Chromium (Debian's, driven by Playwright) on a replay of real airline data.

Real servers and processes: PostgreSQL, Redis, a Kafka-protocol broker, the scorer (the real
model), the trends worker and `voxpop api`. Proves: the dashboard renders the stored numbers; a
click on a bar drills down to exactly the posts behind it (checked against SQL); a chart updates
live (server-sent events) while new tweets flow ingest -> scorer; a rule created in the UI fires
on a closed window and appears in the alert feed without a reload; times follow the browser's time
zone or the one chosen (kept across reloads); sentiment lines are smoothed by volume exactly as the
legend says; webhook endpoints (secret shown once, the URL policy's refusal shown) and silences
are created, changed and removed in the UI, checked in PostgreSQL. Screenshots go to
docs/screenshots/ (key ones) and the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis
from sqlalchemy import text

from services.ingest.gate import Incoming, IngestGate, WatchCache
from services.ingest.replay import replay
from services.storage.db import engine_for
from services.storage.watches import load_watch_specs
from services.stream.kafka import make_producer
from tests.conftest import dataset_path
from tests.integration.apikit import airline_posts, api_dataset, free_port, new_key, start_api
from tests.integration.streamkit import ROOT, child_env, start_scorer, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHROMIUM = os.environ.get("VOXPOP_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PRELOADED, LIVE = 1500, 400
SHOTS = ROOT / "docs" / "screenshots"


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def stack(stack_endpoints, tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set VOXPOP_CHROMIUM)")
    pw = pytest.importorskip("playwright.sync_api")
    ep = stack_endpoints
    csv = dataset_path("airline-tweets") / "airline_tweets_clean.csv"
    posts = airline_posts(csv, limit=PRELOADED + LIVE)
    logs = tmp_path_factory.mktemp("e2e")
    s = api_dataset(
        ep,
        posts[:PRELOADED],
        state_dir=logs,
        scorer_max_batch=16,
        scorer_max_wait_ms=200,
        data_dir=csv.parent.parent,
        scorer_threads=1,
        trends_lateness_s=0.0,  # the trends worker below goes on from the stored posts' watermark
    )
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["scorer"] = start_scorer(s, logs / "scorer.log")
        tag = uuid.uuid4().hex[:8]
        tenv = child_env(s) | {
            "VOXPOP_TRENDS_APP_ID": f"trends-{tag}",
            "VOXPOP_TRENDS_LATENESS_S": "0",
            "VOXPOP_TRENDS_IDLE_S": "20",
            "VOXPOP_TRENDS_WINDOWS": '["1h"]',
            "VOXPOP_TRENDS_SESSION_TIMEOUT_S": "10",
            "VOXPOP_TRENDS_BATCH_WITHIN_S": "0.3",
        }
        procs["trends"] = subprocess.Popen(
            [sys.executable, "-m", "services.trends.worker"],
            env=tenv,
            cwd=ROOT,
            stdout=(logs / "trends.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        port = free_port()
        procs["api"] = start_api(s, logs / "api.log", port, {"VOXPOP_TRENDS_WINDOWS": '["1h"]'})
        key = new_key(ep, "admin", "e2e")
        play = pw.sync_playwright().start()
        browser = play.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        base = f"http://127.0.0.1:{port}/"
        page.goto(base + "#key=" + key)
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        engine = engine_for(ep.database_url)
        with engine.connect() as conn:
            watches = dict(conn.execute(text("SELECT name, id FROM watches")).all())
        yield {
            "s": s,
            "ep": ep,
            "page": page,
            "base": base,
            "engine": engine,
            "watches": watches,
            "logs": logs,
            "procs": procs,
            "live_posts": posts[PRELOADED:],
            "errors": errors,
            "browser": browser,
            "key": key,
        }
        browser.close()
        play.stop()
    finally:
        for p in procs.values():
            _stop(p)


def shot(env, name: str, keep: bool = False) -> None:
    path = env["logs"] / f"{name}.png"
    env["page"].screenshot(path=str(path))
    if keep:
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS / f"{name}.png")


def q(env, sql: str, **p):
    with env["engine"].connect() as conn:
        return conn.execute(text(sql), p).all()


def test_dashboard_renders_stored_numbers(stack):
    page = stack["page"]
    page.goto(stack["base"] + "#/")
    page.wait_for_selector("#chart-volume svg path[data-series]")
    n_posts = q(stack, "SELECT count(*) FROM posts")[0][0]
    assert page.inner_text("[data-kpi=posts] b").replace(",", "") == str(n_posts)
    assert page.locator("#chart-volume svg path[data-series]").count() == len(stack["watches"])
    assert page.locator(".card[data-watch]").count() == len(stack["watches"])
    assert page.locator("#sov a").count() >= 5
    shot(stack, "dashboard-overview", keep=True)
    assert not stack["errors"], stack["errors"]


def test_drilldown_shows_the_posts_behind_a_bar(stack):
    page, jb = stack["page"], stack["watches"]["JetBlue"]
    page.goto(stack["base"] + f"#/watch/{jb}")
    page.wait_for_selector("#chart-watch-volume rect.bar[data-label=negative]")
    bars = page.locator("#chart-watch-volume rect.bar[data-label=negative]")
    heights = [float(bars.nth(i).get_attribute("height")) for i in range(bars.count())]
    tallest = bars.nth(heights.index(max(heights)))
    t = tallest.get_attribute("data-t")
    tallest.click()
    page.wait_for_selector("#drawer:not([hidden]) .post")
    while page.locator("#drawer .more:not([hidden])").count():
        page.click("#drawer .more")
        page.wait_for_timeout(300)
    shown = set(page.locator("#drawer .post").evaluate_all("els => els.map(e => e.dataset.id)"))
    want = {
        r[0]
        for r in q(
            stack,
            """SELECT p.id FROM post_watches pw JOIN posts p ON p.id = pw.post_id
                                      JOIN predictions pr ON pr.post_id = p.id
                                      WHERE pw.watch_id = :w AND pr.label = 'negative' AND p.created_at >= :t
                                        AND p.created_at < CAST(:t AS timestamptz) + interval '1 hour'""",
            w=jb,
            t=t,
        )
    }
    assert want and shown == want
    assert page.locator("#drawer .filters button.on").inner_text() == "Negative"
    assert page.locator("#drawer [data-dominant=text]").count() == len(want)
    shot(stack, "dashboard-drilldown", keep=True)
    page.click("#drawer-close")


def test_rule_from_ui_fires_and_charts_update_live(stack):
    page, jb = stack["page"], stack["watches"]["JetBlue"]
    # 1. a rule made in the UI
    page.goto(stack["base"] + "#/manage")
    page.wait_for_selector("#rule-form")
    page.fill("#rule-form [name=name]", "JetBlue negativity (e2e)")
    page.select_option("#rule-form [name=watch_id]", str(jb))
    page.select_option("#rule-form [name=window_size]", "1h")
    page.select_option("#rule-form [name=metric]", "share_negative")
    page.select_option("#rule-form [name=op]", ">=")
    page.fill("#rule-form [name=value]", "0.2")
    page.fill("#rule-form [name=min_volume]", "3")
    page.select_option("#rule-form [name=severity]", "critical")
    page.click("#rule-form button[type=submit]")
    page.wait_for_selector("tr[data-rule='JetBlue negativity (e2e)']")
    assert (
        q(stack, "SELECT count(*) FROM alert_rules WHERE name = 'JetBlue negativity (e2e)' AND watch_id = :w", w=jb)[0][
            0
        ]
        == 1
    )
    # 2. the JetBlue page, then new tweets through ingest -> broker -> scorer -> SSE
    page.goto(stack["base"] + f"#/watch/{jb}")
    page.wait_for_selector("#chart-watch-volume svg")
    before = int(page.get_attribute("#chart-watch-volume", "data-total"))
    assert page.locator("#live.on").count() == 1
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page
    s, ep = stack["s"], stack["ep"]
    gate = IngestGate(
        s,
        make_producer(ep.kafka_bootstrap),
        redis.Redis.from_url(ep.redis_url),
        engine_for(ep.database_url),
        WatchCache(lambda: load_watch_specs(ep.database_url)),
    )
    live = stack["live_posts"]
    recs = [Incoming(raw=p.model_dump_json().encode(), post=p.model_copy(), source="e2e") for p in live]
    replay(recs, gate, speed=0, batch_size=50, progress=False)
    scorer, log = stack["procs"]["scorer"], stack["logs"] / "scorer.log"
    wait_for(
        lambda: q(stack, "SELECT count(*) FROM posts")[0][0] >= 1500 + len(live),
        240,
        "the live posts scored",
        scorer,
        log,
    )
    stored = q(stack, "SELECT count(*) FROM post_watches WHERE watch_id = :w", w=jb)[0][0]
    wait_for(
        lambda: q(stack, "SELECT count(*) FROM trend_members WHERE watch_id = :w", w=jb)[0][0] == stored,
        120,
        "the trends worker to fold every post",
        stack["procs"]["trends"],
        stack["logs"] / "trends.log",
    )
    # the chart counts the posts of the last 7 days that were on time for their hour (a post whose
    # window had closed when it arrived is counted in the window's late_posts instead)
    want = q(
        stack,
        "SELECT count(*) FROM trend_members WHERE watch_id = :w AND created_at >= "
        "(SELECT date_bin('1 hour', max(created_at), '2001-01-01') + interval '1 hour' - interval '7 days' "
        "FROM post_watches WHERE watch_id = :w) AND (arrival_wm IS NULL OR "
        "arrival_wm < date_bin('1 hour', created_at, '2001-01-01') + interval '1 hour')",
        w=jb,
    )[0][0]
    page.wait_for_function(
        f"() => Number(document.querySelector('#chart-watch-volume').dataset.total) === {want}", timeout=60_000
    )
    assert want > before
    # the chart's total is set inside view.reload(); the "updated" stamp follows when the whole reload finished
    page.wait_for_function("() => Number(document.body.dataset.updated || 0) > 0", timeout=30_000)
    assert page.evaluate("window.__sameDocument === true"), "updated by the event stream, not by a reload"
    shot(stack, "dashboard-live-update")
    # 3. the trends worker closes hourly windows of the new posts; the UI rule fires into the feed
    trends_log = stack["logs"] / "trends.log"
    wait_for(
        lambda: q(stack, "SELECT count(*) FROM alert_firings WHERE rule_name = 'JetBlue negativity (e2e)'")[0][0] > 0,
        240,
        "the rule to fire",
        stack["procs"]["trends"],
        trends_log,
    )
    # pub/sub channels are server-wide (not per Redis db), so other sessions' alerts may show up too
    item = page.wait_for_selector(".feed li.firing[data-firing]:has-text('JetBlue negativity (e2e)')", timeout=30_000)
    fid = int(item.get_attribute("data-firing"))
    assert q(stack, "SELECT rule_name FROM alert_firings WHERE id = :i", i=fid)[0][0] == "JetBlue negativity (e2e)"
    assert "share_negative" in item.inner_text()
    shot(stack, "dashboard-alert-fired", keep=True)
    page.goto(stack["base"] + "#/alerts")
    page.wait_for_selector("tr.click")
    page.click(f"tr.click[data-firing='{fid}']")
    page.wait_for_selector(f"[data-firing='{fid}'] >> text=Notifications")
    assert page.evaluate("location.hash") == f"#/alerts/{fid}"  # the webhook's dashboard_url route
    # 4. the why, on the alert's own page (the webhook links here) and on the watch page
    page.goto(stack["base"] + "#/watch/1")  # leave, then come back by the link alone
    page.goto(stack["base"] + f"#/alerts/{fid}")
    page.wait_for_selector(f"div[data-firing='{fid}'] .why")
    samples = page.locator(".why-samples li[data-post]")
    stored = q(stack, "SELECT why FROM alert_firings WHERE id = :i", i=fid)[0][0]
    assert stored and stored["label"] == "negative"
    want_ids = [p["post_id"] for p in stored["samples"]]
    assert want_ids and [samples.nth(i).get_attribute("data-post") for i in range(samples.count())] == want_ids
    first = q(stack, "SELECT text FROM posts WHERE id = :i", i=want_ids[0])[0][0]
    words = lambda t: " ".join(t.split())  # noqa: E731
    assert words(samples.nth(0).locator("a").inner_text()) == words(first[:500])
    shot(stack, "dashboard-alert-why", keep=True)
    samples.nth(0).locator("a").click()
    page.wait_for_function(f"() => location.hash === '#/post/{want_ids[0]}'.replace(/:/g, '%3A')")
    page.wait_for_selector(f"ul.posts li.post[data-id='{want_ids[0]}']")
    page.goto(stack["base"] + f"#/watch/{jb}")
    page.wait_for_selector("#watch-why[data-firing] .why")
    assert page.locator("#watch-why .why-samples li").count() >= 1
    assert not stack["errors"], stack["errors"]


def test_time_zone_is_the_browsers_then_the_chosen_one(stack):
    """Tokyo's browser sees Tokyo time; UTC, once chosen, stays chosen after a reload."""
    ctx = stack["browser"].new_context(timezone_id="Asia/Tokyo", viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    try:
        page.goto(stack["base"] + "#key=" + stack["key"])
        page.wait_for_selector("body[data-ready='1'] [data-kpi=posts] small")
        assert page.input_value("#tz") == "Asia/Tokyo"
        newest = q(stack, "SELECT max(created_at) FROM posts")[0][0]
        small = page.inner_text("[data-kpi=posts] small")
        assert f"{newest.astimezone(ZoneInfo('Asia/Tokyo')):%H:%M} GMT+9" in small, small
        page.select_option("#tz", "UTC")
        page.wait_for_function("() => document.querySelector('[data-kpi=posts] small').innerText.includes('UTC')")
        assert f"{newest.astimezone(UTC):%H:%M} UTC" in page.inner_text("[data-kpi=posts] small")
        page.reload()
        page.wait_for_selector("body[data-ready='1'] [data-kpi=posts] small")
        assert page.input_value("#tz") == "UTC" and "UTC" in page.inner_text("[data-kpi=posts] small")
        page.select_option("#tz", "Asia/Tokyo")  # back to the browser's: follow it again
        assert page.evaluate("localStorage.getItem('voxpop.tz')") is None
    finally:
        ctx.close()


def test_sentiment_lines_are_smoothed_by_volume(stack):
    """The drawn mean score of each hour is its mean pulled toward the range's mean by k/(n+k),
    so the few-post hours no longer swing the line across the chart."""
    page, jb = stack["page"], stack["watches"]["JetBlue"]
    page.goto(stack["base"] + f"#/watch/{jb}")
    page.wait_for_selector("#chart-watch-sentiment path[data-series='mean score']")
    k = int(page.get_attribute("#chart-watch-sentiment ~ .legend [data-smoothing]", "data-smoothing").split("-")[1])
    assert f"{k}/(n+{k})" in page.inner_text("#chart-watch-sentiment ~ .legend")
    drawn = json.loads(page.get_attribute("#chart-watch-sentiment path[data-series='mean score']", "data-values"))
    bucket, days = page.evaluate(
        "[localStorage.getItem('voxpop.bucket') || '1h', localStorage.getItem('voxpop.range') || '7']"
    )
    tr = httpx.get(
        stack["base"] + "api/trends",
        params={"watch_id": jb, "bucket": bucket, "days": days},
        headers={"X-API-Key": stack["key"]},
    ).json()
    pts = tr["series"][0]["points"]
    scored = [p for p in pts if p["n"] and p["mean_score"] is not None]
    prior = sum(p["mean_score"] * p["n"] for p in scored) / sum(p["n"] for p in scored)
    want = [
        (p["n"] * p["mean_score"] + k * prior) / (p["n"] + k) if p["n"] and p["mean_score"] is not None else None
        for p in pts
    ]
    assert len(drawn) == len(want)
    assert all(
        (a is None) == (b is None) and (a is None or abs(a - b) < 1e-3) for a, b in zip(drawn, want, strict=True)
    )
    few = [(p, v) for p, v in zip(pts, drawn, strict=True) if 0 < p["n"] <= 2]
    assert few, "no hour of one or two posts in range"
    assert all(abs(v - prior) <= 2 / (2 + k) * abs(p["mean_score"] - prior) + 1e-3 for p, v in few)
    raw = [p["mean_score"] for p in scored]
    assert max(v for v in drawn if v is not None) - min(v for v in drawn if v is not None) < max(raw) - min(raw)
    page.goto(stack["base"] + "#/")
    page.wait_for_selector("#chart-sentiment path[data-series]")
    assert page.locator("[data-smoothing]").count() == 1


def test_webhooks_and_silences_managed_in_the_ui(stack):
    page, jb = stack["page"], stack["watches"]["JetBlue"]
    page.on("dialog", lambda d: d.accept())
    page.goto(stack["base"] + "#/manage")
    page.wait_for_selector("#webhook-form")
    # a loopback target is refused, and the message names the setting that would allow it
    page.fill("#webhook-form [name=name]", "e2e hook")
    page.fill("#webhook-form [name=url]", "http://127.0.0.1:9/hook")
    page.click("#webhook-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#webhook-error').textContent.length > 0")
    assert "VOXPOP_ALERTS_ALLOW_CIDRS" in page.inner_text("#webhook-error")
    assert q(stack, "SELECT count(*) FROM webhook_endpoints WHERE name = 'e2e hook'")[0][0] == 0
    # a public one is registered; its secret is shown once, and is the stored one
    page.fill("#webhook-form [name=url]", "https://93.184.216.34/voxpop")
    page.select_option("#webhook-form [name=min_severity]", "warning")
    page.click("#webhook-form button[type=submit]")
    page.wait_for_selector("tr[data-webhook='e2e hook']")
    shown = page.inner_text("#webhook-secret code")
    (hid, secret, severity, enabled) = q(
        stack, "SELECT id, secret, min_severity, enabled FROM webhook_endpoints WHERE name = 'e2e hook'"
    )[0]
    assert shown == secret and secret.startswith("whsec_") and severity == "warning" and enabled
    assert page.inner_text("#webhook-error") == ""
    # a silence of JetBlue for an hour
    page.select_option("#silence-form [name=watch_id]", str(jb))
    page.select_option("#silence-form [name=for]", label="1 hour")
    page.fill("#silence-form [name=comment]", "e2e quiet")
    page.click("#silence-form button[type=submit]")
    page.wait_for_selector("#silence-table tr[data-silence]:has-text('e2e quiet') .pill:text('active')")
    sid, watch_id, ends_at = q(stack, "SELECT id, watch_id, ends_at FROM silences WHERE comment = 'e2e quiet'")[0]
    assert watch_id == jb and abs(ends_at - datetime.now(UTC) - timedelta(hours=1)) < timedelta(minutes=2)
    shot(stack, "dashboard-manage-webhooks-silences", keep=True)
    # changed and removed from the UI
    page.click("tr[data-webhook='e2e hook'] button:text('Disable')")
    page.wait_for_selector("tr[data-webhook='e2e hook'] .pill:text('disabled')")
    assert q(stack, "SELECT enabled FROM webhook_endpoints WHERE id = :i", i=hid)[0][0] is False
    page.click("tr[data-webhook='e2e hook'] button:text('Delete')")
    page.wait_for_selector("tr[data-webhook='e2e hook']", state="detached")
    assert q(stack, "SELECT count(*) FROM webhook_endpoints WHERE id = :i", i=hid)[0][0] == 0
    page.click(f"tr[data-silence='{sid}'] button:text('Expire now')")
    page.wait_for_selector(f"tr[data-silence='{sid}'] .pill:text('expired')")
    assert q(stack, "SELECT expired_at FROM silences WHERE id = :i", i=sid)[0][0] is not None
    assert not stack["errors"], stack["errors"]
