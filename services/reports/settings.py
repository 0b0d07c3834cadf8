"""Knobs of reports and the scheduler (`VOXPOP_REPORTS_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReportSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXPOP_REPORTS_", env_file=".env", extra="ignore")

    dir: Path | None = Field(None, description="where reports are written; default <state_dir>/reports")
    webhook_url: str | None = Field(None, description="POST a JSON notice of each finished report here")
    webhook_secret: SecretStr | None = Field(None, description="whsec_... to sign report webhooks")
    weekly_cron: str = Field("0 6 * * mon", description="crontab of the weekly reports (UTC)")
    daily_cron: str | None = Field(None, description="crontab of daily reports; None = no daily reports")
    periods_end: str = Field("now", description="now: last full period by the clock; data: by the newest post")
    retention_days: int | None = Field(None, description="delete report files older than this; None = keep")
    stale_run_s: int = Field(900, description="a 'running' report older than this may be taken over")
