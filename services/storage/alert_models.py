"""Tables of the trends app (window membership, watermarks, closed windows) and of alerting
(rules, firings, the outbox, groups, silences, webhook endpoints, notifications, deliveries).

Migration: ``migrations/versions/0002_trends_alerts.py``. Raw SQL in ``pipelines/trends`` uses
the same table and column names (pipelines may not import services), so keep them in step.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.storage.models import Base

# --- trends -------------------------------------------------------------------------------------


class TrendMember(Base):
    """One scored post counted for one watch: the idempotent window state (PK watch, post).

    ``arrival_wm`` is the watermark through which windows were already closed when the post was
    first stored: the post counts in every window that ends after it, and is *late* for the rest.
    """

    __tablename__ = "trend_members"

    watch_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    post_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    author_id: Mapped[str] = mapped_column(String(300))
    label: Mapped[str] = mapped_column(String(30))
    score: Mapped[float] = mapped_column(Float)
    arrival_wm: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    source_partition: Mapped[int] = mapped_column(Integer)
    inserted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_trend_members_created", "created_at"),
        Index("ix_trend_members_watch_created", "watch_id", "created_at"),
        Index("ix_trend_members_partition_created", "source_partition", "created_at"),
    )


class TrendWatermark(Base):
    """Highest event time seen per source partition (the global watermark is their minimum)."""

    __tablename__ = "trend_watermarks"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    max_event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    closed_through: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="this partition's window parts are closed through here"
    )


class _PartSums:
    """What a partition's share of a window holds that adds up across partitions: counts, the
    score sum and the top posts with their scores (merged by score)."""

    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    n_posts: Mapped[int] = mapped_column(Integer)
    n_negative: Mapped[int] = mapped_column(Integer)
    n_neutral: Mapped[int] = mapped_column(Integer)
    n_positive: Mapped[int] = mapped_column(Integer)
    sum_score: Mapped[float] = mapped_column(Float)
    top_negative: Mapped[list[str]] = mapped_column(ARRAY(String(300)))
    top_negative_scores: Mapped[list[float]] = mapped_column(ARRAY(Float))
    top_positive: Mapped[list[str]] = mapped_column(ARRAY(String(300)))
    top_positive_scores: Mapped[list[float]] = mapped_column(ARRAY(Float))


class TrendWindowPart(_PartSums, Base):
    """One source partition's share of a window, closed by the worker owning that partition.

    ``posts.scored`` is keyed by author, so the parts of a window hold disjoint authors: counts,
    score sums and distinct authors add up, and the top posts merge from each part's top.
    Merged into ``trend_windows`` (and deleted) once every partition closed the window.
    """

    __tablename__ = "trend_window_parts"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    watch_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[str] = mapped_column(String(16), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    unique_authors: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_trend_window_parts_end", "source", "window_end"),)


class TrendLivePart(_PartSums, Base):
    """One source partition's running aggregate of the newest open window it has seen, per watch
    and window size (one row each: a newer window replaces it). Updated from the batch's new
    memberships in the batch transaction, so live snapshots never scan an open window's members.
    Distinct authors are not kept (they do not add up incrementally): counted when windows close.
    """

    __tablename__ = "trend_live_parts"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    watch_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[str] = mapped_column(String(16), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TrendProgress(Base):
    """How far windows are closed (event time), per trends app/source."""

    __tablename__ = "trend_progress"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    closed_through: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TrendWindow(Base):
    """A closed window of one watch: the numbers the dashboard, reports and alert rules use."""

    __tablename__ = "trend_windows"

    watch_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[str] = mapped_column(String(16), primary_key=True, doc="1m | 5m | 1h | 1h@5m")
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    n_posts: Mapped[int] = mapped_column(Integer, default=0)
    n_negative: Mapped[int] = mapped_column(Integer, default=0)
    n_neutral: Mapped[int] = mapped_column(Integer, default=0)
    n_positive: Mapped[int] = mapped_column(Integer, default=0)
    label_counts: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)
    mean_score: Mapped[float | None] = mapped_column(Float)
    share_negative: Mapped[float | None] = mapped_column(Float)
    share_positive: Mapped[float | None] = mapped_column(Float)
    unique_authors: Mapped[int] = mapped_column(Integer, default=0)
    top_negative: Mapped[list[str]] = mapped_column(ARRAY(String(300)), default=list)
    top_positive: Mapped[list[str]] = mapped_column(ARRAY(String(300)), default=list)
    late_posts: Mapped[int] = mapped_column(Integer, default=0, doc="arrived after the window closed")
    closed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_trend_windows_size_start", "size", "window_start"),)


# --- alert rules and firings ----------------------------------------------------------------------


class AlertRule(Base):
    """A rule evaluated on every closed window of ``window_size`` (for one watch or all)."""

    __tablename__ = "alert_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    watch_id: Mapped[int | None] = mapped_column(Integer, doc="None = every watch")
    window_size: Mapped[str] = mapped_column(String(16), default="1h")
    kind: Mapped[str] = mapped_column(String(16), doc="threshold | spike | surge | dip")
    metric: Mapped[str] = mapped_column(String(32), default="share_negative")
    op: Mapped[str] = mapped_column(String(2), default=">=", doc="threshold: > >= < <=")
    threshold: Mapped[float | None] = mapped_column(Float)
    z_score: Mapped[float | None] = mapped_column(Float, doc="spike/dip: |z| needed")
    direction: Mapped[str] = mapped_column(String(8), default="up", doc="spike: up | down | both")
    factor: Mapped[float | None] = mapped_column(Float, doc="surge: observed / baseline mean needed")
    drop: Mapped[float | None] = mapped_column(Float, doc="dip: baseline mean - observed needed")
    min_delta: Mapped[float] = mapped_column(Float, default=0.0, doc="|observed - baseline| needed")
    min_observed: Mapped[float] = mapped_column(Float, default=0.0, doc="surge/spike: absolute floor of observed")
    baseline_method: Mapped[str] = mapped_column(String(8), default="mean", doc="mean | ewma")
    ewma_alpha: Mapped[float] = mapped_column(Float, default=0.3)
    lookback: Mapped[int] = mapped_column(Integer, default=24, doc="previous windows in the baseline")
    min_baseline: Mapped[int] = mapped_column(Integer, default=6, doc="baseline windows needed")
    std_floor: Mapped[float] = mapped_column(Float, default=0.0, doc="lower bound of the baseline std")
    min_volume: Mapped[int] = mapped_column(Integer, default=0, doc="posts in the window needed")
    severity: Mapped[str] = mapped_column(String(16), default="warning", doc="info | warning | critical")
    cooldown_s: Mapped[int] = mapped_column(
        Integer, default=3600, doc="event-time seconds after the last hot window before a new episode"
    )
    model: Mapped[str] = mapped_column(String(12), default="gaussian", doc="gaussian | poisson | negbin")
    exclude_fired: Mapped[bool] = mapped_column(Boolean, default=True, doc="keep episode windows out of the baseline")
    seasonality: Mapped[str] = mapped_column(String(12), default="none", doc="none | hour_of_day")
    resolve_after: Mapped[int] = mapped_column(Integer, default=1, doc="calm windows before resolution")
    resolve_ratio: Mapped[float] = mapped_column(Float, default=1.0, doc="calm = level below this x threshold")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    labels: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AlertRuleState(Base):
    """Whether a rule is currently firing for a watch (drives resolution events and cooldown)."""

    __tablename__ = "alert_rule_state"

    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"), primary_key=True)
    watch_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    firing: Mapped[bool] = mapped_column(Boolean, default=False)
    last_fired_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), doc="last hot window")
    last_warm_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), doc="last window not calm")
    episode_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    severity: Mapped[str | None] = mapped_column(String(16), doc="the open episode's severity")
    last_event_id: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AlertEpisodeWindow(Base):
    """A window evaluated while an episode of the rule was open (or hot): kept out of baselines."""

    __tablename__ = "alert_episode_windows"

    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"), primary_key=True)
    watch_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)


class AlertFiring(Base):
    """One alert event (``status`` firing or resolved) for one rule, watch and window."""

    __tablename__ = "alert_firings"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("alert_rules.id", ondelete="SET NULL"))
    rule_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10), doc="firing | resolved")
    watch_id: Mapped[int] = mapped_column(Integer)
    window_size: Mapped[str] = mapped_column(String(16))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    metric: Mapped[str] = mapped_column(String(32))
    observed: Mapped[float | None] = mapped_column(Float)
    baseline: Mapped[float | None] = mapped_column(Float)
    baseline_std: Mapped[float | None] = mapped_column(Float)
    zscore: Mapped[float | None] = mapped_column(Float)
    n_posts: Mapped[int] = mapped_column(Integer, default=0)
    severity: Mapped[str] = mapped_column(String(16))
    sample_post_ids: Mapped[list[str]] = mapped_column(ARRAY(String(300)), default=list)
    fired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), doc="sent to alerts.fired")
    episode_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), doc="end of its first window")
    reason: Mapped[str | None] = mapped_column(Text, doc="the rule's verdict, e.g. z=5.1 vs 3")
    escalated: Mapped[bool] = mapped_column(Boolean, default=False, doc="severity raised within the episode")
    why: Mapped[dict[str, Any] | None] = mapped_column(JSONB, doc="reasons, phrases, sample posts")

    __table_args__ = (
        UniqueConstraint("rule_id", "watch_id", "window_size", "window_start", "status", name="uq_alert_firings_event"),
        Index("ix_alert_firings_unpublished", "id", postgresql_where=text("published_at IS NULL")),
    )


class AlertOutbox(Base):
    """Written in the same transaction as its firing; the alerts dispatcher consumes it."""

    __tablename__ = "alert_outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    firing_id: Mapped[int] = mapped_column(ForeignKey("alert_firings.id", ondelete="CASCADE"), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String(40), doc="grouped | resolved | deduplicated ...")

    __table_args__ = (Index("ix_alert_outbox_pending", "id", postgresql_where=text("processed_at IS NULL")),)


# --- delivery ---------------------------------------------------------------------------------------


class AlertGroup(Base):
    """Alertmanager-style notification group: one per (rule, watch)."""

    __tablename__ = "alert_groups"

    rule_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    watch_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(10), default="firing", doc="firing | resolved")
    last_firing_id: Mapped[int | None] = mapped_column(BigInteger)
    firing_count: Mapped[int] = mapped_column(Integer, default=0, doc="firing events since it opened")
    episode_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_flush_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="when to (re)notify: group_wait, repeat_interval or silence end"
    )
    last_notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_notified_status: Mapped[str | None] = mapped_column(String(10))
    notify_count: Mapped[int] = mapped_column(Integer, default=0)
    severity: Mapped[str | None] = mapped_column(String(16), doc="severity last notified")
    silenced_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), doc="wall clock")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Silence(Base):
    """Mutes notifications whose rule/watch/severity match, between starts_at and ends_at."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule_id: Mapped[int | None] = mapped_column(Integer, doc="None = any rule")
    watch_id: Mapped[int | None] = mapped_column(Integer, doc="None = any watch")
    severity: Mapped[str | None] = mapped_column(String(16), doc="None = any severity")
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), doc="recorded on expiry")
    suppressed_count: Mapped[int] = mapped_column(Integer, default=0)


