"""Orchestrates `voxpop bench` and writes docs/performance.md (+ plots) and docs/performance.json."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from infra import local_stack
from infra.local_stack import Endpoints
from models.registry import ScoringHead, load_head
from pipelines.allocator import keep_freed_memory
from pipelines.compiled import compiler_missing
from pipelines.quantize import cpu_flags
from pipelines.scoring import PRECISIONS
from services.bench import NEEDS, PHASES, encoders, memory
from services.bench.accuracy import precision_accuracy
from services.bench.naive import naive_pipeline
from services.bench.profile import profile_scorer
from services.bench.stream import ROOT, Run, airline_posts, busy_neighbour, latency_at, parsed, saturation
from services.config import Settings
from services.ingest.gate import Incoming

log = logging.getLogger("voxpop.bench")


def machine() -> dict[str, str]:
    """The CPU as /proc/cpuinfo names it; family and model tell generations apart ("AMD EPYC" alone does not)."""
    flags = cpu_flags()
    try:
        info = dict(
            ln.split(":", 1) for ln in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines() if ":" in ln
        )
        info = {k.strip(): v.strip() for k, v in info.items()}
        model = info["model name"]
        if "cpu family" in info:
            model += f" (family {info['cpu family']}, model {info['model']})"
    except (OSError, KeyError):
        model = platform.processor()
    import torch

    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "isa": " ".join(
            f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16") if f in flags
        ),
    }


ACCURACY_TOLERANCE_PTS = 0.5  # a precision "keeps accuracy" if it loses at most this much on every set


def worth_running(probe: dict[str, float]) -> tuple[list[str], dict[str, str]]:
    """The precisions worth the long runs: fp32 (the reference) and any whose encoder is not slower.

    A precision slower than fp32 at the encoder can never be the fast path, and where the CPU has
    no bf16 instructions torch emulates bf16, many times slower than fp32: running it end to end and over
    the accuracy sets would take an hour there. Returns (precisions to run, {skipped: why}).
    """
    keep = [p for p in probe if p == "fp32" or probe[p] >= probe["fp32"]]
    why = {
        p: f"encoder {probe[p]:.1f} posts/s vs fp32 {probe['fp32']:.1f} on a short probe: slower than fp32 here, "
        "so never the fast path; not run further"
        for p in probe
        if p not in keep
    }
    return keep, why


QUICK_ACCURACY_SETS = ("airline",)  # --quick: one benchmark set for the precision decision


@dataclass
class Bench:
    """What every phase reads: the settings, the posts, the model, the stack and where output goes."""

    settings: Settings
    quick: bool
    out_dir: Path
    ep: Endpoints | None = None
    logs: Path = Path()
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    posts: list[Incoming] = field(default_factory=list)

    @property
    def endpoints(self) -> Endpoints:
        """The bench stack's endpoints (`run_bench` sets them before the first phase)."""
        if self.ep is None:
            raise RuntimeError("bench: the stack's endpoints are not set (run the phases through run_bench)")
        return self.ep

    @property
    def n_sat(self) -> int:
        return 1500 if self.quick else 4000

    @property
    def batches(self) -> tuple[int, ...]:
        return (64,) if self.quick else (64, 256)

    def enough(self, k: int = 1, b: int = 64) -> list[Incoming]:
        """At least 16 full batches per scorer, so the steady-state window spans many commits."""
        return self.posts[: max(self.n_sat, 16 * k * b)]


def bench_stack(settings: Settings, prefix: str) -> tuple[Path, Settings]:
    """A fresh state folder and the settings of a stack in it (embedded servers where none are given)."""
    state = Path(tempfile.mkdtemp(prefix=prefix))
    return state, Settings(
        state_dir=state,
        database_url=settings.database_url,
        redis_url=settings.redis_url,
        kafka_bootstrap=settings.kafka_bootstrap,
    )


