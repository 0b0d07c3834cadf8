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
from services.bench import encoders
from services.bench.accuracy import precision_accuracy
from services.bench.naive import naive_pipeline
from services.bench.profile import profile_scorer
from services.bench.stream import ROOT, Run, airline_posts, latency_at, saturation
from services.config import Settings

log = logging.getLogger("voxpop.bench")


def machine() -> dict[str, str]:
    flags = ""
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        pass
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    import torch

    return {"cpu": model, "cores": str(os.cpu_count()), "python": sys.version.split()[0], "torch": torch.__version__,
            "isa": " ".join(f for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f in flags)}


def run_bench(settings: Settings, quick: bool = False, out_dir: Path | None = None) -> dict:
    out_dir = out_dir or ROOT / "docs"
    precisions = ("fp32", "bf16", "int8")
    posts_all = airline_posts(settings.data_dir)
    n_sat = 1500 if quick else 4000
    head = load_head(settings.scorer_model)
    texts = [p.post.text for p in posts_all[:1024]]
    res: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                 "command": "voxpop bench" + (" --quick" if quick else ""), "model": f"{head.name}@{head.version}"}

    log.info("1/6 encoder ceilings")
    ceil = {p: encoders.text_ceiling(head, texts, p).per_s for p in precisions}
    ceil_bucket = {p: encoders.text_ceiling(head, texts, p, bucket=16).per_s for p in precisions}
    single = encoders.text_single(head, texts[:200]).per_s
    imgs = sorted((settings.data_dir / "mvsa-single" / "images").glob("*.jpg"))[:64]
    img = {p: encoders.image_ceiling(imgs, p).per_s for p in ("fp32", "bf16")} if imgs else {}
    res["encoder_ceiling_posts_per_s"] = {p: round(v, 1) for p, v in ceil.items()}
    res["encoder_ceiling_bucketed_posts_per_s"] = {p: round(v, 1) for p, v in ceil_bucket.items()}
    res["encoder_single_post_per_s"] = round(single, 1)
    res["image_encoder_images_per_s"] = {p: round(v, 1) for p, v in img.items()}

    log.info("2/6 accuracy per precision")
    res["accuracy_by_precision"] = acc = precision_accuracy(settings.data_dir, precisions, settings.scorer_model)
    # the largest loss against fp32 over the benchmark sets, in points of accuracy and of macro-F1
    res["accuracy_loss_pts_vs_fp32"] = {
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
        best_bucket = {p: 16 if ceil_bucket[p] > ceil[p] else 0 for p in precisions}
        for prec in precisions:
            sweep.append(saturation(settings, ep, posts_all[:n_sat], logs, precision=prec, bucket=best_bucket[prec]))
        batches = (32, 128) if quick else (16, 32, 128, 256)
        for b in batches:
            sweep.append(saturation(settings, ep, posts_all[:n_sat], logs, batch=b, bucket=best_bucket["fp32"]))
        if not quick:
            sweep.append(saturation(settings, ep, posts_all[:n_sat], logs, wait_ms=10, bucket=best_bucket["fp32"]))
            sweep.append(saturation(settings, ep, posts_all[:n_sat], logs, k=2, bucket=best_bucket["fp32"]))
        # the same precisions with the other encode-ahead setting: what encoding on the prefetch thread buys
        res["scorer_encode_ahead_default"] = settings.scorer_encode_ahead
        for prec in ("fp32", "int8"):
            sweep.append(saturation(settings, ep, posts_all[:n_sat], logs, precision=prec, bucket=best_bucket[prec],
                                    scorer_encode_ahead=not settings.scorer_encode_ahead))
        res["sweep"] = sweep
        e2e = {r["precision"]: r["posts_per_s"] for r in sweep[: len(precisions)]}
        fastest = max(e2e, key=e2e.get)
        res["e2e_posts_per_s"] = e2e
        res["fastest_precision"] = fastest
        ref = max(ceil[fastest], ceil_bucket[fastest])
        res["e2e_over_ceiling"] = round(e2e[fastest] / ref, 3)
        res["e2e_over_ceiling_by_precision"] = {p: round(e2e[p] / max(ceil[p], ceil_bucket[p]), 3) for p in e2e}
        res["fastest_over_fp32"] = round(e2e[fastest] / e2e["fp32"], 3)
        res["scorer_peak_rss_mb"] = max(r["peak_rss_mb"] for r in sweep)

        log.info("4/6 latency at 25/50/75%% of the maximum")
        env = {"scorer_precision": fastest, "scorer_bucket_size": best_bucket[fastest]}
        lat = {}
        for share in (0.25, 0.5, 0.75):
            rate = share * e2e[fastest]
            lat[f"{int(share * 100)}%"] = latency_at(settings, ep, posts_all[n_sat:], rate, 15 if quick else 30,
                                                     logs, **env)
        res["latency"] = lat
        res["p99_ms_at_half_load"] = lat["50%"]["p99_ms"]

        log.info("5/6 the naive pipeline")
        res["naive"] = naive_pipeline(Run(settings, ep), posts_all[:150 if quick else 300])
        res["e2e_over_naive"] = round(e2e[fastest] / res["naive"]["posts_per_s"], 2)

        log.info("6/6 profile")
        res["profile_share_pct"] = profile_scorer(Run(settings, ep), posts_all[:640], out_dir / "profiles")
    finally:
        local_stack.down(stack)
        shutil.rmtree(state, ignore_errors=True)
    write_report(res, out_dir)
    return res


def write_report(res: dict, out_dir: Path) -> None:
    from services.bench.report import render

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "performance.json").write_text(json.dumps(res, indent=2) + "\n")
    render(res, out_dir)
