"""Knobs of the trends worker (`VOXPOP_TRENDS_*`); server URLs and topics come from `Settings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrendsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXPOP_TRENDS_", env_file=".env", extra="ignore")

    app_id: str = Field("voxpop-trends", description="Faust app id = Kafka consumer group")
    windows: list[str] = Field(["1m", "5m", "1h", "1h@5m"], description="tumbling `1h`, hopping `1h@5m`")
    lateness_s: float = Field(300.0, description="allowed event-time lateness before a window closes")
    idle_s: float = Field(120.0, description="a partition silent this long stops holding the watermark")
    partitions: int | None = Field(None, description="partitions of posts.scored; None = ask the broker")
    batch_max: int = Field(500, description="records per transaction")
    batch_within_s: float = Field(0.5, description="max wait to fill a batch")
    top_n: int = Field(5, description="most negative / positive post ids kept per window")
    publish_interval_s: float = Field(2.0, description="alerts.fired outbox relay period")
    live_ttl_s: int = Field(7 * 24 * 3600, description="TTL of live snapshot keys in Redis")
    session_timeout_s: float = Field(60.0, description="Kafka group session timeout (slow brokers)")
