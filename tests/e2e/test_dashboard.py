"""The dashboard in headless Chromium (Debian's, driven by Playwright) on a replay of real airline data.

Real servers and processes: PostgreSQL, Redis, a Kafka-protocol broker, the scorer (the real
model), the trends worker and `voxpop api`. Proves: the dashboard renders the stored numbers; a
click on a bar drills down to exactly the posts behind it (checked against SQL); a chart updates
live (server-sent events) while new tweets flow ingest -> scorer; a rule created in the UI fires
on a closed window and appears in the alert feed without a reload. Screenshots go to
docs/screenshots/ (key ones) and the test's tmp dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

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
    want = q(
        stack,
        "SELECT count(*) FROM post_watches WHERE watch_id = :w AND created_at >= "
        "(SELECT date_bin('1 hour', max(created_at), '2001-01-01') + interval '1 hour' - interval '7 days' "
        "FROM post_watches WHERE watch_id = :w)",
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
    page.click("tr.click")
    page.wait_for_selector("text=Notifications")
    assert not stack["errors"], stack["errors"]
