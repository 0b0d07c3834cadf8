"""Alert delivery against real PostgreSQL and a real HTTP receiver that verifies every request with
the official `standardwebhooks` package: grouping, dedup, resolution, retries while the receiver
is down, dead letters, silences, repeat interval and the URL policy."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.alerts import manage
from services.alerts.dispatcher import Dispatcher
from services.alerts.policy import PolicyError, UrlPolicy
from services.alerts.receiver import Receiver, free_port
from services.config import AlertsSettings
from tests.integration.trendkit import clean_alert_db

pytestmark = pytest.mark.integration
LOCAL = UrlPolicy(allow_cidrs=["127.0.0.1/32"])  # tests must allow loopback explicitly
W0 = datetime(2015, 2, 22, 20, tzinfo=UTC)


@pytest.fixture
def engine():
    return clean_alert_db()


def _rule(engine, name: str = "neg-spike", severity: str = "warning") -> int:
    return manage.create_rule(
        engine, name=name, kind="spike", metric="n_negative", z_score=3, severity=severity, min_baseline=6
    )["id"]


def fire(engine, rule_id: int, watch_id: int, hour: int, status: str = "firing") -> int:
    """What the trends app writes on window close: a firing and its outbox row, in one transaction."""
    start = W0 + timedelta(hours=hour)
    with engine.begin() as c:
        fid = c.execute(
            text(
                "INSERT INTO alert_firings (rule_id, rule_name, status, watch_id, window_size, window_start, "
                "window_end, metric, observed, baseline, baseline_std, zscore, n_posts, severity, "
                "sample_post_ids) VALUES (:r, 'neg-spike', :st, :w, '1h', :s, :e, 'n_negative', 74, "
                "0.08, 0.4, 185, 99, (SELECT severity FROM alert_rules WHERE id = :r), "
                "ARRAY['twitter:1','twitter:2']) RETURNING id"
            ),
            {"r": rule_id, "st": status, "w": watch_id, "s": start, "e": start + timedelta(hours=1)},
        ).scalar_one()
        c.execute(text("INSERT INTO alert_outbox (firing_id) VALUES (:f)"), {"f": fid})
    return fid


def advance(engine, hour: float) -> None:
    """Move the trends app's event clock (``trend_progress.closed_through``) to W0 + ``hour``."""
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO trend_progress (source, closed_through) VALUES ('test', :t) "
                "ON CONFLICT (source) DO UPDATE SET closed_through = EXCLUDED.closed_through"
            ),
            {"t": W0 + timedelta(hours=hour)},
        )


def _cfg(**kw: Any) -> AlertsSettings:
    base = dict(
        group_wait_s=0.0,
        repeat_interval_s=3600.0,
        backoff_base_s=0.2,
        backoff_max_s=1.0,
        poll_interval_s=0.05,
    )
    return AlertsSettings(**{**base, **kw})


