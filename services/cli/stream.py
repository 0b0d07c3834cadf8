"""The stream's processes: ingest, scorer, reconciler, trends and alerts; watches and the DLQ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from services.cli.app import (
    _endpoints,
    _export_endpoints,
    _gate,
    _logging,
    app,
    dlq_app,
    ingest_app,
    watches_app,
)
from services.config import freeze_startup_heap, get_settings


# --------------------------------------------------------------------------- ingest
@ingest_app.command("replay")
def ingest_replay(
    path: Annotated[Path | None, typer.Argument(help="CSV or JSONL file; default: the airline stream")] = None,
    preset: Annotated[str | None, typer.Option(help="column mapping preset, e.g. 'airline'")] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="FIELD=COLUMN, e.g. --map text=body")] = None,
    platform: Annotated[str, typer.Option(help="platform name for ids when no preset")] = "file",
    speed: Annotated[float, typer.Option(help="1 = real time, 60 = an hour a minute, 0 = max")] = 0.0,
    limit: Annotated[int | None, typer.Option(help="replay only the first N records")] = None,
    html_entities: Annotated[
        bool | None,
        typer.Option(
            "--html-entities/--no-html-entities",
            help="the texts carry HTML entities (&amp;) to unescape once; default: the preset's (airline: yes)",
        ),
    ] = None,
) -> None:
    """Replay a file of posts into the stream, paced by the posts' own timestamps."""
    from services.ingest.records import PRESETS, ColumnMap
    from services.ingest.replay import load_records, replay

    _logging()
    s = get_settings()
    if path is None:
        path, preset = s.data_dir / "airline-tweets" / "airline_tweets_clean.csv", preset or "airline"
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist")
    cmap = PRESETS[preset].model_copy() if preset else ColumnMap(platform=platform)
    for item in map_ or []:
        field, _, column = item.partition("=")
        if not column or field not in ColumnMap.model_fields:
            raise typer.BadParameter(f"--map wants FIELD=COLUMN with FIELD in {list(ColumnMap.model_fields)}")
        setattr(cmap, field, column)
    if html_entities is not None:
        cmap.html_entities = html_entities
    ep = _endpoints(s)
    stats = replay(load_records(path, cmap, limit), _gate(s, ep), speed=speed, progress_every_s=s.ingest_progress_s)
    typer.echo(json.dumps({**stats.__dict__, "rate_per_s": round(stats.rate, 1)}))


@ingest_app.command("push")
def ingest_push(host: str | None = None, port: int | None = None) -> None:
    """Serve POST /ingest/posts (API key from VOXPOP_PUSH_API_KEY or .voxpop/push_api_key)."""
    import uvicorn

    from services.ingest.push import create_push_app

    _logging()
    s = get_settings()
    ep = _endpoints(s)
    push_app = create_push_app(s, _gate(s, ep))
    freeze_startup_heap()
    uvicorn.run(push_app, host=host or s.push_host, port=port or s.push_port)


@ingest_app.command("jetstream")
def ingest_jetstream(
    url: str = "wss://jetstream2.us-east.bsky.network/subscribe",
    keyword: Annotated[list[str] | None, typer.Option(help="keep posts containing any of these")] = None,
) -> None:
    """Follow the Bluesky Jetstream (posts collection), reconnecting with a cursor."""
    from services.ingest.live import run_live
    from services.ingest.sources import Jetstream

    _logging()
    s = get_settings()
    run_live(Jetstream(url=url, keywords=keyword or []), _gate(s, _endpoints(s)))


@ingest_app.command("mastodon")
def ingest_mastodon(
    base_url: Annotated[
        str | None, typer.Option(help="instance, e.g. https://mastodon.social (default VOXPOP_MASTODON_URL)")
    ] = None,
    hashtag: Annotated[str | None, typer.Option(help="follow #tag instead of the public timeline")] = None,
    token: Annotated[str | None, typer.Option(help="access token (default VOXPOP_MASTODON_TOKEN)")] = None,
) -> None:
    """Follow a Mastodon streaming timeline (public or hashtag), backfilling after reconnects."""
    from services.ingest.live import run_live
    from services.ingest.sources import Mastodon

    _logging()
    s = get_settings()
    base_url = base_url or s.mastodon_url
    if not base_url:
        raise typer.BadParameter("give --base-url or set VOXPOP_MASTODON_URL, e.g. https://mastodon.social")
    token = token or (s.mastodon_token.get_secret_value() if s.mastodon_token else None)
    run_live(Mastodon(base_url=base_url, hashtag=hashtag, token=token), _gate(s, _endpoints(s)))


