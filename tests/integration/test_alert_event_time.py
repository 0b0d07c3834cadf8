"""Alert episodes on event time, on a slice of the real airline stream, against real PostgreSQL and a
receiver that verifies every request with `standardwebhooks`: the same stream replayed at two
speeds delivers the same sequence; American 2015-02-22 stays one episode through its peak; an
episode that resolves before its group wait is never dropped silently (its reason is in the API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from pipelines.trends.airline import airline_stream
from services.alerts.quality import RULE_SETS, episodes_from_db, run_rule_set
from services.api.app import create_app
from services.config import AlertsSettings, ApiSettings
from tests.conftest import dataset_path
from tests.integration.apikit import new_key
from tests.integration.trendkit import clean_alert_db
from tests.stack import get_test_endpoints, settings_for

pytestmark = pytest.mark.integration
PT = timedelta(hours=-8)
NEGBIN = "negative binomial + hysteresis"
BEFORE = "before: mean/std z, spike in its own baseline, resolve at once"


@pytest.fixture(scope="module")
def posts():
    csv = dataset_path("airline-tweets") / "airline_tweets_clean.csv"
    lo, hi = datetime(2015, 2, 20, 12, tzinfo=UTC), datetime(2015, 2, 23, 8, tzinfo=UTC)
    return csv, [p for p in airline_stream(csv) if lo <= p.created_at < hi]


@pytest.fixture
def engine():
    return clean_alert_db()


def test_two_speeds_deliver_the_same_sequence(engine, posts) -> None:
    csv, slice_ = posts
    # live-like: small batches, a dispatcher pass after each; backfill: big batches, one pass at the end
    rule_id, rx_live, live = run_rule_set(engine, csv, NEGBIN, RULE_SETS[NEGBIN], slice_, batch=50)
    eps = episodes_from_db(engine, rule_id)
    _, rx_fast, fast = run_rule_set(engine, csv, NEGBIN, RULE_SETS[NEGBIN], slice_, batch=5000, dispatch_every=10**6)
    assert live and live == fast  # reason, status, state, watch, window, severity: in creation order
    assert {r[2] for r in live} == {"delivered"} and rx_live.bad == rx_fast.bad == 0
    assert len(rx_live.ok) == len(rx_fast.ok) == len(live)  # default group wait (30 s): none dropped

    def seen(rx):
        return sorted(
            (m["payload"]["type"], m["payload"]["data"]["reason"], m["payload"]["data"]["alert"]["window_start"])
            for m in rx.ok
        )

    assert seen(rx_live) == seen(rx_fast)
    # American (watch 1) 2015-02-22: one episode from 12:00 PT, still open at 19:00 PT
    american = [e for e in eps if e.watch_id == 1]
    start = datetime(2015, 2, 22, 12, tzinfo=UTC) - PT
    assert american and american[0].opened == start
    assert american[0].resolved is None or american[0].resolved > start + timedelta(hours=7)
    payload = next(m["payload"] for m in rx_live.ok if m["payload"]["data"]["watch"]["id"] == 1)
    assert payload["data"]["dashboard_url"].endswith(f"/#/alerts/{payload['data']['alert']['firing_id']}")


def test_resolved_before_group_wait_is_recorded_and_visible(engine, posts) -> None:
    csv, slice_ = posts
    wait = AlertsSettings(group_wait_s=3 * 3600)  # longer than the old rule's one-hour episodes
    run_rule_set(engine, csv, BEFORE, RULE_SETS[BEFORE], slice_, alerts=wait)
    with engine.connect() as c:
        dropped = (
            c.execute(
                text(
                    "SELECT f.id FROM alert_outbox o JOIN alert_firings f ON f.id = o.firing_id "
                    "WHERE o.outcome = 'resolved_within_group_wait'"
                )
            )
            .scalars()
            .all()
        )
    assert dropped
    ep = get_test_endpoints()
    client = TestClient(create_app(settings_for(ep), ApiSettings(lag_cache_s=0.0)))
    key = {"authorization": f"Bearer {new_key(ep, 'read')}"}
    r = client.get(f"/api/alerts/{dropped[0]}", headers=key)
    assert r.status_code == 200, r.text
    assert r.json()["notify_outcome"] == "resolved_within_group_wait" and r.json()["status"] == "resolved"
    listed = client.get("/api/alerts", params={"status": "resolved"}, headers=key).json()["items"]
    assert "resolved_within_group_wait" in {a["notify_outcome"] for a in listed}
