"""Request and response models: the OpenAPI document is generated from these, so keep them exact."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

Label = Literal["negative", "neutral", "positive"]
Modality = Literal["text", "image", "audio", "video"]
Severity = Literal["info", "warning", "critical"]
Scope = Literal["read", "write", "admin"]


#: a row id: a positive 32-bit integer (PostgreSQL ``integer``)
DbId = Annotated[int, Field(ge=1, le=2_147_483_647)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    detail: str = Field(..., description="what went wrong, in words")


#: a route's documented error answers, FastAPI's `responses=` shape: status code -> OpenAPI fields
Responses = dict[int | str, dict[str, Any]]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: bool
    redis: bool
    version: str


# --- watches ------------------------------------------------------------------------------------
_TERMS: list[str] = Field(default_factory=list, max_length=200)


class WatchIn(_In):
    name: str = Field(..., min_length=1, max_length=200, pattern=r"\S")
    kind: Literal["brand", "topic"] = "brand"
    keywords: list[str] = _TERMS
    handles: list[str] = _TERMS
    hashtags: list[str] = _TERMS
    languages: list[str] = _TERMS
    active: bool = True

    @field_validator("keywords", "handles", "hashtags", "languages")
    @classmethod
    def _clean(cls, v: list[str]) -> list[str]:
        out = [t.strip() for t in v if t.strip()]
        if any(len(t) > 200 for t in out):
            raise ValueError("each term must be at most 200 characters")
        return out

    @model_validator(mode="after")
    def _matches_something(self) -> WatchIn:
        if not (self.keywords or self.handles or self.hashtags):
            raise ValueError("a watch needs at least one keyword, handle or hashtag")
        return self


class WatchPatch(_In):
    name: str | None = Field(None, min_length=1, max_length=200, pattern=r"\S")
    kind: Literal["brand", "topic"] | None = None
    keywords: list[str] | None = Field(None, max_length=200)
    handles: list[str] | None = Field(None, max_length=200)
    hashtags: list[str] | None = Field(None, max_length=200)
    languages: list[str] | None = Field(None, max_length=200)
    active: bool | None = None


class WatchOut(BaseModel):
    id: int
    name: str
    kind: str
    keywords: list[str]
    handles: list[str]
    hashtags: list[str]
    languages: list[str]
    active: bool
    created_at: datetime


# --- alert rules ----------------------------------------------------------------------------------
# The evaluator's vocabulary (pipelines.trends.rules; tests/unit/test_rule_schema.py keeps them equal)
RuleKind = Literal["threshold", "spike", "surge", "dip"]
RuleMetric = Literal[
    "n_posts",
    "n_negative",
    "n_neutral",
    "n_positive",
    "unique_authors",
    "mean_score",
    "share_negative",
    "share_positive",
]
RuleOp = Literal[">", ">=", "<", "<="]
RuleDirection = Literal["up", "down", "both"]
BaselineMethod = Literal["mean", "ewma", "median"]
CountModel = Literal["gaussian", "poisson", "negbin"]
Seasonality = Literal["none", "hour_of_day"]


class RuleIn(_In):
    name: str = Field(..., min_length=1, max_length=200, pattern=r"\S")
    watch_id: DbId | None = Field(None, description="None = every watch")
    window_size: str = Field("1h", max_length=16, description="a window size the trends app computes")
    kind: RuleKind = "threshold"
    metric: RuleMetric = "share_negative"
    op: RuleOp = ">="
    threshold: float | None = Field(None, allow_inf_nan=False)
    z_score: float | None = Field(None, gt=0, allow_inf_nan=False)
    direction: RuleDirection = "up"
    factor: float | None = Field(None, gt=0, allow_inf_nan=False)
    drop: float | None = Field(None, gt=0, allow_inf_nan=False)
    min_delta: float = Field(0.0, ge=0, allow_inf_nan=False)
    min_observed: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="surge/spike: the observed value must reach this too"
    )
    baseline_method: BaselineMethod = "mean"
    model: CountModel = "gaussian"
    exclude_fired: bool = Field(True, description="keep windows of episodes out of the baseline")
    seasonality: Seasonality = "none"
    resolve_after: int = Field(1, ge=1, le=1000, description="calm windows before an episode resolves")
    resolve_ratio: float = Field(1.0, gt=0, le=1, description="calm = level below this x threshold")
    ewma_alpha: float = Field(0.3, gt=0, le=1)
    lookback: int = Field(24, ge=1, le=10_000)
    min_baseline: int = Field(6, ge=0, le=10_000)
    std_floor: float = Field(0.0, ge=0, allow_inf_nan=False)
    min_volume: int = Field(0, ge=0, le=10_000_000)
    severity: Severity = "warning"
    cooldown_s: int = Field(3600, ge=0, le=365 * 86400)
    enabled: bool = True
    labels: dict[str, str] = Field(default_factory=dict, max_length=50)


class RulePatch(_In):
    name: str | None = Field(None, min_length=1, max_length=200, pattern=r"\S")
    watch_id: DbId | None = None
    window_size: str | None = Field(None, max_length=16)
    kind: RuleKind | None = None
    metric: RuleMetric | None = None
    op: RuleOp | None = None
    threshold: float | None = Field(None, allow_inf_nan=False)
    z_score: float | None = Field(None, gt=0, allow_inf_nan=False)
    direction: RuleDirection | None = None
    factor: float | None = Field(None, gt=0, allow_inf_nan=False)
    drop: float | None = Field(None, gt=0, allow_inf_nan=False)
    min_delta: float | None = Field(None, ge=0, allow_inf_nan=False)
    min_observed: float | None = Field(None, ge=0, allow_inf_nan=False)
    baseline_method: BaselineMethod | None = None
    model: CountModel | None = None
    exclude_fired: bool | None = None
    seasonality: Seasonality | None = None
    resolve_after: int | None = Field(None, ge=1, le=1000)
    resolve_ratio: float | None = Field(None, gt=0, le=1)
    ewma_alpha: float | None = Field(None, gt=0, le=1)
    lookback: int | None = Field(None, ge=1, le=10_000)
    min_baseline: int | None = Field(None, ge=0, le=10_000)
    std_floor: float | None = Field(None, ge=0, allow_inf_nan=False)
    min_volume: int | None = Field(None, ge=0, le=10_000_000)
    severity: Severity | None = None
    cooldown_s: int | None = Field(None, ge=0, le=365 * 86400)
    enabled: bool | None = None
    labels: dict[str, str] | None = Field(None, max_length=50)


class RuleOut(BaseModel):
    id: int
    name: str
    watch_id: int | None
    window_size: str
    kind: str
    metric: str
    op: str
    threshold: float | None
    z_score: float | None
    direction: str
    factor: float | None
    drop: float | None
    min_delta: float
    min_observed: float
    baseline_method: str
    model: str
    exclude_fired: bool
    seasonality: str
    resolve_after: int
    resolve_ratio: float
    ewma_alpha: float
    lookback: int
    min_baseline: int
    std_floor: float
    min_volume: int
    severity: str
    cooldown_s: int
    enabled: bool
    labels: dict[str, str | int | float | bool | None]
    created_at: datetime
    firing: bool = Field(False, description="currently firing for at least one watch")


# --- silences -------------------------------------------------------------------------------------
class SilenceIn(_In):
    rule_id: DbId | None = None
    watch_id: DbId | None = None
    severity: Severity | None = None
    starts_at: datetime | None = Field(None, description="default: now")
    ends_at: datetime
    comment: str = Field("", max_length=2000)
    created_by: str = Field("", max_length=200)

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("timestamps must carry a timezone (ISO 8601 with offset or Z)")
        return v


class SilencePatch(_In):
    ends_at: datetime | None = None
    comment: str | None = Field(None, max_length=2000)

    @field_validator("ends_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("timestamps must carry a timezone (ISO 8601 with offset or Z)")
        return v


class SilenceOut(BaseModel):
    id: int
    rule_id: int | None
    watch_id: int | None
    severity: str | None
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str
    created_at: datetime
    expired_at: datetime | None
    suppressed_count: int
    active: bool


# --- webhooks -------------------------------------------------------------------------------------
class WebhookIn(_In):
    name: str = Field(..., min_length=1, max_length=200, pattern=r"\S")
    url: HttpUrl
    kind: Literal["json", "slack"] = "json"
    min_severity: Severity = "info"
    timeout_s: float = Field(5.0, gt=0, le=60)
    max_attempts: int = Field(8, ge=1, le=50)
    enabled: bool = True
    secret: str | None = Field(
        None, pattern=r"^whsec_[A-Za-z0-9+/=]{24,}$", description="Standard Webhooks secret; generated when omitted"
    )


class WebhookPatch(_In):
    name: str | None = Field(None, min_length=1, max_length=200, pattern=r"\S")
    url: HttpUrl | None = None
    kind: Literal["json", "slack"] | None = None
    min_severity: Severity | None = None
    timeout_s: float | None = Field(None, gt=0, le=60)
    max_attempts: int | None = Field(None, ge=1, le=50)
    enabled: bool | None = None


class WebhookOut(BaseModel):
    id: int
    name: str
    url: str
    kind: str
    min_severity: str
    timeout_s: float
    max_attempts: int
    enabled: bool
    created_at: datetime
    secret_hint: str = Field(..., description="the secret's first characters; the whole secret is shown once")


class WebhookCreated(WebhookOut):
    secret: str = Field(..., description="shown only in this response: keep it to verify signatures")


# --- posts ----------------------------------------------------------------------------------------
class AuthorRef(BaseModel):
    id: str
    handle: str | None


class MediaOut(BaseModel):
    idx: int
    kind: str
    mime: str | None
    bytes: int | None
    status: str
    url: str = Field(..., description="API route that serves the bytes (same limits as the scorer)")


class PredictionOut(BaseModel):
    model_name: str
    model_version: str
    label: str
    score: float
    probabilities: dict[str, float]
    emotion: str | None
    modality_weights: dict[str, float]
    dominant_modality: str | None = Field(..., description="the view with the largest fusion weight")
    user_prior_count: int = Field(..., description="author's earlier posts behind the per-user (eta) term")
    scored_at: datetime
    reason: str | None = Field(
        None,
        description='complaint reason of a negative post ("Can\'t Tell": the head abstained); None for other posts',
    )
    reason_probability: float | None = Field(None, description="the reason head's top probability")


class SegmentOut(BaseModel):
    start: float
    end: float
    text: str


class TranscriptOut(BaseModel):
    text: str = Field(..., description="what was said in the post's audio or video track")
    language: str | None = Field(..., description="the language Whisper detected (or was told)")
    language_probability: float | None
    status: str = Field(..., description="ok | no speech | truncated | timeout | unavailable: ...")
    model: str | None = Field(..., description="e.g. whisper-base-int8")
    segments: list[SegmentOut] = Field(..., description="timed segments, seconds from the start of the audio")
    audio_s: float | None
    speech_s: float | None = Field(..., description="seconds left after voice-activity trimming")
    asr_ms: float | None


class PostOut(BaseModel):
    id: str
    platform: str
    author: AuthorRef
    text: str
    lang: str | None
    created_at: datetime
    thread_id: str | None
    reply_to: str | None
    modalities: list[str]
    watches: list[int]
    media: list[MediaOut]
    prediction: PredictionOut | None
    av_predictions: list[PredictionOut] = Field(
        default_factory=list,
        description="tri-modal heads' predictions for audio/video posts (model 'av:...'), "
        "each with the modality that dominated",
    )
    transcript: TranscriptOut | None = Field(None, description="speech recognised in its audio / video track")
    dominant_view: str | None = Field(None, description="what drove its sentiment: words, voice, frames, image")


class PostPage(BaseModel):
    items: list[PostOut]
    next_cursor: str | None = Field(..., description="pass as `cursor` for the next page; null at the end")
    limit: int


# --- trends ---------------------------------------------------------------------------------------
class TrendPoint(BaseModel):
    t: datetime = Field(..., description="bucket start")
    n: int
    counts: dict[str, int]
    mean_score: float | None
    share_negative: float | None
    share_positive: float | None
    unique_authors: int = Field(
        ..., description="distinct authors of the bucket's stored windows, summed (exact where bucket = window size)"
    )
    share_of_voice: float | None = Field(..., description="this watch's posts / all requested watches' posts")


class TrendSeries(BaseModel):
    watch_id: int
    watch_name: str
    total: int
    mean_score: float | None
    share_negative: float | None
    unique_authors: int = Field(..., description="the points' unique_authors summed")
    points: list[TrendPoint]


class TrendsOut(BaseModel):
    bucket: str
    since: datetime
    until: datetime
    series: list[TrendSeries]


class WindowOut(BaseModel):
    watch_id: int
    size: str
    window_start: datetime
    window_end: datetime
    n_posts: int
    n_negative: int
    n_neutral: int
    n_positive: int
    mean_score: float | None
    share_negative: float | None
    share_positive: float | None
    unique_authors: int | None = Field(
        ..., description="distinct authors; null in a live (open) window: they are counted when it closes"
    )
    top_negative: list[str]
    top_positive: list[str]
    late_posts: int
    closed_at: datetime | None = None
    open: bool = False


class LiveOut(BaseModel):
    watermark: datetime | None
    windows: list[WindowOut]


# --- authors --------------------------------------------------------------------------------------
class AuthorSummary(BaseModel):
    id: str
    handle: str | None
    posts: int
    mean_score: float | None
    share_negative: float | None
    last_post_at: datetime | None


class AuthorPoint(BaseModel):
    post_id: str
    created_at: datetime
    label: str
    score: float
    user_prior_count: int = Field(..., description="n: earlier posts folded into the author state when scored")
    running_mean: float = Field(..., description="the author's mean score up to and including this post")
    text: str


class AuthorDetail(BaseModel):
    id: str
    platform: str
    handle: str | None
    first_seen: datetime
    last_seen: datetime
    post_count: int
    mean_score: float | None
    label_counts: dict[str, int]
    history: list[AuthorPoint]


# --- alerts ---------------------------------------------------------------------------------------
class FiringOut(BaseModel):
    id: int
    rule_id: int | None
    rule_name: str
    status: str
    watch_id: int
    watch_name: str | None
    window_size: str
    window_start: datetime
    window_end: datetime
    metric: str
    observed: float | None
    baseline: float | None
    zscore: float | None
    n_posts: int
    severity: str
    sample_post_ids: list[str]
    fired_at: datetime
    episode_start: datetime | None = Field(None, description="event time the episode opened")
    reason: str | None = Field(None, description="the rule's verdict on the window")
    escalated: bool = False
    notify_outcome: str | None = Field(
        None, description="what the dispatcher did: grouped | deduplicated | resolved | resolved_unnotified ..."
    )
    why: dict[str, Any] | None = Field(None, description="reasons, phrases and sample posts of the window")


class FiringPage(BaseModel):
    items: list[FiringOut]
    next_cursor: str | None


class ResendIn(BaseModel):
    ids: list[int] | None = Field(None, description="dead notifications to send again")
    endpoint_id: int | None = Field(None, description="every dead notification of this endpoint")
    all: bool = Field(False, description="every dead notification")


class Resent(BaseModel):
    queued: list[int]


class DeliveryOut(BaseModel):
    id: int
    notification_id: int
    attempt: int
    url: str
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    outcome: str


class NotificationOut(BaseModel):
    id: int
    msg_id: str
    endpoint_id: int
    endpoint_name: str | None
    reason: str
    status: str
    state: str
    attempts: int
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    deliveries: list[DeliveryOut]


class FiringDetail(FiringOut):
    notifications: list[NotificationOut]


# --- reports --------------------------------------------------------------------------------------
class ReportIn(_In):
    watch_id: DbId
    period: Literal["daily", "weekly", "monthly"] = "weekly"
    end: datetime | None = Field(
        None, description="period end (exclusive); default: the newest full period holding the watch's posts"
    )
    webhook_url: HttpUrl | None = None


class ReportOut(BaseModel):
    id: int
    watch_id: int
    watch_name: str
    period: str
    period_start: datetime
    period_end: datetime
    status: str
    trigger: str
    files: dict[str, str] = Field(..., description="kind -> API path of the file")
    summary: dict[str, float | int | str | None]
    webhook_status: str | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


# --- keys -----------------------------------------------------------------------------------------
class KeyIn(_In):
    name: str = Field(..., min_length=1, max_length=200, pattern=r"\S")
    scope: Scope = "read"


class KeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    scope: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    token: str = Field(..., description="shown only in this response; only its sha256 is stored")


# --- overview -------------------------------------------------------------------------------------
class Overview(BaseModel):
    posts: int
    authors: int
    watches: int
    firing_alerts: int
    latest_post_at: datetime | None
    counters: dict[str, int] = Field(..., description="ingest/scorer counters kept in Redis")
    watermark: datetime | None
