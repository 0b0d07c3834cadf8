"""Knobs of the API process (`VOXPOP_API_*`); server URLs and the bind address come from `Settings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXPOP_API_", env_file=".env", extra="ignore")

    bootstrap_key: bool = Field(True, description="with no active admin key, create one at start and write it "
                                                  "to <state_dir>/api_key (mode 0600); never logged")
    key_cache_s: float = Field(5.0, description="how long a verified key is trusted without asking PostgreSQL")
    metrics_public: bool = Field(True, description="serve /metrics without an API key (Prometheus scrapes)")
    max_page: int = Field(500, description="largest page of a list endpoint")
    max_buckets: int = Field(5000, description="most time buckets one trends query may return")
    lag_cache_s: float = Field(10.0, description="how long /metrics reuses the Kafka consumer-lag reading")
    kafka_timeout_s: float = Field(5.0, description="Kafka admin calls of /metrics give up after this")
    media_allow_private_hosts: bool = False
