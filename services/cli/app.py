"""The `voxpop` Typer app, its command groups and the helpers the command modules share."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from services.config import Settings, export_endpoints, get_settings, process_defaults
from services.logs import configure_logging

if TYPE_CHECKING:
    from infra.local_stack import Endpoints
    from services.ingest.gate import IngestGate

app = typer.Typer(
    help="VoxPop: streaming multimodal opinion monitor.", no_args_is_help=True, pretty_exceptions_show_locals=False
)
services_app = typer.Typer(help="Embedded PostgreSQL, Redis and Kafka-protocol broker.", no_args_is_help=True)
ingest_app = typer.Typer(help="Put posts on the stream.", no_args_is_help=True)
watches_app = typer.Typer(help="Watched brands and topics.", no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect the dead-letter topic.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(ingest_app, name="ingest")
app.add_typer(watches_app, name="watches")
app.add_typer(dlq_app, name="dlq")


def _logging(level: str | None = None) -> None:
    configure_logging(level or get_settings().log_level)


def _endpoints(settings: Settings) -> Endpoints:
    """Configured servers, or embedded ones started (or reused) now."""
    from infra.local_stack import resolve_endpoints

    return resolve_endpoints(settings)


def _export_endpoints() -> Settings:
    """Resolve the servers and put their URLs in the environment, for code that reads settings itself."""
    ep = _endpoints(get_settings())
    return export_endpoints(ep.database_url, ep.redis_url, ep.kafka_bootstrap)


def _gate(settings: Settings, ep: Endpoints) -> IngestGate:
    import redis

    from services.ingest.gate import IngestGate, WatchCache
    from services.storage.db import engine_for
    from services.storage.watches import load_watch_specs
    from services.stream.kafka import make_producer

    return IngestGate(
        settings,
        make_producer(ep.kafka_bootstrap),
        redis.Redis.from_url(ep.redis_url),
        engine_for(ep.database_url),
        WatchCache(lambda: load_watch_specs(ep.database_url), settings.watch_refresh_s),
    )


def main() -> None:  # pragma: no cover
    process_defaults()
    app()
