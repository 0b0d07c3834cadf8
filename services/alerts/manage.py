"""Management API for rules, webhook endpoints and silences (used by the CLI and the REST API).

Every function takes a database URL or Engine and returns plain dicts (secrets masked unless
``reveal_secret``), raising ValueError with a clear message on bad input.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipelines.trends.rules import SEVERITIES, Rule
from services.alerts.policy import UrlPolicy
from services.alerts.signing import SECRET_PREFIX, _key, new_secret
from services.storage.alert_models import AlertRule, Notification, Silence, WebhookEndpoint
from services.storage.db import engine_for

#: What a stored rule holds: the evaluator's fields (pipelines/trends/rules.py), plus on/off and labels.
RULE_FIELDS = (*(f.name for f in fields(Rule) if f.name != "id"), "enabled", "labels")


def _engine(db: str | Engine) -> Engine:
    return db if isinstance(db, Engine) else engine_for(db)


def _as_dict(obj: Any) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in obj.__mapper__.column_attrs}


# --- rules --------------------------------------------------------------------------------------

_KIND_DEFAULT_METRIC = {"surge": "n_posts", "dip": "mean_score"}


def create_rule(db: str | Engine, **fields: Any) -> dict[str, Any]:
    """Create an alert rule; see ``pipelines.trends.rules`` for kinds and fields."""
    unknown = set(fields) - set(RULE_FIELDS)
    if unknown:
        raise ValueError(f"unknown rule fields: {sorted(unknown)}")
    if "name" not in fields or "kind" not in fields:
        raise ValueError("a rule needs a name and a kind")
    fields.setdefault("metric", _KIND_DEFAULT_METRIC.get(fields["kind"], "share_negative"))
    obj = AlertRule(**{**_rule_defaults(), **fields})
    Rule.from_row({**_as_dict(obj), "id": 0}).validate()
    with Session(_engine(db)) as s, s.begin():
        s.add(obj)
        try:
            s.flush()
        except IntegrityError as e:
            raise ValueError(f"rule {fields['name']!r} exists already") from e
        return _as_dict(obj)


def _rule_defaults() -> dict[str, Any]:
    return {
        "window_size": "1h",
        "op": ">=",
        "direction": "up",
        "min_delta": 0.0,
        "min_observed": 0.0,
        "baseline_method": "mean",
        "ewma_alpha": 0.3,
        "lookback": 24,
        "min_baseline": 6,
        "std_floor": 0.0,
        "min_volume": 0,
        "severity": "warning",
        "cooldown_s": 3600,
        "model": "gaussian",
        "exclude_fired": True,
        "seasonality": "none",
        "resolve_after": 1,
        "resolve_ratio": 1.0,
        "enabled": True,
        "labels": {},
    }


def _rowcount(result: Result[Any]) -> int:
    """Rows a DELETE/UPDATE matched (Session.execute types its result as a plain Result)."""
    return cast(CursorResult[Any], result).rowcount


def list_rules(db: str | Engine) -> list[dict[str, Any]]:
    with Session(_engine(db)) as s:
        return [_as_dict(r) for r in s.scalars(select(AlertRule).order_by(AlertRule.id))]


def delete_rule(db: str | Engine, rule: int | str) -> bool:
    """Delete by id or name; its firings stay (rule_id set to NULL). True if it existed."""
    col = AlertRule.id if isinstance(rule, int) else AlertRule.name
    with Session(_engine(db)) as s, s.begin():
        return bool(_rowcount(s.execute(delete(AlertRule).where(col == rule))))


# --- webhook endpoints ----------------------------------------------------------------------------


def create_endpoint(
    db: str | Engine,
    name: str,
    url: str,
    *,
    secret: str | None = None,
    kind: str = "json",
    min_severity: str = "info",
    timeout_s: float = 5.0,
    max_attempts: int = 8,
    policy: UrlPolicy | None = None,
    reveal_secret: bool = True,
) -> dict[str, Any]:
    """Register a webhook target (checked against the URL policy); returns it with its secret."""
    if kind not in ("json", "slack"):
        raise ValueError("kind must be json or slack")
    if min_severity not in SEVERITIES:
        raise ValueError(f"min_severity must be one of {SEVERITIES}")
    if not 0 < timeout_s <= 60 or not 1 <= max_attempts <= 50:
        raise ValueError("need 0 < timeout_s <= 60 and 1 <= max_attempts <= 50")
    (policy or UrlPolicy()).check(url)
    secret = secret or new_secret()
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("secret must look like whsec_<base64>")
    _key(secret)
    ep = WebhookEndpoint(
        name=name,
        url=url,
        secret=secret,
        kind=kind,
        min_severity=min_severity,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        enabled=True,
    )
    with Session(_engine(db)) as s, s.begin():
        s.add(ep)
        try:
            s.flush()
        except IntegrityError as e:
            raise ValueError(f"endpoint {name!r} exists already") from e
        return _endpoint_dict(ep, reveal_secret)


def _endpoint_dict(ep: WebhookEndpoint, reveal: bool) -> dict[str, Any]:
    d = _as_dict(ep)
    if not reveal:
        d["secret"] = SECRET_PREFIX + "***"
    return d


def list_endpoints(db: str | Engine) -> list[dict[str, Any]]:
    with Session(_engine(db)) as s:
        return [_endpoint_dict(e, False) for e in s.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id))]


def delete_endpoint(db: str | Engine, endpoint: int | str) -> bool:
    col = WebhookEndpoint.id if isinstance(endpoint, int) else WebhookEndpoint.name
    with Session(_engine(db)) as s, s.begin():
        return bool(_rowcount(s.execute(delete(WebhookEndpoint).where(col == endpoint))))


# --- silences -----------------------------------------------------------------------------------


def create_silence(
    db: str | Engine,
    *,
    duration_s: float | None = None,
    ends_at: datetime | None = None,
    rule_id: int | None = None,
    watch_id: int | None = None,
    severity: str | None = None,
    starts_at: datetime | None = None,
    comment: str = "",
    created_by: str = "",
) -> dict[str, Any]:
    """Silence notifications matching rule/watch/severity (None = any) until ``ends_at``."""
    now = datetime.now(UTC)
    start = starts_at or now
    end = ends_at or (start + timedelta(seconds=duration_s) if duration_s else None)
    if end is None or end <= start:
        raise ValueError("a silence needs duration_s > 0 or ends_at after starts_at")
    if severity is not None and severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}")
    sil = Silence(
        rule_id=rule_id,
        watch_id=watch_id,
        severity=severity,
        starts_at=start,
        ends_at=end,
        comment=comment,
        created_by=created_by,
        suppressed_count=0,
    )
    with Session(_engine(db)) as s, s.begin():
        s.add(sil)
        s.flush()
        return _as_dict(sil)


def list_silences(db: str | Engine, active_only: bool = False) -> list[dict[str, Any]]:
    q = select(Silence).order_by(Silence.id)
    if active_only:
        q = q.where(Silence.expired_at.is_(None), Silence.ends_at > datetime.now(UTC))
    with Session(_engine(db)) as s:
        return [_as_dict(x) for x in s.scalars(q)]


def expire_silence(db: str | Engine, silence_id: int) -> dict[str, Any]:
    """End a silence now (kept, with ``expired_at`` recorded)."""
    now = datetime.now(UTC)
    with Session(_engine(db)) as s, s.begin():
        sil = s.get(Silence, silence_id)
        if sil is None:
            raise ValueError(f"no silence {silence_id}")
        if sil.ends_at > now:
            sil.ends_at = now
        sil.expired_at = sil.expired_at or now
        return _as_dict(sil)


def resend_dead(db: str | Engine, notification_ids: list[int] | None = None, endpoint: int | None = None) -> list[int]:
    """Queue dead notifications again (all, some ids, or one endpoint's); returns the ids queued.

    The body and `msg_id` are kept, so a receiver that got an earlier attempt after all sees the
    same `webhook-id` and can drop the repeat. The attempt budget starts afresh.
    """
    stmt = (
        update(Notification)
        .where(Notification.state == "dead")
        .values(state="pending", attempts=0, next_attempt_at=func.now(), lease_until=None)
        .returning(Notification.id)
    )
    if notification_ids is not None:
        stmt = stmt.where(Notification.id.in_(notification_ids))
    if endpoint is not None:
        stmt = stmt.where(Notification.endpoint_id == endpoint)
    with _engine(db).begin() as conn:
        return sorted(conn.execute(stmt).scalars())
