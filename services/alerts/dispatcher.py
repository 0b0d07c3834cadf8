"""The alerts dispatcher: outbox -> Alertmanager-style groups -> signed webhook deliveries.

Every step is a short PostgreSQL transaction with ``FOR UPDATE SKIP LOCKED``, so several
dispatchers can run side by side and a crash at any point loses nothing:

* ``alert_outbox`` rows (written with their firing, in the window-close transaction) are turned
  into group updates and notifications in ONE transaction that also marks them processed.
* A group is (rule, watch). Its first firing waits ``group_wait`` and is then notified once;
  later firings of the same group are deduplicated until ``repeat_interval`` passes; a firing of
  higher severity (re-escalation) is notified at once (``update``); a resolution after a
  notification sends a resolution notice. A resolution before any notification is recorded with
  its reason (``resolved_within_group_wait`` / ``resolved_while_silenced``) on the outbox row,
  visible in the API as the firing's ``notify_outcome``. Matching active silences suppress (and
  record) a notification; the group is looked at again when the silence ends. Expiry is recorded.
* Event time (why): waits and repeat intervals run on the windows' event time, the clock of the
  trends app (``trend_progress.closed_through``, or the newest processed window end), never the
  wall clock, so a replay at 600x or a backfill delivers the same notifications, in the same
  order, as live. Events are applied in window-end order, each after the flushes due before it,
  under one advisory lock (several dispatchers cannot interleave). Silences and delivery retries
  stay on the wall clock: they are operator and network time.
* A notification to one endpoint is the webhook outbox: body and ``webhook-id`` frozen at
  creation; delivery is claimed with a lease, signed per attempt (fresh ``webhook-timestamp``),
  retried with exponential backoff and jitter, ``dead`` after the endpoint's last attempt, and
  every attempt is recorded in ``webhook_deliveries``. Receivers dedupe by ``webhook-id``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, func, or_, select, text, update
from sqlalchemy.orm import Session

from pipelines.advisory_locks import Lock
from pipelines.retry import exponential, jittered
from pipelines.trends.rules import SEVERITIES
from services.alerts.payloads import alert_data, render
from services.alerts.policy import PolicyError, UrlPolicy
from services.alerts.signing import new_msg_id, signed_headers
from services.alerts.why import stored_why
from services.config import AlertsSettings, get_settings
from services.storage.alert_models import (
    AlertFiring,
    AlertGroup,
    AlertOutbox,
    AlertRule,
    Notification,
    Silence,
    TrendProgress,
    WebhookDelivery,
    WebhookEndpoint,
)
from services.storage.models import Watch

log = logging.getLogger("voxpop.alerts")
RETRYABLE_STATUS = {408, 425, 429}


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Claim:
    id: int
    attempt: int
    msg_id: str
    body: str
    url: str
    secret: str
    timeout_s: float
    max_attempts: int


@dataclass
class _Result:
    outcome: str  # ok | retry | dead | blocked
    status_code: int | None
    error: str | None
    duration_ms: float
    started_at: datetime


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Delay before a webhook's next attempt: the one retry policy, doubling from `base_s` to `max_s`, jittered."""
    return jittered(exponential(base_s, max_s), attempt, rng)


def severity_rank(s: str) -> int:
    return SEVERITIES.index(s) if s in SEVERITIES else 0


