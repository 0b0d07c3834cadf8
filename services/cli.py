"""`voxpop`: the one console command. Each subcommand is a thin shell over a service module.

Heavy imports (torch, kafka, sqlalchemy) happen inside the commands so `voxpop --help` is fast.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from services.bench import PHASES as BENCH_PHASES
from services.config import Settings, export_endpoints, get_settings, process_defaults
from services.logs import configure_logging

app = typer.Typer(help="VoxPop: streaming multimodal opinion monitor.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
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


def _endpoints(settings: Settings):
    """Configured servers, or embedded ones started (or reused) now."""
    from infra.local_stack import resolve_endpoints

    return resolve_endpoints(settings)


def _export_endpoints() -> Settings:
    """Resolve the servers and put their URLs in the environment, for code that reads settings itself."""
    ep = _endpoints(get_settings())
    return export_endpoints(ep.database_url, ep.redis_url, ep.kafka_bootstrap)


# --------------------------------------------------------------------------- services
@services_app.command("up")
def services_up() -> None:
    """Start (or reuse) the embedded servers for every VOXPOP_* URL that is unset."""
    from infra.local_stack import mask_url

    _logging()
    ep = _endpoints(get_settings())
    typer.echo(json.dumps({"database_url": mask_url(ep.database_url), "redis_url": mask_url(ep.redis_url),
                           "kafka_bootstrap": mask_url(ep.kafka_bootstrap)}, indent=2))


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


# --------------------------------------------------------------------------- ingest
def _gate(settings: Settings, ep):
    import redis

    from services.ingest.gate import IngestGate, WatchCache
    from services.storage.db import engine_for
    from services.storage.watches import load_watch_specs
    from services.stream.kafka import make_producer

    return IngestGate(settings, make_producer(ep.kafka_bootstrap), redis.Redis.from_url(ep.redis_url),
                      engine_for(ep.database_url),
                      WatchCache(lambda: load_watch_specs(ep.database_url), settings.watch_refresh_s))


@ingest_app.command("replay")
def ingest_replay(
    path: Annotated[Path | None, typer.Argument(help="CSV or JSONL file; default: the airline stream")] = None,
    preset: Annotated[str | None, typer.Option(help="column mapping preset, e.g. 'airline'")] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="FIELD=COLUMN, e.g. --map text=body")] = None,
    platform: Annotated[str, typer.Option(help="platform name for ids when no preset")] = "file",
    speed: Annotated[float, typer.Option(help="1 = real time, 60 = an hour a minute, 0 = max")] = 0.0,
    limit: Annotated[int | None, typer.Option(help="replay only the first N records")] = None,
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
    ep = _endpoints(s)
    stats = replay(load_records(path, cmap, limit), _gate(s, ep), speed=speed)
    typer.echo(json.dumps({**stats.__dict__, "rate_per_s": round(stats.rate, 1)}))


@ingest_app.command("push")
def ingest_push(host: str | None = None, port: int | None = None) -> None:
    """Serve POST /ingest/posts (API key from VOXPOP_PUSH_API_KEY or .voxpop/push_api_key)."""
    import uvicorn

    from services.ingest.push import create_push_app

    _logging()
    s = get_settings()
    ep = _endpoints(s)
    uvicorn.run(create_push_app(s, _gate(s, ep)), host=host or s.push_host, port=port or s.push_port)


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
    base_url: Annotated[str | None, typer.Option(help="instance, e.g. https://mastodon.social "
                                                      "(default VOXPOP_MASTODON_URL)")] = None,
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
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="compile the text encoder "
                                                  "(default VOXPOP_SCORER_COMPILE)")] = None,
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
    wid = upsert_watch(_endpoints(s).database_url, name=name, kind=kind, keywords=keyword or [],
                       handles=handle or [], hashtags=hashtag or [], languages=lang or [])
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


# --------------------------------------------------------------------------- models
def _recipe_ctx(seed: int, epochs: int | None, limit: int | None, sets: list[str] | None,
                checkpoint: Path | None = None):
    from pipelines.recipes import RecipeContext

    s = get_settings()
    opts = {}
    for kv in sets or []:
        k, _, v = kv.partition("=")
        try:
            opts[k] = json.loads(v)
        except ValueError:
            opts[k] = v
    return RecipeContext(data_dir=s.data_dir, checkpoints_dir=s.checkpoints_dir, cache_dir=s.feature_cache_dir,
                         seed=seed, epochs=epochs, limit=limit, device=s.scorer_device, options=opts,
                         command="voxpop " + " ".join(sys.argv[1:]), checkpoint=checkpoint)


@app.command()
def compare(
    split: Annotated[str, typer.Option(help="the split every model is scored on")] = "test",
    out: Annotated[Path | None, typer.Option(help="also write the JSON here")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="recipe option KEY=VALUE (JSON values)")] = None,
) -> None:
    """The production head vs VADER vs MiniLM+logistic regression on every data set, as one JSON document."""
    import torch

    from pipelines.training.production import _opt, benchmark

    ctx = _recipe_ctx(0, None, None, sets)
    torch.set_num_threads(_opt(ctx, "threads"))
    text = json.dumps(benchmark(ctx, split), indent=2)
    if out:
        out.write_text(text + "\n")
    typer.echo(text)


@app.command()
def train(
    model: Annotated[str, typer.Option(help="e.g. production, smom, spp-scl, amsgfn")],
    dataset: Annotated[str, typer.Option(help="e.g. airline, meld-emotion, mvsa-single, emodb")],
    seed: int = 0,
    epochs: int | None = None,
    limit: Annotated[int | None, typer.Option(help="cap examples per split (smoke runs)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="recipe option KEY=VALUE")] = None,
) -> None:
    """Train a model on a data set; writes a checkpoint directory with its model card."""
    from pipelines import recipes

    _logging()
    path = recipes.get(model, dataset).train(_recipe_ctx(seed, epochs, limit, set_))
    typer.echo(f"checkpoint: {path}")


@app.command()
def evaluate(
    model: Annotated[str, typer.Option()],
    dataset: Annotated[str, typer.Option()],
    split: str = "test",
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics as one JSON object")] = False,
    checkpoint: Annotated[Path | None, typer.Option(help="a checkpoint dir instead of the default")] = None,
    limit: int | None = None,
    set_: Annotated[list[str] | None, typer.Option("--set")] = None,
) -> None:
    """Evaluate a trained model on a split with the metrics its paper defines."""
    from pipelines import recipes

    _logging("WARNING" if as_json else None)
    metrics = recipes.get(model, dataset).evaluate(_recipe_ctx(0, None, limit, set_, checkpoint), split)
    if as_json:
        typer.echo(json.dumps(metrics))
    else:
        for k, v in metrics.items():
            typer.echo(f"{k:>28}: {v}")


@app.command()
def predict(
    path: Annotated[Path, typer.Argument(help="CSV or JSONL with text[, image, author, thread], or one audio or "
                                              "video file (wav, mp3, ogg, m4a, mp4, webm, ...)")],
    model: str = "production",
    out: Annotated[Path | None, typer.Option(help="write JSON lines here instead of stdout")] = None,
    text_col: str = "text",
    image_col: str = "image",
    author_col: str = "author",
    thread_col: str = "thread",
    caption: Annotated[str, typer.Option(help="audio/video: the post's own text, read before the transcript")] = "",
) -> None:
    """Score a file of posts with a registered head (one JSON line per post), or one audio/video file.

    An audio or video file prints its transcript, language, label and the view that drove the score.
    """
    from pipelines.predict_file import predict_file
    from pipelines.predict_media import is_media

    _logging("WARNING")
    s = get_settings()
    if is_media(path):
        return _predict_media(s, path, model, caption, out)
    sink = out.open("w") if out else sys.stdout
    try:
        for rec in predict_file(path, model, text_col=text_col, image_col=image_col, author_col=author_col,
                                thread_col=thread_col, device=s.scorer_device):
            sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
    finally:
        if out:
            sink.close()


def _transcriber(s: Settings, size: str | None = None):
    from pipelines.asr import ASRUnavailable, Transcriber

    try:
        return Transcriber(size or (s.asr_model if s.asr_model != "off" else "base"), cache_dir=s.asr_cache_dir,
                           device=s.asr_device or s.scorer_device, compute_type=s.asr_compute_type,
                           threads=s.asr_threads, beam_size=s.asr_beam_size, vad=s.asr_vad, language=s.asr_language)
    except ASRUnavailable as e:
        typer.echo(f"speech recognition unavailable: {e}", err=True)
        raise typer.Exit(2) from None


def _predict_media(s: Settings, path: Path, model: str, caption: str, out: Path | None) -> None:
    from pipelines.av_decode import DecodeError
    from pipelines.predict_media import predict_media

    try:
        rec = predict_media(path, _transcriber(s), model, tuple(s.scorer_av_models), s.checkpoints_dir, caption,
                            s.scorer_device, s.media_max_seconds, s.video_frames, s.media_decode_timeout_s)
    except DecodeError as e:
        typer.echo(f"{path}: {e}", err=True)
        raise typer.Exit(1) from None
    line = json.dumps(rec, ensure_ascii=False)
    if out:
        out.write_text(line + "\n")
    else:
        typer.echo(line)


asr_app = typer.Typer(help="Speech recognition: assemble Whisper from its wheels, measure it on EmoDB.")
app.add_typer(asr_app, name="asr")


@asr_app.command("assemble")
def asr_assemble(size: Annotated[str, typer.Option(help="base | small")] = "base") -> None:
    """Concatenate the Whisper wheels' model.bin parts into VOXPOP_ASR_CACHE_DIR (once; verified)."""
    from pipelines.asr import ASRUnavailable, assemble

    try:
        typer.echo(assemble(size, get_settings().asr_cache_dir))
    except ASRUnavailable as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None


