"""Embedded servers, configuration, migrations, and `voxpop up` (everything at once)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from services.cli.app import (
    _endpoints,
    _logging,
    app,
    services_app,
)
from services.config import get_settings


# --------------------------------------------------------------------------- services
@services_app.command("up")
def services_up() -> None:
    """Start (or reuse) the embedded servers for every VOXPOP_* URL that is unset."""
    from infra.local_stack import mask_url

    _logging()
    ep = _endpoints(get_settings())
    typer.echo(
        json.dumps(
            {
                "database_url": mask_url(ep.database_url),
                "redis_url": mask_url(ep.redis_url),
                "kafka_bootstrap": mask_url(ep.kafka_bootstrap),
            },
            indent=2,
        )
    )


@services_app.command("down")
def services_down() -> None:
    """Stop the embedded servers this project started."""
    from infra.local_stack import down

    _logging()
    stopped = down(get_settings())
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@services_app.command("status")
def services_status() -> None:
    """Which servers run, where, and whether they answer."""
    from infra.local_stack import status

    typer.echo(json.dumps(status(get_settings()), indent=2, default=str))


@app.command()
def config(
    reference: Annotated[bool, typer.Option(help="write docs/configuration.md (every knob) instead")] = False,
) -> None:
    """Print the configuration in effect (secrets masked), or regenerate its reference page."""
    from services.config_reference import REFERENCE, effective, reference_markdown

    if reference:
        REFERENCE.write_text(reference_markdown())
        typer.echo(f"wrote {REFERENCE}")
        return
    typer.echo(json.dumps(effective(get_settings()), indent=2, default=str))


@app.command()
def migrate() -> None:
    """Create or upgrade the PostgreSQL schema and the Kafka topics (idempotent)."""
    from services.storage.db import migrate as run_migrations
    from services.stream.kafka import ensure_topics

    _logging()
    s = get_settings()
    ep = _endpoints(s)
    run_migrations(ep.database_url)
    created = ensure_topics(ep.kafka_bootstrap, s)
    typer.echo(f"database at head; topics created now: {created or 'none (all existed)'}")


# --------------------------------------------------------------------------- everything
@app.command()
def up(
    speed: Annotated[float, typer.Option(help="replay speed factor of the airline stream")] = 600.0,
    source: Annotated[str, typer.Option(help="auto | airline | none | a live source: jetstream, mastodon")] = "auto",
    keep_servers: Annotated[bool, typer.Option(help="leave embedded servers running on exit")] = False,
) -> None:
    """Start everything: servers (embedded unless configured), migrations, ingest, scorer, ..."""
    from services.supervisor import run_up

    _logging()
    raise typer.Exit(run_up(get_settings(), speed=speed, source=source, keep_servers=keep_servers))
