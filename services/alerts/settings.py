"""Knobs of the alerts dispatcher (`VOXPOP_ALERTS_*`); server URLs come from `Settings`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AlertsSettings(BaseSettings):
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
    allow_cidrs: list[str] = Field(
        default_factory=list, description="private ranges allowed (e.g. 10.0.0.0/8)"
    )
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
        from services.config import get_settings

        s = get_settings()
        host = "127.0.0.1" if s.api_host in ("0.0.0.0", "::", "") else s.api_host
        return f"http://{host}:{s.api_port}"