def _pump(d: Dispatcher, seconds: float, until=None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        d.run_once()
        if until is not None and until():
            return
        time.sleep(0.05)


def _q(engine, sql: str, **p: Any) -> list[Any]:
    with engine.connect() as c:
        return list(c.execute(text(sql), p).all())


def test_signed_grouped_deduplicated_and_resolved(engine) -> None:
    rule = _rule(engine)
    ep = manage.create_endpoint(engine, "ops", "http://127.0.0.1:1/x", policy=LOCAL)
    slack = manage.create_endpoint(engine, "slack", "http://127.0.0.1:1/x", kind="slack", policy=LOCAL)
    rx = Receiver(ep["secret"]).start()
    rx_slack = Receiver(slack["secret"]).start()
    with engine.begin() as c:
        c.execute(text("UPDATE webhook_endpoints SET url = :u WHERE id = :i"), {"u": rx.url, "i": ep["id"]})
        c.execute(text("UPDATE webhook_endpoints SET url = :u WHERE id = :i"), {"u": rx_slack.url, "i": slack["id"]})
    d = Dispatcher(engine, _cfg(group_wait_s=5400, repeat_interval_s=4 * 3600), policy=LOCAL)
    try:
        fire(engine, rule, 1, 0)
        fire(engine, rule, 1, 1)  # same group within group_wait (event time): one notification
        fire(engine, rule, 2, 0)  # another watch: its own group
        _pump(d, 1.0)
        assert not rx.ok  # the wait is event time: no window has closed past it yet
        advance(engine, 2.5)
        _pump(d, 5, until=lambda: len(rx.ok) >= 2 and len(rx_slack.ok) >= 2)
        d.run_once()
        assert len(rx.ok) == 2 and rx.bad == 0
        payloads = {m["payload"]["data"]["watch"]["id"]: m["payload"] for m in rx.ok}
        p = payloads[1]
        assert p["type"] == "alert.firing" and p["data"]["reason"] == "initial"
        assert p["data"]["alert"]["observed"] == 74 and p["data"]["alert"]["sample_post_ids"] == [
            "twitter:1",
            "twitter:2",
        ]
        assert p["data"]["firing_count"] == 2
        assert {"text", "blocks"} <= set(rx_slack.ok[0]["payload"])  # Slack-compatible message

        fire(engine, rule, 1, 2)  # still firing: deduplicated (repeat_interval not reached)
        _pump(d, 0.5)
        assert len(rx.ok) == 2
        fire(engine, rule, 1, 3, status="resolved")
        _pump(d, 5, until=lambda: len(rx.ok) >= 3)
        assert rx.ok[-1]["payload"]["type"] == "alert.resolved" and rx.ok[-1]["payload"]["data"]["watch"]["id"] == 1
        outcomes = Counter(r[0] for r in _q(engine, "SELECT outcome FROM alert_outbox"))
        assert outcomes == {"grouped": 3, "deduplicated": 1, "resolved": 1}

        headers, body = rx.raw[0]  # tampered body and stale timestamps fail verification
        with pytest.raises(WebhookVerificationError):
            Webhook(ep["secret"]).verify(body.replace(b"74", b"75"), headers)
        stale = dict(headers, **{"webhook-timestamp": str(int(time.time()) - 3600)})
        with pytest.raises(WebhookVerificationError):
            Webhook(ep["secret"]).verify(body, stale)
        assert all(r[0] == "ok" for r in _q(engine, "SELECT outcome FROM webhook_deliveries"))
    finally:
        rx.stop()
        rx_slack.stop()
        d.close()


def test_receiver_down_then_every_alert_once_and_dead_letters(engine) -> None:
    rule = _rule(engine)
    port = free_port()
    ep = manage.create_endpoint(
        engine, "down-then-up", f"http://127.0.0.1:{port}/hooks", policy=LOCAL, max_attempts=30, timeout_s=2
    )
    gone = manage.create_endpoint(
        engine, "never-up", f"http://127.0.0.1:{free_port()}/x", policy=LOCAL, max_attempts=3, timeout_s=1
    )
    d = Dispatcher(engine, _cfg(), policy=LOCAL)
    rx = Receiver(ep["secret"], port)
    try:
        for w in range(1, 6):
            fire(engine, rule, w, 0)
        _pump(d, 2.0)  # receiver down: attempts fail and back off
        failed = _q(engine, "SELECT count(*) FROM webhook_deliveries WHERE outcome = 'retry'")[0][0]
        assert failed >= 5 and not rx.ok
        rx.start()
        _pump(
            d,
            15,
            until=lambda: (
                len(rx.ok) >= 5
                and _q(engine, "SELECT count(*) FROM notifications WHERE state IN ('pending','sending')")[0][0] == 0
            ),
        )
        ids = Counter(m["id"] for m in rx.ok)
        assert len(ids) == 5 and max(ids.values()) == 1  # every alert once, none twice
        assert {m["payload"]["data"]["watch"]["id"] for m in rx.ok} == {1, 2, 3, 4, 5}
        rows = _q(
            engine,
            "SELECT n.id, n.attempts, count(d.id), count(*) FILTER (WHERE d.outcome = 'ok') "
            "FROM notifications n JOIN webhook_deliveries d ON d.notification_id = n.id "
            "WHERE n.endpoint_id = :e GROUP BY n.id, n.attempts",
            e=ep["id"],
        )
        assert all(attempts == n_rows and ok == 1 for _, attempts, n_rows, ok in rows)  # every attempt recorded
        dead = _q(engine, "SELECT state, attempts FROM notifications WHERE endpoint_id = :e", e=gone["id"])
        assert dead and all(state == "dead" and attempts == 3 for state, attempts in dead)
        gaps = _q(
            engine,
            "SELECT started_at FROM webhook_deliveries d JOIN notifications n ON n.id = d.notification_id "
            "WHERE n.endpoint_id = :e AND n.watch_id = 1 ORDER BY attempt",
            e=gone["id"],
        )
        assert gaps[2][0] - gaps[1][0] >= gaps[1][0] - gaps[0][0] - timedelta(seconds=0.15)  # backoff grows
    finally:
        rx.stop()
        d.close()


def test_silence_suppresses_expires_and_repeat_interval_holds(engine) -> None:
    rule = _rule(engine)
    ep = manage.create_endpoint(engine, "ops", "http://127.0.0.1:1/x", policy=LOCAL)
    rx = Receiver(ep["secret"]).start()
    with engine.begin() as c:
        c.execute(text("UPDATE webhook_endpoints SET url = :u"), {"u": rx.url})
    sil = manage.create_silence(
        engine, duration_s=1.5, rule_id=rule, watch_id=1, comment="maintenance", created_by="test"
    )
    d = Dispatcher(engine, _cfg(repeat_interval_s=2 * 3600), policy=LOCAL)
    try:
        fire(engine, rule, 1, 0)
        _pump(d, 0.6)
        assert not rx.ok
        assert _q(engine, "SELECT state, silence_id FROM notifications") == [("silenced", sil["id"])]
        assert _q(engine, "SELECT suppressed_count FROM silences")[0][0] == 1
        _pump(d, 3, until=lambda: len(rx.ok) >= 1)  # silence ends -> the still-firing alert goes out
        assert len(rx.ok) == 1 and rx.ok[0]["payload"]["data"]["reason"] == "initial"
        assert _q(engine, "SELECT expired_at IS NOT NULL FROM silences")[0][0]  # expiry recorded
        for h in range(1, 6):  # firing on and on: deduplicated until the repeat interval passes
            fire(engine, rule, 1, h)
            _pump(d, 0.3)
        _pump(d, 3, until=lambda: len(rx.ok) >= 3)
        _pump(d, 0.5)
        reasons = [m["payload"]["data"]["reason"] for m in rx.ok]
        assert reasons == ["initial", "repeat", "repeat"]  # event time 1 h, 3 h, 5 h: every 2 h
        assert [json.loads(b)["data"]["firing_count"] for _, b in rx.raw] == [1, 3, 5]
    finally:
        rx.stop()
        d.close()


def test_policy_blocks_private_targets_unless_allowed(engine) -> None:
    with pytest.raises(PolicyError):
        manage.create_endpoint(engine, "loop", "http://127.0.0.1:9/x")  # default policy: no loopback
    with pytest.raises(PolicyError):
        manage.create_endpoint(engine, "meta", "http://169.254.169.254/latest/meta-data")
    rule = _rule(engine)
    manage.create_endpoint(engine, "loop", "http://127.0.0.1:9/x", policy=LOCAL)
    d = Dispatcher(engine, _cfg(), policy=UrlPolicy())  # the dispatcher re-checks before sending
    try:
        fire(engine, rule, 1, 0)
        _pump(d, 1.0)
        assert _q(engine, "SELECT outcome FROM webhook_deliveries") == [("blocked",)]
        assert _q(engine, "SELECT state FROM notifications") == [("dead",)]
    finally:
        d.close()