@asr_app.command("bench")
def asr_bench(
    out: Annotated[Path, typer.Option(help="Markdown file; the JSON goes next to it")] = Path("docs/asr.md"),
    sizes: Annotated[list[str] | None, typer.Option(help="Whisper sizes (default base, small)")] = None,
    from_results: Annotated[bool, typer.Option(help="only rebuild the doc from the last results")] = False,
) -> None:
    """WER of Whisper on EmoDB's 535 clips (language forced vs detected) and seconds per audio second here,
    plus the tri-modal heads with and without the transcript view; writes docs/asr.md/.json (resumable)."""
    from pipelines.asr_benchmark import run
    from pipelines.asr_doc import write_doc

    _logging("INFO")
    s = get_settings()
    work = s.state_dir / "asr-bench"
    if not from_results:
        run(s.data_dir, work, s.asr_cache_dir, tuple(sizes or ("base", "small")), log=typer.echo)
    write_doc(json.loads((work / "asr-results.json").read_text()), s.checkpoints_dir, out,
              command="voxpop " + " ".join(sys.argv[1:]))
    typer.echo(f"wrote {out} and {out.with_suffix('.json')}")


# --------------------------------------------------------------------------- benchmarks table
@app.command()
def benchmarks(
    out: Annotated[Path, typer.Option(help="Markdown file; the JSON goes next to it")] = Path("docs/benchmarks.md"),
    from_cards: Annotated[bool, typer.Option(help="rebuild from cards and the last JSON, evaluate nothing")] = False,
    only: Annotated[list[str] | None, typer.Option(help="re-evaluate only these checkpoints/data sets (glob)")] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 2,
    checkpoints_dir: Annotated[Path | None, typer.Option(help="default VOXPOP_CHECKPOINTS_DIR")] = None,
) -> None:
    """Re-evaluate every checkpoint and the baselines on the same splits; write docs/benchmarks.md/.json."""
    from pipelines.benchmarks_table import build

    _logging("WARNING")
    s = get_settings()
    doc = build(s.data_dir, checkpoints_dir or s.checkpoints_dir, s.feature_cache_dir, out, from_cards=from_cards,
                only=only, threads=threads, command="voxpop " + " ".join(sys.argv[1:]))
    for g in doc["derived"]["goals"]:
        typer.echo(f"{g['dataset']:>15} {g['model']:<11} {g['checkpoint']:<36} goal met: {g['text']}")
    typer.echo(f"wrote {out} and {out.with_suffix('.json')} in {doc['meta']['runtime_s']} s")