class WebhookEndpoint(Base):
    """A webhook target; ``secret`` is ``whsec_<base64>`` (Standard Webhooks)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(10), default="json", doc="json | slack")
    min_severity: Mapped[str] = mapped_column(String(16), default="info")
    timeout_s: Mapped[float] = mapped_column(Float, default=5.0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=8)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Notification(Base):
    """One message to one endpoint: the webhook outbox. The body is frozen at creation, so every
    retry sends the same bytes under the same ``msg_id`` (the ``webhook-id`` header)."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    msg_id: Mapped[str] = mapped_column(String(64), unique=True)
    rule_id: Mapped[int] = mapped_column(Integer)
    watch_id: Mapped[int] = mapped_column(Integer)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    firing_id: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(10), doc="initial | update | repeat | resolved")
    status: Mapped[str] = mapped_column(String(10), doc="alert status: firing | resolved")
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(
        String(10), default="pending", doc="pending | sending | delivered | dead | silenced"
    )
    silence_id: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_notifications_due", "next_attempt_at", postgresql_where=text("state IN ('pending','sending')")),
    )


class WebhookDelivery(Base):
    """Every HTTP attempt of a notification, successful or not."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    msg_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(10), doc="ok | retry | dead | blocked")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("notification_id", "attempt", name="uq_webhook_delivery_attempt"),)
