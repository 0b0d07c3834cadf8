"""Pure parts of trends and alerting: window arithmetic, rule semantics, signing, URL policy."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from pipelines.trends.rules import Rule, compute_baseline, evaluate
from pipelines.trends.windows import closed_windows_containing, global_watermark, parse_spec
from services.alerts.dispatcher import backoff_s
from services.alerts.policy import PolicyError, UrlPolicy
from services.alerts.signing import new_msg_id, new_secret, sign, signed_headers
from services.config import AlertsSettings

T = datetime(2015, 2, 17, 10, 7, 30, tzinfo=UTC)


def test_window_starts_tumbling_and_hopping() -> None:
    assert parse_spec("1h").starts_for(T) == [datetime(2015, 2, 17, 10, tzinfo=UTC)]
    hop = parse_spec("1h@5m")
    starts = hop.starts_for(T)
    assert len(starts) == 12 and starts[-1] == datetime(2015, 2, 17, 10, 5, tzinfo=UTC)
    assert all(s <= T < s + timedelta(hours=1) for s in starts)
    with pytest.raises(ValueError):
        parse_spec("1h@7m")


def test_late_windows_and_watermark() -> None:
    specs = (parse_spec("1m"), parse_spec("1h"))
    closed = list(closed_windows_containing(T, datetime(2015, 2, 17, 10, 30, tzinfo=UTC), specs))
    assert [(s.name, st.minute) for s, st in closed] == [("1m", 7)]  # the hour is still open
    maxes = {0: T, 1: T + timedelta(hours=2)}
    assert global_watermark(maxes, 2, set(), 60) == T - timedelta(seconds=60)  # slowest partition rules
    assert global_watermark(maxes, 3, set(), 60) is None  # a partition has not reported yet
    assert global_watermark(maxes, 3, {-1, 0}, 0) == T + timedelta(hours=2)  # idle ones do not hold it


def test_baselines() -> None:
    b = compute_baseline([1.0, 2.0, 3.0])
    assert b is not None and b.mean == 2.0 and abs(b.std - (2 / 3) ** 0.5) < 1e-12
    e = compute_baseline([1.0, 1.0, 1.0, 10.0], "ewma", 0.5)
    assert e is not None and 1.0 < e.mean < 10.0 and e.std > 0


def test_rule_kinds() -> None:
    win = {"n_posts": 40, "n_negative": 30, "share_negative": 0.75, "mean_score": -0.6}
    hist = [10.0, 12.0, 9.0, 11.0, 10.0, 8.0]
    spike = Rule(id=1, name="s", kind="spike", metric="n_negative", z_score=3, min_baseline=6, min_volume=10)
    spike.validate()
    v = evaluate(spike, win, hist)
    assert v.evaluated and v.firing and v.z is not None and v.z > 3 and v.baseline is not None
    assert not evaluate(spike, {**win, "n_posts": 5}, hist).evaluated  # min volume
    assert not evaluate(spike, win, hist[:3]).evaluated  # baseline too short
    surge = Rule(id=2, name="v", kind="surge", metric="n_posts", factor=2.0, min_baseline=3)
    assert evaluate(surge, win, [15.0, 20.0, 18.0]).firing
    assert not evaluate(surge, win, [25.0, 30.0, 28.0]).firing
    dip = Rule(id=3, name="d", kind="dip", metric="mean_score", drop=0.3, min_baseline=3)
    assert evaluate(dip, win, [-0.1, -0.2, 0.0]).firing
    thr = Rule(id=4, name="t", kind="threshold", metric="share_negative", op=">=", threshold=0.8)
    assert not evaluate(thr, win, []).firing
    with pytest.raises(ValueError):
        Rule(id=5, name="bad", kind="spike", metric="nope", z_score=2).validate()


def test_signing_matches_standard_webhooks() -> None:
    secret = new_secret()
    body = b'{"type":"alert.firing","data":{"x":1}}'
    msg_id = new_msg_id()
    headers = signed_headers(secret, msg_id, body)
    assert Webhook(secret).verify(body, headers) == {"type": "alert.firing", "data": {"x": 1}}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"1", b"2"), headers)  # tampered body
    stale = signed_headers(secret, msg_id, body, timestamp=int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, stale)  # replayed an hour later
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)  # wrong secret
    rotated = signed_headers([new_secret(), secret], msg_id, body)
    assert Webhook(secret).verify(body, rotated)
    assert sign(secret, "msg_1", 1, b"x").startswith("v1,")


def test_url_policy() -> None:
    default = UrlPolicy()
    for url in (
        "http://127.0.0.1:9/x",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest",
        "http://[::1]/",
        "http://100.64.0.1/",
        "ftp://example.com/",
        "http://user:pw@93.184.216.34/",
    ):
        with pytest.raises(PolicyError):
            default.check(url)
    assert default.check("https://93.184.216.34/hook")
    allowed = UrlPolicy(allow_cidrs=["127.0.0.1/32"])
    assert allowed.check("http://127.0.0.1:8080/hook")
    with pytest.raises(PolicyError):
        allowed.check("http://127.0.0.2:8080/hook")
    with pytest.raises(PolicyError):
        UrlPolicy(allow_cidrs=["127.0.0.0/8"], deny_cidrs=["127.0.0.1/32"]).check("http://127.0.0.1/")
    with pytest.raises(PolicyError):
        UrlPolicy(require_https=True).check("http://93.184.216.34/")


@pytest.mark.parametrize(
    ("url", "kind", "cidr"),
    [
        ("http://127.0.0.1:9000/hook", "loopback", "127.0.0.1/32"),
        ("http://[::1]/", "loopback", "::1/128"),
        ("http://10.1.2.3/", "private", "10.1.2.3/32"),
    ],
)
def test_url_policy_error_names_the_setting_to_change(
    url: str, kind: str, cidr: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PolicyError) as e:
        UrlPolicy().check(url)
    msg = str(e.value)
    assert f"a {kind} address" in msg and "settings.alerts.allow_cidrs" in msg
    var, _, value = msg.rpartition("set ")[2].partition(" for ")[0].partition("=")
    assert var == "VOXPOP_ALERTS_ALLOW_CIDRS"
    monkeypatch.setenv(var, value.strip("'"))  # the message's own suggestion, applied, is enough
    assert UrlPolicy.configured(AlertsSettings()).check(url)
    for policy, target, setting in (
        (UrlPolicy(require_https=True), "http://93.184.216.34/", "VOXPOP_ALERTS_REQUIRE_HTTPS"),
        (UrlPolicy(deny_hosts=["hooks.example.com"]), "https://hooks.example.com/", "VOXPOP_ALERTS_DENY_HOSTS"),
        (UrlPolicy(deny_cidrs=["93.184.216.0/24"]), "https://93.184.216.34/", "VOXPOP_ALERTS_DENY_CIDRS"),
    ):
        with pytest.raises(PolicyError, match=setting):
            policy.check(target)


def test_backoff_grows_with_jitter() -> None:
    rng = random.Random(1)
    delays = [backoff_s(a, 1.0, 30.0, rng) for a in range(1, 8)]
    for a, d in enumerate(delays, start=1):
        cap = min(30.0, 2 ** (a - 1))
        assert cap / 2 <= d <= cap


def test_count_model_and_robust_baseline_and_hysteresis_levels() -> None:
    from pipelines.trends.rules import Rule, compute_baseline, count_z, evaluate

    hist = [1.0, 0.0, 2.0, 1.0, 1.0, 0.0, 3.0, 1.0, 80.0, 1.0, 2.0, 1.0]  # one polluting spike
    med = compute_baseline(hist, "median")
    assert med is not None and med.mean == 1.0 and med.std < 2  # the 80 barely moves it
    mean = compute_baseline(hist, "mean")
    assert mean is not None and mean.mean > 7 and mean.std > 20  # ... but poisons mean/std
    # a count as unlikely as the Gaussian 3-sigma tail reports z ~ 3; an ordinary count does not fire
    poisson = count_z(9, med, "poisson")
    assert 3 < poisson < 5 and count_z(2, med, "poisson") < 1.5
    # overdispersed history: the negative binomial is less surprised than Poisson by the same count
    wide = compute_baseline([2.0, 10.0, 0.0, 8.0, 1.0, 12.0], "mean")
    assert wide is not None and count_z(15, wide, "negbin") < count_z(15, wide, "poisson")
    rule = Rule(
        id=1,
        name="r",
        kind="spike",
        metric="n_negative",
        z_score=3.0,
        model="negbin",
        baseline_method="median",
        min_baseline=6,
        resolve_ratio=0.5,
    )
    rule.validate()
    hot = evaluate(rule, {"n_posts": 40, "n_negative": 30}, hist)
    warm = evaluate(rule, {"n_posts": 12, "n_negative": 4}, [1.0] * 12)  # z ~ 2: not hot, not calm
    assert hot.firing and hot.level >= 1 and not warm.firing and not warm.calm(0.5) and warm.calm(0.9)
    assert evaluate(rule, {"n_posts": 5, "n_negative": 1}, [1.0] * 12).calm(0.5)
    assert rule.escalated("warning") == "critical" and rule.escalated("critical") == "critical"
    with pytest.raises(ValueError, match="count metric"):
        Rule(id=2, name="s", kind="spike", metric="share_negative", z_score=3, model="poisson").validate()


def test_min_observed_is_an_absolute_floor_beside_the_relative_test() -> None:
    """3x a quiet brand's median of 2 is 6: without a floor 13 negatives page someone; with a floor of
    20 they do not, and the verdict's level (which hysteresis reads) is the nearer of the two bars."""
    quiet = [2.0] * 24
    surge = Rule(id=1, name="s", kind="surge", metric="n_negative", factor=3.0, baseline_method="median")
    floored = Rule(**{**surge.__dict__, "min_observed": 20.0})
    floored.validate()
    assert evaluate(surge, {"n_posts": 30, "n_negative": 13}, quiet).firing
    held = evaluate(floored, {"n_posts": 30, "n_negative": 13}, quiet)
    assert not held.firing and held.level == pytest.approx(13 / 20) and "floor 20" in held.reason
    assert evaluate(floored, {"n_posts": 30, "n_negative": 21}, quiet).firing
    with pytest.raises(ValueError, match="min_observed"):
        Rule(id=2, name="d", kind="dip", metric="mean_score", drop=0.2, min_observed=1.0).validate()