class Dispatcher:
    """One dispatcher process (or several: they coordinate through row locks)."""

    def __init__(
        self,
        engine: Engine,
        cfg: AlertsSettings | None = None,
        policy: UrlPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.engine = engine
        self.cfg = cfg or get_settings().alerts
        self.policy = policy or UrlPolicy.configured(self.cfg)
        self.http = http or httpx.Client(follow_redirects=False, headers={"user-agent": "voxpop-alerts/1"})
        self.pool = ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency), thread_name_prefix="webhook")

    # --- loop ---------------------------------------------------------------------------------

    def run_once(self) -> dict[str, int]:
        # one instant for the silence decisions of this pass: a silence that ends mid-pass is either
        # still in force (notifications silenced) or already recorded as expired, never neither
        now = utcnow()
        return {
            "silences_expired": self.expire_silences(now),
            "events": self.process_outbox(now),
            "flushed": self.flush_groups(now),
            "attempts": self.deliver_due(),
        }

    def run_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        log.info(
            "alerts dispatcher running (group_wait=%ss repeat=%ss)",
            self.cfg.group_wait_s,
            self.cfg.repeat_interval_s,
        )
        while not stop.is_set():
            try:
                counts = self.run_once()
                busy = counts["events"] or counts["attempts"]
            except Exception:  # noqa: BLE001 - keep the loop alive; the DB state is consistent
                log.exception("dispatcher iteration failed")
                busy = 0
            if not busy:
                stop.wait(self.cfg.poll_interval_s)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.http.close()

    # --- silences -----------------------------------------------------------------------------

    def expire_silences(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        with Session(self.engine) as s, s.begin():
            rows = s.scalars(
                select(Silence)
                .where(Silence.expired_at.is_(None), Silence.ends_at <= now)
                .with_for_update(skip_locked=True)
            ).all()
            for sil in rows:
                sil.expired_at = now
                log.info("silence %d expired (suppressed %d notifications)", sil.id, sil.suppressed_count)
            return len(rows)

    def _silence_for(self, s: Session, f: AlertFiring, now: datetime) -> Silence | None:
        return s.scalars(
            select(Silence)
            .where(
                Silence.starts_at <= now,
                Silence.ends_at > now,
                Silence.expired_at.is_(None),
                or_(Silence.rule_id.is_(None), Silence.rule_id == f.rule_id),
                or_(Silence.watch_id.is_(None), Silence.watch_id == f.watch_id),
                or_(Silence.severity.is_(None), Silence.severity == f.severity),
            )
            .order_by(Silence.ends_at.desc())
            .limit(1)
            .with_for_update()
        ).first()

    # --- grouping (event time) ----------------------------------------------------------------

    def process_outbox(self, now: datetime | None = None) -> int:
        """Apply every pending outbox event in window-end order, flushing groups due before each."""
        now = now or utcnow()
        total = 0
        while True:
            with Session(self.engine) as s, s.begin():
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(Lock.ALERT_DISPATCH)})
                rows = s.execute(
                    select(AlertOutbox, AlertFiring)
                    .join(AlertFiring, AlertOutbox.firing_id == AlertFiring.id)
                    .where(AlertOutbox.processed_at.is_(None))
                    .order_by(AlertFiring.window_end, AlertOutbox.id)
                    .limit(self.cfg.batch)
                    .with_for_update(of=AlertOutbox)
                ).all()
                for ob, f in rows:
                    self._flush_due(s, f.window_end, True, now)
                    ob.outcome = self._apply_event(s, f, now)
                    ob.processed_at = now
            total += len(rows)
            if len(rows) < self.cfg.batch:
                return total

    def event_clock(self, s: Session) -> tuple[datetime | None, bool]:
        """(event time through which groups may flush, strictly before it?)."""
        wm = s.scalar(select(func.max(TrendProgress.closed_through)))
        done = s.scalar(
            select(func.max(AlertFiring.window_end))
            .join(AlertOutbox, AlertOutbox.firing_id == AlertFiring.id)
            .where(AlertOutbox.processed_at.is_not(None))
        )
        pending = s.scalar(
            select(func.min(AlertFiring.window_end))
            .join(AlertOutbox, AlertOutbox.firing_id == AlertFiring.id)
            .where(AlertOutbox.processed_at.is_(None))
        )
        clock = max((t for t in (wm, done) if t is not None), default=None)
        if pending is not None and (clock is None or pending <= clock):
            return pending, True  # an event not applied yet: flush only what is due before it
        return clock, False

    def _apply_event(self, s: Session, f: AlertFiring, now: datetime) -> str:
        if f.rule_id is None:
            return "orphan"
        t = f.window_end
        g = s.get(AlertGroup, (f.rule_id, f.watch_id), with_for_update=True)
        if f.status == "firing":
            if g is None:
                g = AlertGroup(rule_id=f.rule_id, watch_id=f.watch_id, notify_count=0, firing_count=0)
                s.add(g)
            if g.status != "firing" or g.firing_count == 0:
                g.status, g.episode_started_at, g.firing_count = "firing", f.episode_start or t, 1
                g.next_flush_at = t + timedelta(seconds=self.cfg.group_wait_s)
                g.last_notified_status, g.severity, g.silenced_until = None, None, None
                g.last_firing_id, g.updated_at = f.id, now
                return "grouped"
            g.last_firing_id, g.firing_count, g.updated_at = f.id, g.firing_count + 1, now
            if g.last_notified_status != "firing":
                return "grouped"
            if severity_rank(f.severity) > severity_rank(g.severity or "info"):
                self._notify(s, g, f, "update", t, now)
                return "escalated"
            return "deduplicated"
        if g is None or g.status != "firing":
            return "ignored"
        silenced = g.silenced_until is not None and g.silenced_until > now
        g.status, g.last_firing_id, g.next_flush_at, g.updated_at = "resolved", f.id, None, now
        if g.last_notified_status == "firing":
            self._notify(s, g, f, "resolved", t, now)
            return "resolved"
        return "resolved_while_silenced" if silenced else "resolved_within_group_wait"

    def flush_groups(self, now: datetime | None = None) -> int:
        """Notify groups whose wait or repeat interval ended by the event clock."""
        now = now or utcnow()
        with Session(self.engine) as s, s.begin():
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(Lock.ALERT_DISPATCH)})
            clock, strict = self.event_clock(s)
            return self._flush_due(s, clock, strict, now) if clock is not None else 0

    def _flush_due(self, s: Session, clock: datetime, strict: bool, now: datetime) -> int:
        """Flush groups due by ``clock`` in due order; a repeat due again before it flushes again."""
        n = 0
        due = AlertGroup.next_flush_at < clock if strict else AlertGroup.next_flush_at <= clock
        while True:
            g = s.scalars(
                select(AlertGroup)
                .where(
                    AlertGroup.status == "firing",
                    due,
                    or_(AlertGroup.silenced_until.is_(None), AlertGroup.silenced_until <= now),
                )
                .order_by(AlertGroup.next_flush_at, AlertGroup.rule_id, AlertGroup.watch_id)
                .limit(1)
                .with_for_update()
            ).first()
            if g is None:
                return n
            n += 1
            f = s.get(AlertFiring, g.last_firing_id)
            at, g.silenced_until = g.next_flush_at, None
            if f is None or at is None:
                g.next_flush_at = None
                continue
            self._notify(s, g, f, "repeat" if g.last_notified_status == "firing" else "initial", at, now)
            s.flush()

    def _notify(self, s: Session, g: AlertGroup, f: AlertFiring, reason: str, at: datetime, now: datetime) -> None:
        """Notifications to every endpoint; ``at`` is the event time of the decision."""
        rule = s.get(AlertRule, f.rule_id) if f.rule_id is not None else None
        watch = s.get(Watch, f.watch_id)
        endpoints = s.scalars(select(WebhookEndpoint).where(WebhookEndpoint.enabled).order_by(WebhookEndpoint.id)).all()
        endpoints = [e for e in endpoints if severity_rank(f.severity) >= severity_rank(e.min_severity)]
        firing = _row(f)
        firing["why"] = stored_why(s.connection(), firing)
        data = alert_data(
            firing=firing,
            rule=_row(rule) if rule else None,
            watch_name=watch.name if watch else None,
            reason=reason,
            group={"firing_count": g.firing_count, "episode_started_at": g.episode_started_at},
            dashboard_url=self.cfg.public_url(),
        )
        silence = self._silence_for(s, f, now)
        for ep in endpoints:
            s.add(
                Notification(
                    msg_id=new_msg_id(),
                    rule_id=f.rule_id,
                    watch_id=f.watch_id,
                    endpoint_id=ep.id,
                    firing_id=f.id,
                    reason=reason,
                    status=f.status,
                    body=render(ep.kind, data, now),
                    state="silenced" if silence else "pending",
                    silence_id=silence.id if silence else None,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        if silence is not None:
            silence.suppressed_count += 1
            if f.status == "firing":
                g.next_flush_at, g.silenced_until = at, silence.ends_at  # look again when it ends
            log.info(
                "alert %s for rule %s watch %s silenced by silence %d",
                f.status,
                f.rule_id,
                f.watch_id,
                silence.id,
            )
            return
        g.last_notified_at, g.last_notified_status, g.notify_count = at, f.status, g.notify_count + 1
        g.severity = f.severity
        if f.status == "firing":
            g.next_flush_at = at + timedelta(seconds=self.cfg.repeat_interval_s)

    # --- delivery -----------------------------------------------------------------------------

    def deliver_due(self) -> int:
        claims = self._claim()
        if not claims:
            return 0
        results = list(self.pool.map(self._attempt, claims))
        for c, r in zip(claims, results, strict=True):
            self._record(c, r)
        return len(claims)

    def _claim(self) -> list[_Claim]:
        now = utcnow()
        with Session(self.engine) as s, s.begin():
            rows = s.execute(
                select(Notification, WebhookEndpoint)
                .join(WebhookEndpoint, Notification.endpoint_id == WebhookEndpoint.id)
                .where(
                    Notification.state.in_(("pending", "sending")),
                    Notification.next_attempt_at <= now,
                    or_(Notification.state == "pending", Notification.lease_until < now),
                )
                .order_by(Notification.next_attempt_at, Notification.id)
                .limit(self.cfg.batch)
                .with_for_update(skip_locked=True, of=Notification)
            ).all()
            out = []
            for n, ep in rows:
                n.state, n.attempts = "sending", n.attempts + 1
                n.lease_until = now + timedelta(seconds=max(self.cfg.lease_s, ep.timeout_s + 5))
                out.append(_Claim(n.id, n.attempts, n.msg_id, n.body, ep.url, ep.secret, ep.timeout_s, ep.max_attempts))
            return out

    def _attempt(self, c: _Claim) -> _Result:
        started, t0 = utcnow(), time.perf_counter()

        def done(outcome: str, code: int | None = None, err: str | None = None) -> _Result:
            return _Result(outcome, code, err, (time.perf_counter() - t0) * 1000, started)

        try:
            self.policy.check(c.url)
        except PolicyError as e:
            return done("blocked", err=str(e))
        body = c.body.encode()
        try:
            r = self.http.post(
                c.url, content=body, headers=signed_headers(c.secret, c.msg_id, body), timeout=c.timeout_s
            )
        except httpx.TimeoutException as e:
            return done("retry", err=f"timeout: {type(e).__name__}")
        except httpx.HTTPError as e:
            return done("retry", err=f"{type(e).__name__}: {e}"[:500])
        if 200 <= r.status_code < 300:
            return done("ok", r.status_code)
        if r.status_code >= 500 or r.status_code in RETRYABLE_STATUS:
            return done("retry", r.status_code, f"HTTP {r.status_code}")
        return done("dead", r.status_code, f"HTTP {r.status_code} (not retryable)")

    def _record(self, c: _Claim, r: _Result) -> None:
        now = utcnow()
        outcome, next_at = r.outcome, None
        if outcome == "retry" and c.attempt >= c.max_attempts:
            outcome = "dead"
        if outcome == "retry":
            next_at = now + timedelta(seconds=backoff_s(c.attempt, self.cfg.backoff_base_s, self.cfg.backoff_max_s))
        state = {"ok": "delivered", "retry": "pending"}.get(outcome, "dead")  # dead | blocked -> dead
        with Session(self.engine) as s, s.begin():
            s.add(
                WebhookDelivery(
                    notification_id=c.id,
                    attempt=c.attempt,
                    msg_id=c.msg_id,
                    url=c.url,
                    started_at=r.started_at,
                    duration_ms=r.duration_ms,
                    status_code=r.status_code,
                    error=r.error,
                    outcome=outcome,
                    next_attempt_at=next_at,
                )
            )
            values: dict[str, Any] = {"state": state, "lease_until": None, "last_error": r.error}
            if next_at is not None:
                values["next_attempt_at"] = next_at
            if state == "delivered":
                values["delivered_at"] = now
            s.execute(
                update(Notification)
                .where(
                    Notification.id == c.id,
                    Notification.state == "sending",
                    Notification.attempts == c.attempt,
                )
                .values(**values)
            )
        if state == "dead":
            log.warning("webhook %s to endpoint dead after attempt %d: %s", c.msg_id, c.attempt, r.error)


def _row(obj: Any) -> dict[str, Any]:
    return {col.key: getattr(obj, col.key) for col in obj.__mapper__.column_attrs}
