"""Typer sub-app for `voxpop alerts ...` (mount with ``app.add_typer(alerts_app, name="alerts")``)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from services.alerts import manage
from services.alerts.policy import UrlPolicy
from services.config import get_settings

alerts_app = typer.Typer(help="Alert rules, webhook endpoints, silences and the dispatcher.", no_args_is_help=True)
rules_app = typer.Typer(help="Alert rules evaluated when a trend window closes.", no_args_is_help=True)
endpoints_app = typer.Typer(help="Signed webhook targets.", no_args_is_help=True)
silences_app = typer.Typer(help="Mute notifications for a while.", no_args_is_help=True)
alerts_app.add_typer(rules_app, name="rules")
alerts_app.add_typer(endpoints_app, name="endpoints")
alerts_app.add_typer(silences_app, name="silences")


def _db() -> str:
    url = get_settings().database_url
    if not url:
        raise typer.BadParameter("VOXPOP_DATABASE_URL is not set")
    return url


def _echo(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _id_or_name(v: str) -> int | str:
    return int(v) if v.isdigit() else v


@alerts_app.command("run")
def run() -> None:
    """Run the dispatcher (grouping, silences, signed webhook delivery)."""
    from services.alerts.worker import main

    main()


@alerts_app.command("resend")
def resend(
    notification: Annotated[list[int] | None, typer.Option("--id", help="a dead notification id (repeatable)")] = None,
    endpoint: Annotated[int | None, typer.Option(help="every dead notification of this endpoint id")] = None,
    all_dead: Annotated[bool, typer.Option("--all", help="every dead notification")] = False,
) -> None:
    """Send dead webhook notifications again (same body, same webhook-id)."""
    from services.alerts.manage import resend_dead

    if not (notification or endpoint is not None or all_dead):
        raise typer.BadParameter("name --id N, --endpoint N or --all")
    ids = resend_dead(_db(), notification or None, endpoint)
    typer.echo(f"queued again: {ids}" if ids else "no dead notification matched")


@rules_app.command("add")
def rules_add(
    name: str,
    kind: Annotated[str, typer.Option(help="threshold | spike | surge | dip")],
    metric: Annotated[str | None, typer.Option(help="n_posts, n_negative, share_negative, mean_score ...")] = None,
    window: Annotated[str, typer.Option(help="window size: 1m, 5m, 1h, 1h@5m")] = "1h",
    watch_id: Annotated[int | None, typer.Option(help="one watch; default all")] = None,
    op: Annotated[str, typer.Option(help="threshold comparison")] = ">=",
    threshold: float | None = None,
    z_score: float | None = None,
    direction: str = "up",
    factor: float | None = None,
    drop: float | None = None,
    min_delta: float = 0.0,
    min_observed: Annotated[float, typer.Option(help="surge/spike: the observed value must reach this too")] = 0.0,
    baseline: Annotated[str, typer.Option(help="mean | ewma | median")] = "mean",
    ewma_alpha: Annotated[float, typer.Option(help="weight of the newest window (baseline ewma)")] = 0.3,
    std_floor: Annotated[float, typer.Option(help="smallest spread a z-score divides by")] = 0.0,
    exclude_fired: Annotated[bool, typer.Option(help="keep windows of episodes out of the baseline")] = True,
    model: Annotated[str, typer.Option(help="gaussian | poisson | negbin (count metrics)")] = "gaussian",
    seasonality: Annotated[str, typer.Option(help="none | hour_of_day")] = "none",
    resolve_after: Annotated[int, typer.Option(help="calm windows before an episode resolves")] = 1,
    resolve_ratio: Annotated[float, typer.Option(help="calm = below this fraction of the threshold")] = 1.0,
    lookback: int = 24,
    min_baseline: int = 6,
    min_volume: int = 0,
    severity: str = "warning",
    cooldown_s: int = 3600,
) -> None:
    """Create a rule."""
    fields: dict[str, Any] = dict(
        name=name,
        kind=kind,
        window_size=window,
        watch_id=watch_id,
        op=op,
        threshold=threshold,
        z_score=z_score,
        direction=direction,
        factor=factor,
        drop=drop,
        min_delta=min_delta,
        min_observed=min_observed,
        baseline_method=baseline,
        ewma_alpha=ewma_alpha,
        std_floor=std_floor,
        exclude_fired=exclude_fired,
        model=model,
        seasonality=seasonality,
        resolve_after=resolve_after,
        resolve_ratio=resolve_ratio,
        lookback=lookback,
        min_baseline=min_baseline,
        min_volume=min_volume,
        severity=severity,
        cooldown_s=cooldown_s,
    )
    if metric:
        fields["metric"] = metric
    try:
        _echo(manage.create_rule(_db(), **fields))
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


@rules_app.command("list")
def rules_list() -> None:
    _echo(manage.list_rules(_db()))


@rules_app.command("delete")
def rules_delete(rule: Annotated[str, typer.Argument(help="id or name")]) -> None:
    typer.echo("deleted" if manage.delete_rule(_db(), _id_or_name(rule)) else "no such rule")


@endpoints_app.command("add")
def endpoints_add(
    name: str,
    url: str,
    kind: str = "json",
    min_severity: str = "info",
    timeout_s: float = 5.0,
    max_attempts: int = 8,
    secret: str | None = None,
) -> None:
    """Register a webhook; prints its whsec_ secret once."""
    policy = UrlPolicy.configured()
    try:
        _echo(
            manage.create_endpoint(
                _db(),
                name,
                url,
                secret=secret,
                kind=kind,
                min_severity=min_severity,
                timeout_s=timeout_s,
                max_attempts=max_attempts,
                policy=policy,
            )
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


@endpoints_app.command("list")
def endpoints_list() -> None:
    _echo(manage.list_endpoints(_db()))


@endpoints_app.command("delete")
def endpoints_delete(endpoint: Annotated[str, typer.Argument(help="id or name")]) -> None:
    typer.echo("deleted" if manage.delete_endpoint(_db(), _id_or_name(endpoint)) else "no such endpoint")


@silences_app.command("add")
def silences_add(
    duration: Annotated[str, typer.Option(help="e.g. 30m, 2h")],
    rule_id: int | None = None,
    watch_id: int | None = None,
    severity: str | None = None,
    comment: str = "",
    created_by: str = "cli",
) -> None:
    from pipelines.trends.windows import parse_duration

    try:
        _echo(
            manage.create_silence(
                _db(),
                duration_s=parse_duration(duration),
                rule_id=rule_id,
                watch_id=watch_id,
                severity=severity,
                comment=comment,
                created_by=created_by,
            )
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


@silences_app.command("list")
def silences_list(active: bool = False) -> None:
    _echo(manage.list_silences(_db(), active_only=active))


@silences_app.command("expire")
def silences_expire(silence_id: int) -> None:
    _echo(manage.expire_silence(_db(), silence_id))


@alerts_app.command("bench")
def bench(
    database_url: Annotated[str, typer.Option(help="a SCRATCH database: the replay clears its trend and alert tables")],
    out: Annotated[str, typer.Option(help="Markdown report; the JSON goes beside it")] = "docs/alerts-quality.md",
    sweep: Annotated[
        bool, typer.Option(help="also replay every rule family over its thresholds and plot the frontier (~10 min)")
    ] = False,
) -> None:
    """Alert quality on the real airline stream: incidents from the human labels, every rule set
    replayed through the trends app and the dispatcher, deliveries verified -> docs/alerts-quality.md."""
    from pathlib import Path

    from pipelines.trends.airline import airline_csv
    from services.alerts.quality import plot_sweep, run_benchmark, run_sweep, write_docs
    from services.storage.db import engine_for, migrate

    path = airline_csv(get_settings().data_dir)
    if not path.exists():
        raise typer.BadParameter(f"airline data not found at {path}: set VOXPOP_DATA_DIR to the shared data folder")
    migrate(database_url)
    engine = engine_for(database_url)
    res = run_benchmark(engine, path)
    if sweep:
        res["sweep"] = run_sweep(engine, path)
        plot_sweep(res["sweep"], Path(out).with_suffix("") / "frontier.png")
    else:  # keep the last sweep's frontier: it does not change with the rule sets above
        old = Path(out).with_suffix(".json")
        res["sweep"] = json.loads(old.read_text()).get("sweep") if old.exists() else None
    write_docs(res, Path(out))
    typer.echo(f"wrote {out} and {Path(out).with_suffix('.json')}")