def run_bench(
    settings: Settings, quick: bool = False, out_dir: Path | None = None, only: list[str] | None = None
) -> dict[str, Any]:
    """Run the phases in order, writing the report after each: a crash or a failed phase keeps what finished.

    `only`: re-run these phases over the last report in `out_dir` (the rest of it is kept).
    """
    command = "voxpop bench" + (" --quick" if quick else "") + (f" --out {out_dir}" if out_dir else "")
    out_dir = out_dir or ROOT / "docs"
    unknown = set(only or ()) - set(PHASES)
    if unknown:
        raise ValueError(f"unknown phase(s) {sorted(unknown)}; the phases are {', '.join(PHASES)}")
    keep_freed_memory()  # the in-process ceilings and the naive pipeline run on the scorer's allocator
    head = load_head(settings.scorer_model)
    res: dict[str, Any] = {}
    prev = out_dir / "performance.json"
    if not only and prev.exists() and "scale" in (old := json.loads(prev.read_text())):
        res["scale"] = old["scale"]  # measured by `voxpop bench scale`, not by this command
    if only:
        if not prev.exists():
            raise FileNotFoundError(f"--only re-runs phases over {prev}, which does not exist: run the whole bench")
        res = json.loads(prev.read_text())
        if "date" in res and "previous_run" not in res:  # what the phases not re-run were measured by
            res["previous_run"] = {"date": res["date"], "cpu": res["machine"]["cpu"], "command": res["command"]}
    command += "".join(f" --only {p}" for p in only or ())
    res.update(
        {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "command": command,
            "model": f"{head.name}@{head.version}",
        }
    )
    res.setdefault("phases", {})
    b = Bench(settings, quick, out_dir, posts=airline_posts(settings.data_dir))
    state, stack = bench_stack(settings, "voxpop-bench-")
    b.ep, b.logs = local_stack.resolve_endpoints(stack), state / "logs"
    b.logs.mkdir()
    try:
        for i, name in enumerate(PHASES, 1):
            if only and name not in only:
                continue
            missing = [n for n in NEEDS.get(name, ()) if res["phases"].get(n, {}).get("status") != "ok"]
            if missing:
                res["phases"][name] = {"status": "skipped", "why": f"needs {', '.join(missing)}"}
                log.warning("%d/%d %s skipped: needs %s", i, len(PHASES), name, ", ".join(missing))
                continue
            log.info("%d/%d %s", i, len(PHASES), name)
            t0 = time.monotonic()
            try:
                PHASE_RUNS[name](b, res, head)
                res["phases"][name] = {
                    "status": "ok",
                    "seconds": round(time.monotonic() - t0, 1),
                    "date": res["date"],
                    "cpu": res["machine"]["cpu"],
                }
            except Exception as e:  # noqa: BLE001 (a failed phase is reported; the others still run)
                log.exception("bench phase %s failed", name)
                res["phases"][name] = {
                    "status": "failed",
                    "why": f"{type(e).__name__}: {e}",
                    "seconds": round(time.monotonic() - t0, 1),
                }
            write_report(res, out_dir)
    finally:
        local_stack.down(stack)
        shutil.rmtree(state, ignore_errors=True)
    write_report(res, out_dir)
    return res


def _ceiling(res: dict[str, Any], p: str, batch: int) -> float:
    """The best encoder-only rate of precision p at this max batch size, over every layout."""
    single = max(res["encoder_ceiling_posts_per_s"][p], res["encoder_ceiling_bucketed_posts_per_s"][p])
    best: float = max(
        single if batch == 64 else 0.0, res["encoder_ceiling_per_core_posts_per_s"][p].get(str(batch), 0.0)
    )
    return best


def phase_encoders(b: Bench, res: dict[str, Any], head: ScoringHead) -> None:
    s = b.settings
    texts = [parsed(p).text for p in b.posts[: 1024 if b.quick else 2048]]  # in-process ceilings: warm-up, then new
    stream = [parsed(p).text for p in b.posts]  # the per-core ceilings: a share per process, no post twice
    probe = {p: encoders.text_ceiling(head, texts[:320], p).per_s for p in PRECISIONS}
    precisions, skipped = worth_running(probe)
    res["precisions_run"] = precisions
    res["encoder_probe_posts_per_s"] = {p: round(v, 1) for p, v in probe.items()}
    res["precisions_skipped"] = skipped
    for p, why in skipped.items():
        log.info("%s: %s", p, why)
    call = res["bucket_call_tokens"] = s.scorer_bucket_call_tokens or 32  # length buckets as the scorer plans them
    ceil = {p: encoders.text_ceiling(head, texts, p).per_s for p in precisions}
    ceil_bucket = {p: encoders.text_ceiling(head, texts, p, bucket=call).per_s for p in precisions}
    # the encoder alone, one single-threaded process per core, at each batch size the scorer runs
    per_core = {
        p: {
            bs: encoders.text_ceiling_per_core(s.scorer_model, stream, p, b.cores, bucket=call, batch=bs).per_s
            for bs in b.batches
        }
        for p in precisions
    }
    imgs = sorted((s.data_dir / "mvsa-single" / "images").glob("*.jpg"))[:64]
    img = {p: encoders.image_ceiling(imgs, p).per_s for p in ("fp32", "bf16") if p in precisions} if imgs else {}
    res["encoder_ceiling_posts_per_s"] = {p: round(v, 1) for p, v in ceil.items()}
    res["encoder_ceiling_bucketed_posts_per_s"] = {p: round(v, 1) for p, v in ceil_bucket.items()}
    res["encoder_ceiling_per_core_posts_per_s"] = {
        p: {str(bs): round(v, 1) for bs, v in d.items()} for p, d in per_core.items()
    }
    res["encoder_single_post_per_s"] = round(encoders.text_single(head, texts[:250]).per_s, 1)
    res["image_encoder_images_per_s"] = {p: round(v, 1) for p, v in img.items()}
    res["bucket_by_precision"] = {p: call if ceil_bucket[p] > ceil[p] else 0 for p in precisions}


