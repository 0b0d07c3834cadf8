"""Scheduled jobs and the scheduler that runs them.

Jobs live in PostgreSQL (APScheduler's SQLAlchemyJobStore, table ``apscheduler_jobs`` created by
migration 0003), so they survive restarts and every replica sees the same schedule. APScheduler 3
does not itself stop two replicas from running one due job; each job therefore claims its work
in PostgreSQL: a report run is unique per (watch, period, start) (see ``services.reports.run``),
and retention takes an advisory lock. Job functions are referenced by name and read server URLs
from this process's context, so no credentials are pickled into the job table.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import text

from pipelines.advisory_locks import Lock
from services.config import ReportSettings, get_settings
from services.reports.data import last_full_period_end
from services.reports.run import generate_report
from services.storage.db import engine_for

log = logging.getLogger("voxpop.scheduler")


@dataclass
class JobContext:
    database_url: str
    reports: ReportSettings
    out_dir: Path


_ctx: JobContext | None = None


def set_context(database_url: str, reports: ReportSettings | None = None, state_dir: Path | None = None) -> JobContext:
    """Server URL and settings the jobs of this process use (set by `voxpop scheduler` and tests)."""
    global _ctx
    rs = reports or get_settings().reports
    _ctx = JobContext(database_url, rs, rs.dir or Path(state_dir or ".voxpop") / "reports")
    return _ctx


def _context() -> JobContext:
    if _ctx is None:
        from services.config import get_settings

        s = get_settings()
        if not s.database_url:
            raise RuntimeError("scheduler jobs need VOXPOP_DATABASE_URL (or set_context())")
        return set_context(s.database_url, state_dir=s.state_dir)
    return _ctx


# --- jobs (module-level functions: the job store keeps them by reference) --------------------------
def run_reports(period: str = "weekly", watch: str | None = None, end: str | None = None) -> list[int]:
    """Reports of every active watch (or one) for the last full period, or the one ending at ``end``."""
    ctx = _context()
    engine = engine_for(ctx.database_url)
    with engine.connect() as conn:
        q = "SELECT id, name FROM watches WHERE active" + (" AND name = :n" if watch else "") + " ORDER BY id"
        watches = conn.execute(text(q), {"n": watch}).all()
        newest = conn.execute(text("SELECT max(created_at) FROM posts")).scalar()
    if end:
        stop: date | datetime = date.fromisoformat(end)
    elif ctx.reports.periods_end == "data" and newest is not None:
        stop = last_full_period_end(period, newest)
    else:
        stop = last_full_period_end(period, datetime.now(UTC))
    secret = ctx.reports.webhook_secret.get_secret_value() if ctx.reports.webhook_secret else None
    done = []
    for wid, name in watches:
        try:
            row = generate_report(
                engine,
                wid,
                period,
                stop,
                ctx.out_dir,
                trigger="scheduler",
                webhook_url=ctx.reports.webhook_url,
                webhook_secret=secret,
                stale_s=ctx.reports.stale_run_s,
            )
            done.append(row["id"])
        except Exception:
            log.exception("report of %s (%s) failed; the other watches go on", name, period)
    return done


def retention() -> int:
    """Delete report directories older than the retention period (one replica at a time)."""
    ctx = _context()
    days = ctx.reports.retention_days
    if not days:
        return 0
    engine = engine_for(ctx.database_url)
    with engine.connect() as conn:
        if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": int(Lock.REPORT_RETENTION)}).scalar():
            return 0
        try:
            old = conn.execute(
                text("SELECT id, out_dir FROM report_runs WHERE finished_at < :t AND out_dir IS NOT NULL"),
                {"t": datetime.now(UTC) - timedelta(days=days)},
            ).all()
            for rid, d in old:
                shutil.rmtree(d, ignore_errors=True)
                conn.execute(text("UPDATE report_runs SET out_dir = NULL, files = '{}' WHERE id = :i"), {"i": rid})
            conn.commit()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": int(Lock.REPORT_RETENTION)})
    return len(old)


# --- the scheduler --------------------------------------------------------------------------------
def build_scheduler(database_url: str, blocking: bool = True) -> BaseScheduler:
    store = SQLAlchemyJobStore(engine=engine_for(database_url), tablename="apscheduler_jobs")
    cls = BlockingScheduler if blocking else BackgroundScheduler
    return cls(
        jobstores={"default": store},
        executors={"default": ThreadPoolExecutor(2)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 6 * 3600},
        timezone=UTC,
    )


def install_jobs(sched: BaseScheduler, rs: ReportSettings) -> list[str]:
    """The standing schedule (replace_existing: every replica may call this at start)."""
    ids = []
    sched.add_job(
        "services.scheduler.jobs:run_reports",
        CronTrigger.from_crontab(rs.weekly_cron, timezone=UTC),
        id="reports-weekly",
        name="weekly brand-sentiment reports",
        kwargs={"period": "weekly"},
        replace_existing=True,
    )
    ids.append("reports-weekly")
    if rs.daily_cron:
        sched.add_job(
            "services.scheduler.jobs:run_reports",
            CronTrigger.from_crontab(rs.daily_cron, timezone=UTC),
            id="reports-daily",
            name="daily brand-sentiment reports",
            kwargs={"period": "daily"},
            replace_existing=True,
        )
        ids.append("reports-daily")
    elif sched.get_job("reports-daily"):
        sched.remove_job("reports-daily")
    sched.add_job(
        "services.scheduler.jobs:retention",
        CronTrigger(hour=3, minute=17, timezone=UTC),
        id="retention",
        name="report file retention",
        replace_existing=True,
    )
    ids.append("retention")
    return ids


def wait_for_run(database_url: str, watch: str, period: str, timeout_s: float = 120.0) -> dict[str, Any] | None:
    """Poll until a report run of ``watch`` finishes (tests and `--run-now`)."""
    engine = engine_for(database_url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            r = (
                conn.execute(
                    text(
                        "SELECT * FROM report_runs WHERE watch_name = :w AND period = :p "
                        "AND status <> 'running' ORDER BY id DESC LIMIT 1"
                    ),
                    {"w": watch, "p": period},
                )
                .mappings()
                .first()
            )
        if r is not None:
            return dict(r)
        time.sleep(0.5)
    return None
