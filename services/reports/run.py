"""Generate one report: claim the run (once across replicas), gather, render, write, deliver."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text

from services.alerts.signing import signed_headers
from services.reports.data import collect, find_watch, period_bounds
from services.reports.render import make_charts, render_csv, render_html, render_pdf

log = logging.getLogger("voxpop.reports")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "watch"


def _claim(
    engine: Engine,
    watch_id: int,
    watch_name: str,
    period: str,
    start: datetime,
    end: datetime,
    trigger: str,
    force: bool,
    stale_s: int,
) -> tuple[int | None, dict[str, Any] | None]:
    """(run id we own, None) or (None, the existing run someone else did or is doing)."""
    with engine.begin() as conn:
        rid = conn.execute(
            text(
                """INSERT INTO report_runs (watch_id, watch_name, period, period_start, period_end, status, trigger,
                                        files, summary)
               VALUES (:w, :n, :p, :s, :e, 'running', :t, '{}', '{}')
               ON CONFLICT (watch_id, period, period_start) DO NOTHING RETURNING id"""
            ),
            {"w": watch_id, "n": watch_name, "p": period, "s": start, "e": end, "t": trigger},
        ).scalar()
        if rid is not None:
            return rid, None
        rid = conn.execute(
            text(
                """UPDATE report_runs SET status = 'running', trigger = :t, error = NULL, created_at = now(),
                                      finished_at = NULL
               WHERE watch_id = :w AND period = :p AND period_start = :s
                 AND (:force OR status = 'failed'
                      OR (status = 'running' AND created_at < now() - make_interval(secs => :stale)))
               RETURNING id"""
            ),
            {"w": watch_id, "p": period, "s": start, "t": trigger, "force": force, "stale": stale_s},
        ).scalar()
        if rid is not None:
            return rid, None
        row = (
            conn.execute(
                text("SELECT * FROM report_runs WHERE watch_id = :w AND period = :p AND period_start = :s"),
                {"w": watch_id, "p": period, "s": start},
            )
            .mappings()
            .one()
        )
        return None, dict(row)


def deliver_webhook(url: str, payload: dict[str, Any], secret: str | None, timeout_s: float = 10.0) -> str:
    body = json.dumps(payload, default=str).encode()
    msg_id = "rep_" + uuid.uuid4().hex
    if secret:  # Standard Webhooks, signed as the alert notifications are
        headers = signed_headers(secret, msg_id, body)
    else:
        headers = {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(int(time.time()))}
    try:
        r = httpx.post(url, content=body, headers=headers, timeout=timeout_s, follow_redirects=False)
        return f"delivered:{r.status_code}" if r.is_success else f"failed:HTTP {r.status_code}"
    except httpx.HTTPError as e:
        return f"failed:{type(e).__name__}"[:40]


def generate_report(
    engine: Engine,
    watch: int | str,
    period: str,
    end: date | datetime,
    out_root: Path,
    trigger: str = "manual",
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    force: bool = False,
    stale_s: int = 900,
) -> dict[str, Any]:
    """Write ``<out_root>/<watch>/<period>-<start>/`` with report.html, report.pdf, rows.csv; returns the run row.

    Idempotent per (watch, period, start): a second call returns the first run unless ``force``.
    """
    with engine.connect() as conn:
        w = find_watch(conn, watch)
    start, stop = period_bounds(period, end)
    rid, existing = _claim(engine, w[0], w[1], period, start, stop, trigger, force, stale_s)
    if rid is None:
        if existing is None:  # never: _claim returns our run id or the existing run
            raise RuntimeError(f"report {w[1]} {period} {start.date()}: neither claimed nor found")
        log.info("report %s %s %s already %s (run %s)", w[1], period, start.date(), existing["status"], existing["id"])
        return existing
    try:
        data = collect(engine, w[0], period, stop)
        ch = make_charts(data)
        out = Path(out_root) / slug(w[1]) / f"{period}-{start:%Y-%m-%d}"
        out.mkdir(parents=True, exist_ok=True)
        files = {"html": out / "report.html", "pdf": out / "report.pdf", "csv": out / "rows.csv"}
        files["html"].write_text(render_html(data, ch), encoding="utf-8")
        files["pdf"].write_bytes(render_pdf(data, ch))
        files["csv"].write_text(render_csv(data), encoding="utf-8")
        summary = data.summary()
        hook = None
        if webhook_url:
            hook = deliver_webhook(
                webhook_url,
                {
                    "type": "report.generated",
                    "run_id": rid,
                    "watch": w[1],
                    "period": period,
                    "start": start,
                    "end": stop,
                    "summary": summary,
                    "files": {k: str(v) for k, v in files.items()},
                },
                webhook_secret,
            )
        with engine.begin() as conn:
            row = (
                conn.execute(
                    text(
                        """UPDATE report_runs SET status = 'done', out_dir = :d, files = CAST(:f AS jsonb),
                          summary = CAST(:s AS jsonb), webhook_status = :h, finished_at = now()
                   WHERE id = :id RETURNING *"""
                    ),
                    {
                        "id": rid,
                        "d": str(out),
                        "f": json.dumps({k: str(v) for k, v in files.items()}),
                        "s": json.dumps(summary),
                        "h": hook,
                    },
                )
                .mappings()
                .one()
            )
        log.info("report %s %s %s written to %s (%d posts)", w[1], period, start.date(), out, summary["posts"])
        return dict(row)
    except Exception as e:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE report_runs SET status = 'failed', error = :e, finished_at = now() WHERE id = :id"),
                {"id": rid, "e": f"{type(e).__name__}: {e}"[:2000]},
            )
        raise


def report_run(engine: Engine, run_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        r = conn.execute(text("SELECT * FROM report_runs WHERE id = :i"), {"i": run_id}).mappings().first()
    return dict(r) if r else None