def phase_accuracy(b: Bench, res: dict[str, Any], head: ScoringHead) -> None:
    precisions = res.get("precisions_run") or list(PRECISIONS)
    sets = QUICK_ACCURACY_SETS if b.quick else None
    res["accuracy_sets"] = list(sets) if sets else "all present"
    acc = res["accuracy_by_precision"] = precision_accuracy(
        b.settings.data_dir, tuple(precisions), b.settings.scorer_model, only=sets
    )
    # the largest loss against fp32 over the benchmark sets, in points of accuracy and of macro-F1
    res["accuracy_loss_pts_vs_fp32"] = {
        p: {m: round(100 * max(acc["fp32"][d][m] - acc[p][d][m] for d in acc[p]), 2) for m in ("accuracy", "macro_f1")}
        for p in precisions
    }


def phase_saturation(b: Bench, res: dict[str, Any], head: ScoringHead) -> None:
    s, precisions, bucket = b.settings, res["precisions_run"], res["bucket_by_precision"]
    sweep = []
    for prec in precisions:  # the deployment layouts: one scorer with every core, one per core
        if not b.quick or b.cores == 1:  # --quick: the layout `voxpop up` runs (one per core) only
            sweep.append(saturation(s, b.endpoints, b.enough(), b.logs, precision=prec, bucket=bucket[prec]))
        if b.cores > 1:
            for bs in b.batches:
                sweep.append(
                    saturation(
                        s,
                        b.endpoints,
                        b.enough(b.cores, bs),
                        b.logs,
                        k=b.cores,
                        batch=bs,
                        precision=prec,
                        bucket=bucket[prec],
                    )
                )
    for bs in () if b.quick else (16, 32, 128, 256):
        sweep.append(saturation(s, b.endpoints, b.enough(1, bs), b.logs, batch=bs, bucket=bucket["fp32"]))
    if not b.quick:
        sweep.append(saturation(s, b.endpoints, b.enough(), b.logs, wait_ms=10, bucket=bucket["fp32"]))
    for r in sweep:  # None where no encoder-only run used that batch size
        r["ceiling_posts_per_s"] = round(_ceiling(res, r["precision"], r["batch"]), 1) or None
    res["sweep"] = sweep
    # per precision: its best layout, against the encoder ceiling at that layout's batch size
    best = {
        p: max(
            (r for r in sweep if r["precision"] == p and r["wait_ms"] == 50 and r["batch"] in (64, *b.batches)),
            key=lambda r: r["posts_per_s"],
        )
        for p in precisions
    }
    e2e = res["e2e_posts_per_s"] = {p: r["posts_per_s"] for p, r in best.items()}
    res["e2e_layout"] = {p: {"scorers": r["scorers"], "batch": r["batch"]} for p, r in best.items()}
    res["e2e_over_ceiling_by_precision"] = {p: round(e2e[p] / best[p]["ceiling_posts_per_s"], 3) for p in e2e}
    res["e2e_over_best_ceiling_by_precision"] = {
        p: round(e2e[p] / max(_ceiling(res, p, bs) for bs in (64, *b.batches)), 3) for p in e2e
    }
    # "the fastest path" is the fastest precision that keeps accuracy; the fastest of all is reported too
    loss = res["accuracy_loss_pts_vs_fp32"]
    keeps = [p for p in precisions if max(loss[p].values()) <= ACCURACY_TOLERANCE_PTS]
    fastest = res["fastest_precision"] = max(keeps, key=lambda p: e2e[p])
    res["fastest_any_precision"] = fastest_any = max(e2e, key=lambda p: e2e[p])
    res["fastest_any_over_fp32"] = round(e2e[fastest_any] / e2e["fp32"], 3)
    res["accuracy_tolerance_pts"] = ACCURACY_TOLERANCE_PTS
    res["e2e_over_ceiling"] = res["e2e_over_ceiling_by_precision"][fastest]
    res["fastest_over_fp32"] = round(e2e[fastest] / e2e["fp32"], 3)
    res["scorer_peak_rss_mb"] = max(r["peak_rss_mb"] for r in sweep)