# --------------------------------------------------------------------------- bench
@app.command()
def bench(
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as one JSON object")] = False,
    quick: Annotated[bool, typer.Option(help="smaller runs (about a third of the time)")] = False,
    out: Annotated[Path | None, typer.Option(help="folder for performance.md/.json, plots and profiles "
                                                   "(default: docs/)")] = None,
    only: Annotated[list[str] | None, typer.Option(help="re-run this phase over the last report (repeatable): "
                                                        + ", ".join(BENCH_PHASES))] = None,
) -> None:
    """Measure encoder ceilings, end-to-end throughput, latency, the naive pipeline; write docs/performance.*"""
    from services.bench.run import run_bench

    _logging()
    try:
        res = run_bench(get_settings(), quick=quick, out_dir=out, only=only)
    except (ValueError, FileNotFoundError) as e:
        raise typer.BadParameter(str(e)) from e
    if as_json:
        typer.echo(json.dumps(res))


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
    typer.echo(f"wrote {out}: macro-F1 head {report['head']['macro_f1']:.3f}, "
               f"keywords {report['keywords']['macro_f1']:.3f}")


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
    s = s.model_copy(update={"database_url": ep.database_url, "redis_url": ep.redis_url,
                             "kafka_bootstrap": ep.kafka_bootstrap})
    _migrated_db()
    api_s = s.api
    if api_s.bootstrap_key:
        path = bootstrap_key(s, ep.database_url)
        if path:
            logging.getLogger("voxpop.api").info("created an admin API key; it is in %s (shown nowhere else)", path)
    h, p = host or s.api_host, port or s.api_port
    logging.getLogger("voxpop.api").info("dashboard: http://%s:%d/  (API docs at /docs)", h, p)
    uvicorn.run(create_app(s, api_s), host=h, port=p, log_level="warning", proxy_headers=False)


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
    watch: Annotated[str, typer.Option(help="watch name (or id)")],
    period: Annotated[str, typer.Option(help="daily | weekly | monthly")] = "weekly",
    end: Annotated[str | None, typer.Option(help="period end date YYYY-MM-DD (exclusive); default: last full")] = None,
    out: Annotated[Path | None, typer.Option(help="output root; default VOXPOP_REPORTS_DIR or .voxpop/reports")] = None,
    webhook: Annotated[str | None, typer.Option(help="also POST a signed JSON notice here")] = None,
    force: Annotated[bool, typer.Option(help="regenerate a period already done")] = False,
) -> None:
    """Write one brand-sentiment report (HTML, PDF, CSV) for a watch and period."""
    from datetime import UTC, date, datetime

    from services.reports.data import PERIODS, last_full_period_end
    from services.reports.run import generate_report
    from services.storage.db import engine_for

    _logging()
    if period not in PERIODS:
        raise typer.BadParameter(f"period must be one of {list(PERIODS)}")
    s = get_settings()
    rs = s.reports
    stop = date.fromisoformat(end) if end else last_full_period_end(period, datetime.now(UTC))
    secret = rs.webhook_secret.get_secret_value() if rs.webhook_secret else None
    try:
        row = generate_report(engine_for(_migrated_db()), int(watch) if watch.isdigit() else watch, period, stop,
                              out or rs.dir or Path(s.state_dir) / "reports", trigger="manual",
                              webhook_url=webhook or rs.webhook_url, webhook_secret=secret, force=force)
    except LookupError as e:
        raise typer.BadParameter(str(e)) from None
    typer.echo(json.dumps({k: row[k] for k in ("id", "status", "files", "summary", "webhook_status", "error")},
                          default=str, indent=2))


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
        sched.add_job("services.scheduler.jobs:run_reports", "date", run_date=datetime.now(UTC),
                      id="reports-weekly-now", kwargs={"period": "weekly"}, replace_existing=True)
    log = logging.getLogger("voxpop.scheduler")
    now = datetime.now(UTC)
    for job in sched.get_jobs():
        log.info("job %s (%s): next run %s", job.id, job.name, job.trigger.get_next_fire_time(None, now))
    signal.signal(signal.SIGTERM, lambda *_: sched.shutdown(wait=True))
    try:
        sched.start()
    except (KeyboardInterrupt, SystemExit):
        pass


def main() -> None:  # pragma: no cover
    process_defaults()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
