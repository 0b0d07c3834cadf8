"""The API and dashboard, API keys, reasons, reports and the scheduler."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from services.cli.app import (
    _endpoints,
    _logging,
    app,
)
from services.config import Settings, freeze_startup_heap, get_settings

# --------------------------------------------------------------------------- api, reports, scheduler
apikey_app = typer.Typer(help="API keys (stored hashed; the token is shown once).", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
reasons_app = typer.Typer(help="Complaint reasons (why posts are negative).", no_args_is_help=True)
app.add_typer(reasons_app, name="reasons")


@reasons_app.command("train")
def reasons_train(
    out: Annotated[str, typer.Option(help="Markdown report; the JSON goes beside it")] = "docs/reasons.md",
) -> None:
    """Train the reason head on the airline tweets' human negativereason labels; held-out F1 beside
    a keyword baseline -> docs/reasons.md/.json and models/checkpoints/reasons-minilm-lr/."""
    import json as _json
    import time as _time

    from models.text_encoder import TextEncoder
    from pipelines.feature_cache import cached_text_features
    from pipelines.reasons import load_reasons, reasons_markdown, save_head, train_and_evaluate
    from pipelines.trends.airline import airline_csv

    s = get_settings()
    path = airline_csv(s.data_dir)
    if not path.exists():
        raise typer.BadParameter(f"airline data not found at {path}: set VOXPOP_DATA_DIR to the shared data folder")
    t0 = _time.perf_counter()
    data = load_reasons(path)
    enc = TextEncoder()
    feats = cached_text_features(enc, data.texts, s.feature_cache_dir)
    head, threshold, report = train_and_evaluate(data, feats)
    seconds = _time.perf_counter() - t0
    save_head(head, threshold, report, s.checkpoints_dir / "reasons-minilm-lr", enc.version)
    Path(out).write_text(reasons_markdown(report, seconds))
    Path(out).with_suffix(".json").write_text(_json.dumps(report, indent=1) + "\n")
    typer.echo(
        f"wrote {out}: macro-F1 head {report['head']['macro_f1']:.3f}, keywords {report['keywords']['macro_f1']:.3f}"
    )


def _migrated_db() -> str:
    from services.storage.db import migrate as run_migrations

    url = _endpoints(get_settings()).database_url
    run_migrations(url)
    return url


def bootstrap_key(settings: Settings, database_url: str) -> Path | None:
    """With no active admin key, create one and write it (mode 0600) under the state dir; never log it."""
    from services.api.keys import create_key, has_active_admin
    from services.storage.db import engine_for

    engine = engine_for(database_url)
    if has_active_admin(engine):
        return None
    _, token = create_key(engine, "bootstrap", "admin")
    path = Path(settings.state_dir) / "api_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(token + "\n")
    return path


@app.command()
def api(host: str | None = None, port: int | None = None) -> None:
    """Serve the REST API, server-sent events, /metrics and the dashboard."""
    import uvicorn

    from services.api.app import create_app

    _logging()
    s = get_settings()
    ep = _endpoints(s)
    s = s.model_copy(
        update={"database_url": ep.database_url, "redis_url": ep.redis_url, "kafka_bootstrap": ep.kafka_bootstrap}
    )
    _migrated_db()
    api_s = s.api
    if api_s.bootstrap_key:
        path = bootstrap_key(s, ep.database_url)
        if path:
            logging.getLogger("voxpop.api").info("created an admin API key; it is in %s (shown nowhere else)", path)
    h, p = host or s.api_host, port or s.api_port
    logging.getLogger("voxpop.api").info("dashboard: http://%s:%d/  (API docs at /docs)", h, p)
    app_ = create_app(s, api_s)
    freeze_startup_heap()
    uvicorn.run(app_, host=h, port=p, log_level="warning", proxy_headers=False)


@apikey_app.command("create")
def apikey_create(name: str, scope: Annotated[str, typer.Option(help="read | write | admin")] = "read") -> None:
    """Create a key and print its token (only now: just its sha256 is stored)."""
    from services.api.keys import SCOPES, create_key
    from services.storage.db import engine_for

    if scope not in SCOPES:
        raise typer.BadParameter(f"scope must be one of {SCOPES}")
    row, token = create_key(engine_for(_migrated_db()), name, scope)
    typer.echo(f"key {row['id']} ({row['name']}, scope {row['scope']}):\n{token}")


@apikey_app.command("revoke")
def apikey_revoke(key_id: int) -> None:
    from services.api.keys import revoke_key
    from services.storage.db import engine_for

    row = revoke_key(engine_for(_migrated_db()), key_id)
    if row is None:
        raise typer.BadParameter(f"no key {key_id}")
    typer.echo(f"key {key_id} ({row['name']}) revoked at {row['revoked_at']}")


@apikey_app.command("list")
def apikey_list() -> None:
    from services.api.keys import list_keys
    from services.storage.db import engine_for

    for k in list_keys(engine_for(_migrated_db())):
        typer.echo(json.dumps(k, default=str))


@app.command()
def report(
    watch: Annotated[str, typer.Option(help="watch name (or id); `voxpop watches list` shows them")],
    period: Annotated[str, typer.Option(help="daily | weekly | monthly")] = "weekly",
    end: Annotated[
        str | None,
        typer.Option(
            help="period end date YYYY-MM-DD (exclusive); default: the latest full period of the watch's data"
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="output root; default VOXPOP_REPORTS_DIR or .voxpop/reports")] = None,
    webhook: Annotated[str | None, typer.Option(help="also POST a signed JSON notice here")] = None,
    force: Annotated[bool, typer.Option(help="regenerate a period already done")] = False,
) -> None:
    """Write one brand-sentiment report (HTML, PDF, CSV) for a watch and period.

    Without --end the period is the watch's latest by its data (a replay of 2015 reports on 2015);
    a period without posts is still written, with a warning on stderr."""
    from datetime import UTC, date, datetime

    from services.reports.data import PERIODS, data_period_end, find_watch, last_full_period_end, posts_between
    from services.reports.run import generate_report
    from services.storage.db import engine_for

    _logging()
    if period not in PERIODS:
        raise typer.BadParameter(f"period must be one of {list(PERIODS)}")
    s = get_settings()
    rs = s.reports
    engine = engine_for(_migrated_db())
    key: int | str = int(watch) if watch.isdigit() else watch
    try:
        by_data = None if end else data_period_end(engine, key, period)
    except LookupError as e:
        raise typer.BadParameter(f"{e}; `voxpop watches list` shows the watches") from None
    stop = date.fromisoformat(end) if end else by_data or last_full_period_end(period, datetime.now(UTC))
    secret = rs.webhook_secret.get_secret_value() if rs.webhook_secret else None
    try:
        row = generate_report(
            engine,
            key,
            period,
            stop,
            out or rs.dir or Path(s.state_dir) / "reports",
            trigger="manual",
            webhook_url=webhook or rs.webhook_url,
            webhook_secret=secret,
            force=force,
        )
    except LookupError as e:
        raise typer.BadParameter(str(e)) from None
    if not (row.get("summary") or {}).get("posts"):
        with engine.connect() as conn:
            wid, name = find_watch(conn, key)
            n, first, newest = posts_between(conn, wid, None, None)
        span = (
            f"its {n} posts run from {first:%Y-%m-%d %H:%M} to {newest:%Y-%m-%d %H:%M} UTC"
            if n
            else "it has no posts yet"
        )
        typer.echo(
            f"warning: the {period} report of {name} for {row['period_start']:%Y-%m-%d} to "
            f"{row['period_end']:%Y-%m-%d} (UTC) has no posts: {span}. "
            + ("Leave out --end for the latest period of its data, or give an --end inside that span." if n else ""),
            err=True,
        )
    typer.echo(
        json.dumps(
            {k: row[k] for k in ("id", "status", "files", "summary", "webhook_status", "error")}, default=str, indent=2
        )
    )


@app.command()
def scheduler(
    run_now: Annotated[bool, typer.Option(help="also run the weekly reports once at start")] = False,
) -> None:
    """Run scheduled jobs (reports, retention) from the PostgreSQL job store until SIGTERM."""
    import signal
    from datetime import UTC, datetime

    from services.scheduler.jobs import build_scheduler, install_jobs, set_context

    _logging()
    s = get_settings()
    url = _migrated_db()
    rs = s.reports
    set_context(url, rs, s.state_dir)
    sched = build_scheduler(url, blocking=True)
    install_jobs(sched, rs)
    if run_now:
        sched.add_job(
            "services.scheduler.jobs:run_reports",
            "date",
            run_date=datetime.now(UTC),
            id="reports-weekly-now",
            kwargs={"period": "weekly"},
            replace_existing=True,
        )
    log = logging.getLogger("voxpop.scheduler")
    now = datetime.now(UTC)
    for job in sched.get_jobs():
        log.info("job %s (%s): next run %s", job.id, job.name, job.trigger.get_next_fire_time(None, now))
    signal.signal(signal.SIGTERM, lambda *_: sched.shutdown(wait=True))
    try:
        sched.start()
    except (KeyboardInterrupt, SystemExit):
        pass