def phase_compiled(b: Bench, res: dict[str, Any], head: ScoringHead) -> None:
    if b.quick:
        res["compiled"] = {"skipped": "--quick does not compile (each compile takes about a minute per process)"}
        return
    bs = b.batches[-1]
    res["compiled"] = compiled_runs(
        b.settings,
        b.endpoints,
        [parsed(p).text for p in b.posts],
        b.enough(b.cores, bs),
        b.logs,
        [p for p in res["precisions_run"] if p != "int8"],
        b.cores,
        bs,
        res["bucket_by_precision"],
        res["e2e_posts_per_s"],
        res["accuracy_by_precision"]["fp32"],
    )
    rss = [v["peak_rss_mb"] for v in res["compiled"].values() if isinstance(v, dict)]
    res["scorer_peak_rss_mb"] = max([res["scorer_peak_rss_mb"], *rss])


def phase_latency(b: Bench, res: dict[str, Any], head: ScoringHead) -> None:
    fastest = res["fastest_precision"]
    lay = res["e2e_layout"][fastest]
    env = {
        "scorer_precision": fastest,
        "scorer_bucket_call_tokens": res["bucket_by_precision"][fastest],
        "scorer_max_batch": lay["batch"],
        "scorer_threads": max(1, b.cores // lay["scorers"]),
    }
    lat = {}
    for share in (0.5,) if b.quick else (0.25, 0.5, 0.75):
        rate = share * res["e2e_posts_per_s"][fastest]
        lat[f"{int(share * 100)}%"] = latency_at(
            b.settings, b.endpoints, b.posts[b.n_sat :], rate, 15 if b.quick else 30, b.logs, k=lay["scorers"], **env
        )
    res["latency"] = lat
    res["latency_layout"] = {"scorers": lay["scorers"], **env}
    res["p99_ms_at_half_load"] = lat["50%"]["p99_ms"]


def phase_cotenancy(b: Bench, res: dict[str, Any], head: ScoringHead) -> None:
    """One single-threaded scorer (a k8s scorer pod: one CPU, one thread) draining the same posts
    with the other cores quiet, then with a busy neighbour spinning on them; paired and alternated,
    so drift of a shared machine falls on both arms alike. Without --quick, a two-thread scorer
    is measured the same way: what one thread per process is for."""
    prec = res["fastest_precision"]
    bucket = res["bucket_by_precision"][prec]
    arms = {"1 thread": 1} if b.quick or b.cores < 2 else {"1 thread": 1, f"{b.cores} threads": b.cores}
    out: dict[str, dict[str, Any]] = {}
    for arm, threads in arms.items():
        quiet: list[float] = []
        busy: list[float] = []
        for _ in range(1 if b.quick else 2):
            for rates, neighbour in ((quiet, False), (busy, True)):
                posts = b.posts[:800] if b.quick else b.enough()
                with busy_neighbour(b.cores - 1 if neighbour else 0):
                    r = saturation(
                        b.settings, b.endpoints, posts, b.logs, precision=prec, bucket=bucket, scorer_threads=threads
                    )
                rates.append(r["posts_per_s"])
        out[arm] = {
            "threads": threads,
            "quiet_posts_per_s": [round(x, 1) for x in quiet],
            "busy_posts_per_s": [round(x, 1) for x in busy],
            "busy_over_quiet": round(float(np.mean(busy) / np.mean(quiet)), 3),
        }
    res["cotenancy"] = {"precision": prec, "neighbours": b.cores - 1, "arms": out}


def phase_naive(b: Bench, res: dict[str, Any], head: ScoringHead) -> None:
    res["naive"] = naive_pipeline(Run(b.settings, b.endpoints), b.posts[: 150 if b.quick else 300])
    res["e2e_over_naive"] = round(res["e2e_posts_per_s"][res["fastest_precision"]] / res["naive"]["posts_per_s"], 2)


def phase_profile(b: Bench, res: dict[str, Any], head: ScoringHead) -> None:
    fastest = res["profile_precision"] = res["fastest_precision"]  # the path the latency runs and deployments use
    res["profile_share_pct"] = profile_scorer(
        Run(b.settings.model_copy(update={"scorer_precision": fastest}), b.endpoints),
        b.posts[:640],
        b.out_dir / "profiles",
    )


def phase_memory(b: Bench, res: dict[str, Any], head: ScoringHead) -> None:
    s = b.settings
    texts = [parsed(p).text for p in b.posts[: len(b.posts) // 6 if b.quick else len(b.posts)]]
    res["memory"] = {
        arm: memory.shape_memory(
            s.scorer_model, texts, s.scorer_precision, arm == "fixed", s.scorer_bucket_call_tokens, s.scorer_max_batch
        )
        for arm in ("ragged", "fixed")
    }
    res["memory_posts"] = len(texts)


PHASE_RUNS = {
    "encoders": phase_encoders,
    "accuracy": phase_accuracy,
    "saturation": phase_saturation,
    "compiled": phase_compiled,
    "latency": phase_latency,
    "cotenancy": phase_cotenancy,
    "naive": phase_naive,
    "profile": phase_profile,
    "memory": phase_memory,
}


def compiled_runs(
    settings: Settings,
    ep: Endpoints,
    texts: list[str],
    posts: list[Incoming],
    logs: Path,
    precisions: list[str],
    cores: int,
    batch: int,
    bucket: dict[str, int],
    eager_e2e: dict[str, float],
    eager_fp32_acc: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """fp32 and bf16 again with the encoder compiled (VOXPOP_SCORER_COMPILE): its own ceiling, end to end.

    Same layout as the eager runs' largest batch, one scorer per core; the ceiling children compile too,
    so e2e / ceiling compares like with like. Accuracy: the compiled encoders on the benchmark sets,
    their loss against eager fp32 (Inductor's fused kernels round differently).
    """
    why = compiler_missing()
    if why:
        return {"skipped": why}
    acc = precision_accuracy(
        settings.data_dir, ("fp32", *(p for p in precisions if p != "fp32")), settings.scorer_model, compile=True
    )
    out: dict[str, Any] = {}
    for p in precisions:
        ceil = encoders.text_ceiling_per_core(
            settings.scorer_model, texts, p, cores, bucket=bucket[p], batch=batch, compile=True
        ).per_s
        row = saturation(
            settings, ep, posts, logs, k=cores, batch=batch, precision=p, bucket=bucket[p], scorer_compile=True
        )
        out[p] = {
            "scorers": cores,
            "batch": batch,
            "ceiling_posts_per_s": round(ceil, 1),
            "e2e_posts_per_s": row["posts_per_s"],
            "e2e_over_ceiling": round(row["posts_per_s"] / ceil, 3),
            "over_eager_e2e": round(row["posts_per_s"] / eager_e2e[p], 3),
            "peak_rss_mb": row["peak_rss_mb"],
            "accuracy": acc[p],
            "accuracy_loss_pts_vs_eager_fp32": {
                m: round(100 * max(eager_fp32_acc[d][m] - acc[p][d][m] for d in acc[p]), 2)
                for m in ("accuracy", "macro_f1")
            },
        }
    if {"fp32", "bf16"} <= out.keys():
        out["bf16_over_fp32"] = round(out["bf16"]["e2e_posts_per_s"] / out["fp32"]["e2e_posts_per_s"], 3)
    if "bf16" in out:  # the k8s overlay's path against the default fp32 path a user starts from
        out["bf16_over_eager_fp32"] = round(out["bf16"]["e2e_posts_per_s"] / eager_e2e["fp32"], 3)
    return out


def write_report(res: dict[str, Any], out_dir: Path) -> None:
    from services.bench.report import render

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "performance.json").write_text(json.dumps(res, indent=2) + "\n")
    render(res, out_dir)
