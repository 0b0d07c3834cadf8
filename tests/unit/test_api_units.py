"""Pure pieces of the API and reports: buckets, cursors, period bounds, key hashing, signatures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.api import queries as Q
from services.api.keys import Principal, hash_token
from services.reports.data import last_full_period_end, period_bounds
from services.reports.run import slug


def test_parse_bucket():
    assert Q.parse_bucket("15m") == timedelta(minutes=15)
    assert Q.parse_bucket("1w") == timedelta(days=7)
    for bad in ("", "m", "0h", "-1h", "1y", "1.5h", "999d"):
        with pytest.raises(Q.QueryError):
            Q.parse_bucket(bad)


def test_floor_time_aligns_days_and_weeks_to_utc_midnight_monday():
    t = datetime(2015, 2, 19, 13, 7, tzinfo=UTC)
    assert Q.floor_time(t, timedelta(days=1)) == datetime(2015, 2, 19, tzinfo=UTC)
    assert Q.floor_time(t, timedelta(days=7)) == datetime(2015, 2, 16, tzinfo=UTC)  # a Monday
    assert Q.floor_time(t, timedelta(minutes=15)) == datetime(2015, 2, 19, 13, 0, tzinfo=UTC)


def test_cursor_round_trip_and_mismatch():
    t = datetime(2015, 2, 19, 13, 7, tzinfo=UTC)
    c = Q.encode_cursor("newest", t, "twitter:1")
    assert Q.decode_cursor(c, "newest") == (t, "twitter:1")
    assert Q.decode_cursor(Q.encode_cursor("most_negative", -0.25, "x:2"), "most_negative") == (-0.25, "x:2")
    with pytest.raises(Q.QueryError, match="belongs to order"):
        Q.decode_cursor(c, "oldest")
    with pytest.raises(Q.QueryError, match="malformed"):
        Q.decode_cursor("!!", "newest")


def test_like_escapes_wildcards():
    assert Q._like("50%_off\\") == "%50\\%\\_off\\\\%"


def test_dominant_modality():
    assert Q.dominant({"text": 0.3, "image": 0.7}) == "image"
    assert Q.dominant({}) is None


def test_period_bounds():
    assert period_bounds("weekly", date(2015, 2, 23)) == (
        datetime(2015, 2, 16, tzinfo=UTC),
        datetime(2015, 2, 23, tzinfo=UTC),
    )
    assert period_bounds("daily", date(2015, 2, 20))[0] == datetime(2015, 2, 19, tzinfo=UTC)
    assert period_bounds("monthly", date(2015, 3, 1)) == (
        datetime(2015, 2, 1, tzinfo=UTC),
        datetime(2015, 3, 1, tzinfo=UTC),
    )
    now = datetime(2015, 2, 25, 10, tzinfo=UTC)  # a Wednesday
    assert last_full_period_end("weekly", now) == datetime(2015, 2, 23, tzinfo=UTC)
    assert last_full_period_end("monthly", now) == datetime(2015, 2, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        period_bounds("yearly", date(2015, 1, 1))


def test_scopes_are_ordered():
    assert Principal(1, "k", "admin").allows("write") and Principal(1, "k", "write").allows("read")
    assert not Principal(1, "k", "read").allows("write")
    assert len(hash_token("vpk_x")) == 64 and hash_token("vpk_x") != hash_token("vpk_y")


def test_report_file_names_are_slugs():
    assert slug("US Airways!") == "us-airways"


def test_report_webhooks_are_signed_as_standard_webhooks_and_verified_by_the_package() -> None:
    from services.alerts.receiver import Receiver
    from services.alerts.signing import new_secret
    from services.reports.run import deliver_webhook

    secret = new_secret()
    rx = Receiver(secret).start()
    try:
        assert deliver_webhook(rx.url, {"watch": "Delta", "period": "week"}, secret) == "delivered:204"
        assert deliver_webhook(rx.url, {"watch": "Delta"}, new_secret()) == "failed:HTTP 400"  # another key
    finally:
        rx.stop()
    assert rx.ok[0]["payload"] == {"watch": "Delta", "period": "week"} and rx.bad == 1
