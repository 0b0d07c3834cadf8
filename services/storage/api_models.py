"""Tables of the API and the scheduler: hashed API keys and report runs.

Migration: ``migrations/versions/0003_api_reports.py`` (which also creates APScheduler's job
table, so the schema is complete after ``voxpop migrate`` and nothing is created at run time).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.storage.models import Base


class ApiKey(Base):
    """An API key: only the sha256 of the token is stored; ``prefix`` identifies it in lists."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), doc="first characters of the token, for humans")
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(16)), doc="read | write | admin")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReportRun(Base):
    """One brand-sentiment report of one watch and period; the unique key makes a run happen once
    even when several scheduler replicas fire the same job."""

    __tablename__ = "report_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    watch_id: Mapped[int] = mapped_column(Integer)
    watch_name: Mapped[str] = mapped_column(String(200))
    period: Mapped[str] = mapped_column(String(10), doc="daily | weekly | monthly")
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(10), default="running", doc="running | done | failed")
    trigger: Mapped[str] = mapped_column(String(20), default="manual", doc="manual | scheduler | api")
    out_dir: Mapped[str | None] = mapped_column(Text)
    files: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict, doc="kind -> path")
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    webhook_status: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("watch_id", "period", "period_start", name="uq_report_runs_period"),)