# --------------------------------------------------------------------------- scorer
@app.command()
def faults(
    only: Annotated[list[str] | None, typer.Option(help="run scenarios whose name contains this")] = None,
    webhook_down_min: Annotated[float, typer.Option(help="minutes the webhook receiver stays down")] = 15,
    load_min: Annotated[float, typer.Option(help="minutes of the 100 posts/s load run")] = 10,
) -> None:
    """Fault runs on the embedded stack (kill -9, SIGTERM, restarts, poison, load) -> docs/reliability.md/.json."""
    from services.faults.run import run_faults

    _logging("WARNING")
    run_faults(only, webhook_down_s=webhook_down_min * 60, load_s=load_min * 60)


@app.command()
def reconcile(once: Annotated[bool, typer.Option("--once", help="one pass, then exit")] = False) -> None:
    """Publish accepted posts the broker never took or lost (ingest ledger -> posts.raw)."""
    import signal
    import threading

    from services.ingest.reconcile import run_reconciler

    _logging()
    s = get_settings()
    ep = _endpoints(s)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stats = run_reconciler(s, _gate(s, ep), ep.kafka_bootstrap, stop, once=once)
    if once:
        typer.echo(json.dumps(stats.__dict__))


@app.command()
def score(
    model: Annotated[str | None, typer.Option(help="registered head (default VOXPOP_SCORER_MODEL)")] = None,
    precision: Annotated[str | None, typer.Option(help="auto | fp32 | bf16 | int8")] = None,
    compile: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile", help="compile the text encoder (default VOXPOP_SCORER_COMPILE)"),
    ] = None,
) -> None:
    """Run a scorer: consumer group on posts.raw -> PostgreSQL, Redis, posts.scored."""
    from services.scorer.worker import run_scorer

    _logging()
    flags = {"scorer_model": model, "scorer_precision": precision, "scorer_compile": compile}
    s = get_settings().model_copy(update={k: v for k, v in flags.items() if v is not None})
    ep = _endpoints(s)
    stats = run_scorer(s, ep.database_url, ep.redis_url, ep.kafka_bootstrap)
    typer.echo(json.dumps({"batches": stats.batches, "scored": stats.scored, "dlq": stats.dlq}))


# --------------------------------------------------------------------------- watches
@watches_app.command("add")
def watches_add(
    name: str,
    keyword: Annotated[list[str] | None, typer.Option()] = None,
    handle: Annotated[list[str] | None, typer.Option()] = None,
    hashtag: Annotated[list[str] | None, typer.Option()] = None,
    lang: Annotated[list[str] | None, typer.Option()] = None,
    kind: str = "brand",
) -> None:
    """Add or update a watched brand/topic."""
    from services.storage.watches import upsert_watch

    s = get_settings()
    wid = upsert_watch(
        _endpoints(s).database_url,
        name=name,
        kind=kind,
        keywords=keyword or [],
        handles=handle or [],
        hashtags=hashtag or [],
        languages=lang or [],
    )
    typer.echo(f"watch {name!r} has id {wid}")


@watches_app.command("list")
def watches_list() -> None:
    from services.storage.watches import list_watches

    for w in list_watches(_endpoints(get_settings()).database_url):
        typer.echo(json.dumps(w))


@watches_app.command("seed-airlines")
def watches_seed_airlines() -> None:
    """The six US airlines of the reference stream, matched by @handle and name."""
    from services.storage.watches import seed_airline_watches

    typer.echo(f"watch ids: {seed_airline_watches(_endpoints(get_settings()).database_url)}")


# --------------------------------------------------------------------------- dlq
@dlq_app.command("show")
def dlq_show(limit: int = 20) -> None:
    """Print the newest dead letters with their reasons."""
    from services.stream.dlq_reader import read_dead_letters

    s = get_settings()
    letters = read_dead_letters(_endpoints(s).kafka_bootstrap, s.topic_dlq, limit=limit)
    if not letters:
        typer.echo(f"{s.topic_dlq} is empty: no record has been refused", err=True)
    for d in letters:
        typer.echo(json.dumps(d, ensure_ascii=False))


# --------------------------------------------------------------------------- trends and alerts
@app.command()
def trends() -> None:
    """Run the trend-window worker (Faust): posts.scored -> windows, rules -> alerts.fired."""
    from services.trends.worker import main as trends_main

    _logging()
    _export_endpoints()
    trends_main()


def _mount_alerts() -> None:
    from services.alerts.cli import alerts_app

    alerts_app.callback()(lambda: _export_endpoints() and None)
    app.add_typer(alerts_app, name="alerts", help="Alert rules, webhook endpoints, silences, the dispatcher.")


_mount_alerts()
