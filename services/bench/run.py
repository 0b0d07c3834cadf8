"""Orchestrates `voxpop bench` and writes docs/performance.md (+ plots) and docs/performance.json."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from infra import local_stack
from models.registry import load_head
from pipelines.allocator import keep_freed_memory
from pipelines.compiled import compiler_missing
from pipelines.quantize import cpu_flags
from pipelines.scoring import PRECISIONS
from services.bench import encoders
from services.bench.accuracy import precision_accuracy
from services.bench.naive import naive_pipeline
from services.bench.profile import profile_scorer
from services.bench.stream import ROOT, Run, airline_posts, latency_at, saturation
from services.config import Settings

log = logging.getLogger("voxpop.bench")


def machine() -> dict[str, str]:
    """The CPU as /proc/cpuinfo names it; family and model tell generations apart ("AMD EPYC" alone does not)."""
    flags = cpu_flags()
    try:
        info = dict(ln.split(":", 1) for ln in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                    if ":" in ln)
        info = {k.strip(): v.strip() for k, v in info.items()}
        model = info["model name"]
        if "cpu family" in info:
            model += f" (family {info['cpu family']}, model {info['model']})"
    except (OSError, KeyError):
        model = platform.processor()
    import torch

    return {"cpu": model, "cores": str(os.cpu_count()), "python": sys.version.split()[0], "torch": torch.__version__,
            "isa": " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16")
                            if f in flags)}


ACCURACY_TOLERANCE_PTS = 0.5  # a precision "keeps accuracy" if it loses at most this much on every set


def worth_running(probe: dict[str, float]) -> tuple[list[str], dict[str, str]]:
    """The precisions worth the long runs: fp32 (the reference) and any whose encoder is not slower.

    A precision slower than fp32 at the encoder can never be the fast path, and where the CPU has
    no bf16 instructions torch emulates bf16, many times slower than fp32: running it end to end and over
    the accuracy sets would take an hour there. Returns (precisions to run, {skipped: why}).
    """
    keep = [p for p in probe if p == "fp32" or probe[p] >= probe["fp32"]]
    why = {p: f"encoder {probe[p]:.1f} posts/s vs fp32 {probe['fp32']:.1f} on a short probe: slower than fp32 here, "
              "so never the fast path; not run further" for p in probe if p not in keep}
    return keep, why


def run_bench(settings: Settings, quick: bool = False, out_dir: Path | None = None) -> dict:
    command = "voxpop bench" + (" --quick" if quick else "") + (f" --out {out_dir}" if out_dir else "")
    out_dir = out_dir or ROOT / "docs"
    keep_freed_memory()  # the in-process ceilings and the naive pipeline run on the scorer's allocator
    cores = os.cpu_count() or 1
    posts_all = airline_posts(settings.data_dir)
    n_sat = 1500 if quick else 4000
    head = load_head(settings.scorer_model)
    texts = [p.post.text for p in posts_all[:2048]]  # in-process ceilings: warm-up posts, then new ones
    stream = [p.post.text for p in posts_all]  # the per-core ceilings: a share per process, no post twice
    res: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                 "command": command, "model": f"{head.name}@{head.version}"}

    log.info("1/6 encoder ceilings")
    probe = {p: encoders.text_ceiling(head, texts[:320], p).per_s for p in PRECISIONS}
    precisions, skipped = worth_running(probe)
    res["encoder_probe_posts_per_s"] = {p: round(v, 1) for p, v in probe.items()}
    res["precisions_skipped"] = skipped
    for p, why in skipped.items():
        log.info("%s: %s", p, why)
    ceil = {p: encoders.text_ceiling(head, texts, p).per_s for p in precisions}
    call = settings.scorer_bucket_call_tokens or 32  # length buckets as the scorer plans them
    res["bucket_call_tokens"] = call
    ceil_bucket = {p: encoders.text_ceiling(head, texts, p, bucket=call).per_s for p in precisions}
    # the encoder alone, one single-threaded process per core, at each batch size the scorer runs
    batches_e2e = (64,) if quick else (64, 256)
    per_core = {p: {b: encoders.text_ceiling_per_core(settings.scorer_model, stream, p, cores, bucket=call,
                                                      batch=b).per_s for b in batches_e2e} for p in precisions}
    single = encoders.text_single(head, texts[:250]).per_s
    imgs = sorted((settings.data_dir / "mvsa-single" / "images").glob("*.jpg"))[:64]
    img = {p: encoders.image_ceiling(imgs, p).per_s for p in ("fp32", "bf16") if p in precisions} if imgs else {}
    res["encoder_ceiling_posts_per_s"] = {p: round(v, 1) for p, v in ceil.items()}
    res["encoder_ceiling_bucketed_posts_per_s"] = {p: round(v, 1) for p, v in ceil_bucket.items()}
    res["encoder_ceiling_per_core_posts_per_s"] = {p: {str(b): round(v, 1) for b, v in d.items()}
                                                   for p, d in per_core.items()}
    res["encoder_single_post_per_s"] = round(single, 1)
    res["image_encoder_images_per_s"] = {p: round(v, 1) for p, v in img.items()}

    def ceiling(p: str, batch: int) -> float:
        """The best encoder-only rate of precision p at this max batch size, over every layout."""
        single_process = max(ceil[p], ceil_bucket[p]) if batch == 64 else 0.0
        return max(single_process, per_core[p].get(batch, 0.0))

    log.info("2/6 accuracy per precision")
    res["accuracy_by_precision"] = acc = precision_accuracy(settings.data_dir, precisions, settings.scorer_model)
    # the largest loss against fp32 over the benchmark sets, in points of accuracy and of macro-F1
    loss = res["accuracy_loss_pts_vs_fp32"] = {
        p: {m: round(100 * max(acc["fp32"][d][m] - acc[p][d][m] for d in acc[p]), 2) for m in ("accuracy", "macro_f1")}
        for p in precisions}

    state = Path(tempfile.mkdtemp(prefix="voxpop-bench-"))
    stack = Settings(state_dir=state, database_url=settings.database_url, redis_url=settings.redis_url,
                     kafka_bootstrap=settings.kafka_bootstrap)
    ep = local_stack.resolve_endpoints(stack)
    logs = state / "logs"
    logs.mkdir()
    try:
        log.info("3/6 end to end at saturation, and the sweep")
        sweep = []
        bucket = {p: call if ceil_bucket[p] > ceil[p] else 0 for p in precisions}

        def enough(k: int = 1, b: int = 64) -> list:
            """At least 16 full batches per scorer, so the steady-state window spans many commits."""
            return posts_all[:max(n_sat, 16 * k * b)]

        for prec in precisions:  # the deployment layouts: one scorer with every core, one per core
            sweep.append(saturation(settings, ep, enough(), logs, precision=prec, bucket=bucket[prec]))
            if cores > 1:
                for b in batches_e2e:
                    sweep.append(saturation(settings, ep, enough(cores, b), logs, k=cores, batch=b, precision=prec,
                                            bucket=bucket[prec]))
        for b in (32, 128) if quick else (16, 32, 128, 256):
            sweep.append(saturation(settings, ep, enough(1, b), logs, batch=b, bucket=bucket["fp32"]))
        if not quick:
            sweep.append(saturation(settings, ep, enough(), logs, wait_ms=10, bucket=bucket["fp32"]))
        for r in sweep:  # None where no encoder-only run used that batch size
            r["ceiling_posts_per_s"] = round(ceiling(r["precision"], r["batch"]), 1) or None
        res["sweep"] = sweep

        # per precision: its best layout, against the encoder ceiling at that layout's batch size
        best = {p: max((r for r in sweep if r["precision"] == p and r["wait_ms"] == 50
                        and r["batch"] in (64, *batches_e2e)), key=lambda r: r["posts_per_s"])
                for p in precisions}
        e2e = {p: r["posts_per_s"] for p, r in best.items()}
        res["e2e_posts_per_s"] = e2e
        res["e2e_layout"] = {p: {"scorers": r["scorers"], "batch": r["batch"]} for p, r in best.items()}
        res["e2e_over_ceiling_by_precision"] = {p: round(e2e[p] / best[p]["ceiling_posts_per_s"], 3) for p in e2e}
        res["e2e_over_best_ceiling_by_precision"] = {
            p: round(e2e[p] / max(ceiling(p, b) for b in (64, *batches_e2e)), 3) for p in e2e}
        # "the fastest path" is the fastest precision that keeps accuracy; the fastest of all is reported too
        keeps = [p for p in precisions if max(loss[p].values()) <= ACCURACY_TOLERANCE_PTS]
        fastest = max(keeps, key=e2e.get)
        res["fastest_precision"] = fastest
        res["fastest_any_precision"] = fastest_any = max(e2e, key=e2e.get)
        res["fastest_any_over_fp32"] = round(e2e[fastest_any] / e2e["fp32"], 3)
        res["accuracy_tolerance_pts"] = ACCURACY_TOLERANCE_PTS
        res["e2e_over_ceiling"] = res["e2e_over_ceiling_by_precision"][fastest]
        res["fastest_over_fp32"] = round(e2e[fastest] / e2e["fp32"], 3)
        res["compiled"] = compiled_runs(settings, ep, stream, enough(cores, batches_e2e[-1]), logs,
                                        [p for p in precisions if p != "int8"], cores, batches_e2e[-1], bucket, e2e,
                                        acc["fp32"])
        res["scorer_peak_rss_mb"] = max(r["peak_rss_mb"] for r in
                                        [*sweep, *(v for v in res["compiled"].values() if isinstance(v, dict))])

        log.info("4/6 latency at 25/50/75% of the maximum")
        lay = best[fastest]
        env = {"scorer_precision": fastest, "scorer_bucket_call_tokens": bucket[fastest],
               "scorer_max_batch": lay["batch"], "scorer_threads": max(1, cores // lay["scorers"])}
        lat = {}
        for share in (0.25, 0.5, 0.75):
            rate = share * e2e[fastest]
            lat[f"{int(share * 100)}%"] = latency_at(settings, ep, posts_all[n_sat:], rate, 15 if quick else 30,
                                                     logs, k=lay["scorers"], **env)
        res["latency"] = lat
        res["latency_layout"] = {"scorers": lay["scorers"], **env}
        res["p99_ms_at_half_load"] = lat["50%"]["p99_ms"]

        log.info("5/6 the naive pipeline")
        res["naive"] = naive_pipeline(Run(settings, ep), posts_all[:150 if quick else 300])
        res["e2e_over_naive"] = round(e2e[fastest] / res["naive"]["posts_per_s"], 2)

        log.info("6/6 profile")
        res["profile_precision"] = fastest  # the path the latency runs and deployments use
        res["profile_share_pct"] = profile_scorer(Run(settings.model_copy(update={"scorer_precision": fastest}), ep),
                                                  posts_all[:640], out_dir / "profiles")
    finally:
        local_stack.down(stack)
        shutil.rmtree(state, ignore_errors=True)
    write_report(res, out_dir)
    return res


def compiled_runs(settings: Settings, ep, texts: list[str], posts: list, logs: Path, precisions: list[str],
                  cores: int, batch: int, bucket: dict[str, int], eager_e2e: dict[str, float],
                  eager_fp32_acc: dict[str, dict[str, float]]) -> dict:
    """fp32 and bf16 again with the encoder compiled (VOXPOP_SCORER_COMPILE): its own ceiling, end to end.

    Same layout as the eager runs' largest batch, one scorer per core; the ceiling children compile too,
    so e2e / ceiling compares like with like. Accuracy: the compiled encoders on the benchmark sets,
    their loss against eager fp32 (Inductor's fused kernels round differently).
    """
    why = compiler_missing()
    if why:
        return {"skipped": why}
    acc = precision_accuracy(settings.data_dir, ("fp32", *(p for p in precisions if p != "fp32")),
                             settings.scorer_model, compile=True)
    out: dict = {}
    for p in precisions:
        ceil = encoders.text_ceiling_per_core(settings.scorer_model, texts, p, cores, bucket=bucket[p], batch=batch,
                                              compile=True).per_s
        row = saturation(settings, ep, posts, logs, k=cores, batch=batch, precision=p, bucket=bucket[p],
                         scorer_compile=True)
        out[p] = {"scorers": cores, "batch": batch, "ceiling_posts_per_s": round(ceil, 1),
                  "e2e_posts_per_s": row["posts_per_s"], "e2e_over_ceiling": round(row["posts_per_s"] / ceil, 3),
                  "over_eager_e2e": round(row["posts_per_s"] / eager_e2e[p], 3), "peak_rss_mb": row["peak_rss_mb"],
                  "accuracy": acc[p], "accuracy_loss_pts_vs_eager_fp32": {
                      m: round(100 * max(eager_fp32_acc[d][m] - acc[p][d][m] for d in acc[p]), 2)
                      for m in ("accuracy", "macro_f1")}}
    if {"fp32", "bf16"} <= out.keys():
        out["bf16_over_fp32"] = round(out["bf16"]["e2e_posts_per_s"] / out["fp32"]["e2e_posts_per_s"], 3)
    if "bf16" in out:  # the k8s overlay's path against the default fp32 path a user starts from
        out["bf16_over_eager_fp32"] = round(out["bf16"]["e2e_posts_per_s"] / eager_e2e["fp32"], 3)
    return out


def write_report(res: dict, out_dir: Path) -> None:
    from services.bench.report import render

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "performance.json").write_text(json.dumps(res, indent=2) + "\n")
    render(res, out_dir)
