"""Render the bench result as docs/performance.md with plots (matplotlib, Agg)."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger("voxpop.bench")


def _table(headers: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _plots(res: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    names, vals, cols = [], [], []
    for p, v in res["encoder_ceiling_posts_per_s"].items():
        names.append(f"encoder\n{p}")
        vals.append(
            max(
                v,
                res["encoder_ceiling_bucketed_posts_per_s"][p],
                *res.get("encoder_ceiling_per_core_posts_per_s", {}).get(p, {}).values(),
            )
        )
        cols.append("#9aa5b1")
    for p, v in res["e2e_posts_per_s"].items():
        names.append(f"end to end\n{p}")
        vals.append(v)
        cols.append("#2f6fdf")
    for p, v in res.get("compiled", {}).items():
        if isinstance(v, dict):
            names.append(f"end to end\n{p} compiled")
            vals.append(v["e2e_posts_per_s"])
            cols.append("#1b3f8f")
    names.append("naive\nfp32")
    vals.append(res["naive"]["posts_per_s"])
    cols.append("#d64545")
    ax.bar(names, vals, color=cols)
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("posts / s")
    ax.set_title("Throughput: encoder ceiling vs the whole stream vs the naive pipeline")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)

    sweep = [
        r
        for r in res["sweep"]
        if r["precision"] == "fp32" and r["scorers"] == 1 and r["wait_ms"] == 50 and not r.get("encode_ahead")
    ]  # older reports swept encoding ahead too
    sweep.sort(key=lambda r: r["batch"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["batch"] for r in sweep], [r["posts_per_s"] for r in sweep], "o-", color="#2f6fdf")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("max batch size")
    ax.set_ylabel("posts / s (fp32, end to end)")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(out / "batch-sweep.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    loads = list(res["latency"])
    for q, c in (("p50_ms", "#2f6fdf"), ("p95_ms", "#e3a008"), ("p99_ms", "#d64545")):
        ax.plot(loads, [res["latency"][k][q] for k in loads], "o-", label=q.replace("_ms", ""), color=c)
    ax.axhline(500, color="#999", ls="--", lw=1)
    ax.set_xlabel("offered load (share of the measured maximum)")
    ax.set_ylabel("ingest -> stored (ms)")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)


def _compiled_section(c: dict | None) -> list[str]:
    """The TorchInductor runs (pipelines/compiled.py), when the bench made them."""
    if c is None:
        return []
    head = ["## Compiled encoder (`VOXPOP_SCORER_COMPILE=true`)", ""]
    if "skipped" in c:
        return [*head, f"Not run: {c['skipped']}.", ""]
    rows = [
        [
            p,
            "{} x b{}".format(v["scorers"], v["batch"]),
            v["ceiling_posts_per_s"],
            v["e2e_posts_per_s"],
            v["e2e_over_ceiling"],
            v["over_eager_e2e"],
            "{accuracy} / {macro_f1}".format(**v["accuracy_loss_pts_vs_eager_fp32"]),
            v["peak_rss_mb"],
        ]
        for p, v in c.items()
        if isinstance(v, dict)
    ]
    ratio = f" Compiled bf16 / compiled fp32, end to end: {c['bf16_over_fp32']}." if "bf16_over_fp32" in c else ""
    if "bf16_over_eager_fp32" in c:
        ratio += f" Compiled bf16 / eager fp32 (neither compiler nor bf16): {c['bf16_over_eager_fp32']}."
    return [
        *head,
        "The text encoder compiled by TorchInductor with its weights frozen in, in the scorers and in "
        "their encoder-only ceiling alike (the compile, 10-20 s per process, is before the timed window)." + ratio,
        "",
        _table(
            [
                "precision",
                "layout",
                "encoder ceiling (compiled)",
                "end to end (compiled)",
                "e2e / ceiling",
                "end to end, compiled / eager",
                "accuracy / macro-F1 loss vs eager fp32 (points)",
                "peak RSS MB",
            ],
            rows,
        ),
        "",
    ]


def _header(res: dict) -> list[str]:
    m = res["machine"]
    return [
        "# Performance",
        "",
        f"Measured {res['date']} on {m['cpu']} ({m['cores']} cores; {m['isa']}), Python {m['python']}, "
        f"torch {m['torch']}, model `{res['model']}`. Command: `{res['command']}` (everything in one process tree: "
        "embedded PostgreSQL, Redis and Tansu broker, scorers as `voxpop score` children). "
        "Numbers are from this one run; ratios matter more than absolutes on a shared 2-core machine.",
        "",
    ]


def _headline(res: dict) -> list[str]:
    return [
        "## Headline ratios",
        "",
        _table(
            ["metric", "value", "goal"],
            [
                [
                    "end to end / encoder ceiling (same precision and batch size, " + res["fastest_precision"] + ")",
                    res["e2e_over_ceiling"],
                    ">= 0.8",
                ],
                ["end to end / naive pipeline", res["e2e_over_naive"], ">= 5"],
                [
                    f"fastest precision that keeps accuracy ({res['fastest_precision']}) / fp32 (end to end)",
                    res["fastest_over_fp32"],
                    ">= 1.8",
                ],
                [
                    "its worst accuracy / macro-F1 loss vs fp32 (points)",
                    "{accuracy} / {macro_f1}".format(**res["accuracy_loss_pts_vs_fp32"][res["fastest_precision"]]),
                    "<= 0.5",
                ],
                [
                    f"fastest precision of all ({res['fastest_any_precision']}) / fp32; its accuracy / macro-F1 loss",
                    "{} ({accuracy} / {macro_f1})".format(
                        res["fastest_any_over_fp32"], **res["accuracy_loss_pts_vs_fp32"][res["fastest_any_precision"]]
                    ),
                    "",
                ],
                ["p99 ingest -> stored at 50% load (ms)", res["p99_ms_at_half_load"], "< 500"],
                ["scorer peak RSS (MB)", res["scorer_peak_rss_mb"], "< 2048"],
            ],
        ),
        "",
        "![throughput](performance/throughput.png)",
        "",
    ]


def _encoders(res: dict) -> list[str]:
    return [
        "## Encoder ceilings (all-MiniLM-L6-v2, real airline tweets, each post encoded once)",
        "",
        "Encoder alone (tokenise + forward), posts/s, timed only over posts the encoder has not seen (as in a "
        "scorer; the same posts again run ~5% faster, their bucket shapes' kernels and pages all warm): "
        "one process with every core at batch 64, 1,792 posts after 256 of warm-up (in stream order, "
        f"and sorted into length buckets, cut where padding costs more than an encoder call of "
        f"{res.get('bucket_call_tokens', 32)} tokens), and one single-threaded process per core (buckets) at each "
        "max batch size the scorer was run with, each process on its own share of all the unique posts. "
        "End to end is the precision's best scorer layout; its ratio is "
        "against the best ceiling at the same batch size, and against the best ceiling of all.",
        "",
        _table(
            [
                "precision",
                "1 process, b64",
                "1 process, b64, buckets",
                *[
                    f"1 process/core, b{b}, buckets"
                    for b in next(iter(res["encoder_ceiling_per_core_posts_per_s"].values()))
                ],
                "end to end (layout)",
                "e2e / ceiling, same batch",
                "e2e / best ceiling",
            ],
            [
                [
                    p,
                    res["encoder_ceiling_posts_per_s"][p],
                    res["encoder_ceiling_bucketed_posts_per_s"][p],
                    *res["encoder_ceiling_per_core_posts_per_s"][p].values(),
                    "{} ({} x b{})".format(
                        res["e2e_posts_per_s"][p], res["e2e_layout"][p]["scorers"], res["e2e_layout"][p]["batch"]
                    ),
                    res["e2e_over_ceiling_by_precision"][p],
                    res["e2e_over_best_ceiling_by_precision"][p],
                ]
                for p in res["encoder_ceiling_posts_per_s"]
            ],
        ),
        "",
        *[f"- **{p} not run**: {why}." for p, why in res.get("precisions_skipped", {}).items()],
        "",
        f"One post at a time (fp32): {res['encoder_single_post_per_s']} posts/s. "
        "Image encoder (EfficientNet-Lite0, batch 32, MVSA photos): "
        + ", ".join(f"{p} {v} images/s" for p, v in res["image_encoder_images_per_s"].items())
        + ".",
        "",
    ]


def _accuracy(res: dict) -> list[str]:
    return [
        "## Accuracy per precision (production head, text, test splits, causal user means)",
        "",
        _table(
            ["precision", "data set", "accuracy", "macro F1", "n", "labels changed vs fp32"],
            [
                [p, d, v["accuracy"], v["macro_f1"], v["n"], f"{100 * v.get('changed_vs_fp32', 0):.1f}%"]
                for p, per in res["accuracy_by_precision"].items()
                for d, v in per.items()
            ],
        ),
        "",
        "Largest loss against fp32 over these sets (points): "
        + "; ".join(
            f"{p}: accuracy {v['accuracy']}, macro-F1 {v['macro_f1']}"
            for p, v in res["accuracy_loss_pts_vs_fp32"].items()
            if p != "fp32"
        )
        + ". "
        "A precision keeps accuracy if it loses at most 0.5 points on every set. On the 300-post TweetEval "
        "split one post is 0.33 points, so the share of labels a precision changes is the steadier view.",
        "",
    ]


def _sweep(res: dict) -> list[str]:
    return [
        "## Batching policy and scorer processes (end to end, posts counted in PostgreSQL)",
        "",
        "Scorers are `voxpop score` processes in one consumer group, each with cores / scorers torch threads. "
        "The topic is pre-loaded with real airline posts (at least 16 full batches per scorer), then the scorers "
        "drain it. posts/s is the steady state: posts stored between the commits holding the 10th and the 90th "
        "percentile post, which leaves out the start (group join, first rebalance) and the drain (one scorer idle "
        "while the other finishes); the whole run, first commit to last, is in the next column.",
        "",
        _table(
            [
                "scorers",
                "precision",
                "max batch",
                "max wait ms",
                "length buckets (call tokens)",
                "posts/s",
                "whole run",
                "encoder ceiling",
                "ratio",
                "peak RSS MB",
            ],
            [
                [
                    r["scorers"],
                    r["precision"],
                    r["batch"],
                    r["wait_ms"],
                    r["bucket"] or "off",
                    r["posts_per_s"],
                    r.get("posts_per_s_whole_run", "-"),
                    r["ceiling_posts_per_s"] or "-",
                    round(r["posts_per_s"] / r["ceiling_posts_per_s"], 3) if r["ceiling_posts_per_s"] else "-",
                    r["peak_rss_mb"],
                ]
                for r in res["sweep"]
            ],
        ),
        "",
        "![batch sweep](performance/batch-sweep.png)",
        "",
    ]


def _compiled(res: dict) -> list[str]:
    return [
        *_compiled_section(res.get("compiled")),
    ]


def _latency(res: dict) -> list[str]:
    return [
        "## Latency from ingest to stored (published on posts.scored after the commit)",
        "",
        "Layout: {scorers} scorer(s), {scorer_precision}, max batch {scorer_max_batch}, {scorer_threads} torch "
        "thread(s) each.".format(**res["latency_layout"]),
        "",
        _table(
            ["offered load", "offered posts/s", "posts", "p50 ms", "p95 ms", "p99 ms"],
            [
                [k, v["offered_per_s"], v["posts"], v["p50_ms"], v["p95_ms"], v["p99_ms"]]
                for k, v in res["latency"].items()
            ],
        ),
        "",
        "![latency](performance/latency.png)",
        "",
    ]


def _naive(res: dict) -> list[str]:
    return [
        "## The naive pipeline",
        "",
        f"One message per poll, one inference per post, per-post Redis GET/SET of the user state, one INSERT "
        f"transaction per row, one offset commit per message: {res['naive']['posts_per_s']} posts/s over "
        f"{res['naive']['posts']} posts.",
        "",
    ]


def _profile(res: dict) -> list[str]:
    return [
        f"## Where a scorer's time goes (pyinstrument, in-process `Scorer.process`, batches of 64, "
        f"{res.get('profile_precision', 'fp32')})",
        "",
        _table(["stage", "% of time"], [[k, v] for k, v in res["profile_share_pct"].items()]),
        "",
        "Full profile: `profiles/scorer-profile.txt` beside this file (and `.html` where kept).",
        "",
    ]


#: (title, renderer) in page order; a section whose phase did not run says so instead.
SECTIONS = (
    ("Headline ratios", _headline),
    ("Encoder ceilings", _encoders),
    ("Accuracy per precision", _accuracy),
    ("Batching policy and scorer processes", _sweep),
    ("Compiled encoder", _compiled),
    ("Latency from ingest to stored", _latency),
    ("The naive pipeline", _naive),
    ("Where a scorer's time goes", _profile),
)


def _phases(res: dict) -> list[str]:
    ph = res.get("phases")
    if not ph or all(v.get("status") == "ok" for v in ph.values()):
        return []
    return [
        "## Phases of this run",
        "",
        _table(
            ["phase", "status", "why", "seconds"],
            [[k, v["status"], v.get("why", ""), v.get("seconds", "-")] for k, v in ph.items()],
        ),
        "",
    ]


def render(res: dict, out_dir: Path) -> None:
    """docs/performance.md from whatever phases finished (a crash or a failed phase keeps the rest)."""
    try:
        _plots(res, out_dir / "performance")
    except (KeyError, ValueError) as e:  # a phase the plots need did not finish
        log.warning("plots not drawn: %s missing", e)
    lines = [*_header(res), *_phases(res)]
    for title, fn in SECTIONS:
        try:
            lines += fn(res)
        except (KeyError, TypeError, StopIteration) as e:
            lines += [f"## {title}", "", f"Not measured in this run (no `{e}`; see the phases above).", ""]
    (out_dir / "performance.md").write_text("\n".join(lines))
