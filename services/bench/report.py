"""Render the bench result as docs/performance.md with plots (matplotlib, Agg)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger("voxpop.bench")


def _table(headers: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _plots(res: dict[str, Any], out: Path) -> None:
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
    if len(sweep) > 1:  # --quick runs no batch sweep
        _batch_sweep_plot(sweep, out)
    _latency_plot(res, out)


def _batch_sweep_plot(sweep: list[dict[str, Any]], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["batch"] for r in sweep], [r["posts_per_s"] for r in sweep], "o-", color="#2f6fdf")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("max batch size")
    ax.set_ylabel("posts / s (fp32, end to end)")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(out / "batch-sweep.png", dpi=110)
    plt.close(fig)


def _latency_plot(res: dict[str, Any], out: Path) -> None:
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


def _compiled_section(c: dict[str, Any] | None) -> list[str]:
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


def _header(res: dict[str, Any]) -> list[str]:
    m = res["machine"]
    return [
        "# Performance",
        "",
        f"Measured {res['date']} on {m['cpu']} ({m['cores']} cores; {m['isa']}), Python {m['python']}, "
        f"torch {m['torch']}, model `{res['model']}`. Command: `{res['command']}` (everything in one process tree: "
        "embedded PostgreSQL, Redis and Tansu broker, scorers as `voxpop score` children). "
        "Numbers are from this one run; ratios matter more than absolutes on a shared 2-core machine.",
        "",
        *_earlier_phases(res),
    ]


def _earlier_phases(res: dict[str, Any]) -> list[str]:
    """A `--only` run keeps the other phases' results: say when and where each was measured."""
    earlier = {
        k: v for k, v in res.get("phases", {}).items() if v.get("status") == "ok" and v.get("date") != res["date"]
    }
    prev = res.get("previous_run")
    if not earlier and not prev:
        return []
    out = ["Sections of phases this command did not re-run keep the results of the run that measured them"]
    if prev:
        out[0] += f": `{prev['command']}`, {prev['date']} on {prev['cpu']}, unless listed here"
    out[0] += "."
    if earlier:
        rows = [[k, v.get("date", "-"), v.get("cpu", "-")] for k, v in earlier.items()]
        out += ["", _table(["phase", "measured", "on"], rows)]
    return [*out, ""]


def _headline(res: dict[str, Any]) -> list[str]:
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


def _encoders(res: dict[str, Any]) -> list[str]:
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


def _accuracy(res: dict[str, Any]) -> list[str]:
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


def _sweep(res: dict[str, Any]) -> list[str]:
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


def _compiled(res: dict[str, Any]) -> list[str]:
    return [
        *_compiled_section(res.get("compiled")),
    ]


def _latency(res: dict[str, Any]) -> list[str]:
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


def _cotenancy(res: dict[str, Any]) -> list[str]:
    ct = res["cotenancy"]
    rows = [
        [
            arm,
            ", ".join(map(str, a["quiet_posts_per_s"])),
            ", ".join(map(str, a["busy_posts_per_s"])),
            a["busy_over_quiet"],
        ]
        for arm, a in ct["arms"].items()
    ]
    return [
        "## A scorer beside a busy neighbour (co-tenancy)",
        "",
        f"One scorer process ({ct['precision']}) drains the same posts with the other core(s) quiet, then with "
        f"{ct['neighbours']} neighbour process(es) spinning on the CPU (the servers share the machine in both "
        "arms); runs alternate quiet, busy. Goal: busy >= 0.8x quiet for the default (one thread per process, "
        "OpenMP passive waiting).",
        "",
        _table(["scorer", "quiet posts/s", "busy posts/s", "busy / quiet"], rows),
        "",
    ]


def _naive(res: dict[str, Any]) -> list[str]:
    return [
        "## The naive pipeline",
        "",
        f"One message per poll, one inference per post, per-post Redis GET/SET of the user state, one INSERT "
        f"transaction per row, one offset commit per message: {res['naive']['posts_per_s']} posts/s over "
        f"{res['naive']['posts']} posts.",
        "",
    ]


def _profile(res: dict[str, Any]) -> list[str]:
    return [
        f"## Where a scorer's time goes (pyinstrument, in-process `Scorer.process`, batches of 64, "
        f"{res.get('profile_precision', 'fp32')})",
        "",
        _table(["stage", "% of time"], [[k, v] for k, v in res["profile_share_pct"].items()]),
        "",
        "Full profile: `profiles/scorer-profile.txt` beside this file (and `.html` where kept).",
        "",
    ]


def _memory(res: dict[str, Any]) -> list[str]:
    m = res["memory"]
    ragged, fixed = m["ragged"], m["fixed"]

    def growth(arm: dict[str, Any]) -> str:
        r = arm["rss_mb"]
        return f"{r[0]:.0f} -> {r[-1]:.0f} MB ({100 * (r[-1] / r[0] - 1):+.0f} %)"

    return [
        "## A scorer's memory under ragged batches (`scorer_fixed_shapes`)",
        "",
        f"One single-threaded process per arm, {res['memory_posts']} airline posts in batches of 1 to 64 "
        f"drawn at random (as a live stream's), {ragged['precision']}; resident memory read "
        f"{len(ragged['rss_mb'])} times after a warm-up. Fixed shapes pad every encoder call to a "
        "width that is a multiple of 16 tokens and 1, 2, 4 or a multiple of 8 rows.",
        "",
        _table(
            ["arm", "encoder call shapes met", "resident memory", "posts/s"],
            [
                ["exact padding", ragged["shapes"], growth(ragged), ragged["posts_per_s"]],
                ["fixed shapes", fixed["shapes"], growth(fixed), fixed["posts_per_s"]],
            ],
        ),
        "",
        f"Fixed shapes run at {fixed['posts_per_s'] / ragged['posts_per_s']:.2f}x the exact padding's rate "
        "(the arms run one after the other, so a busy neighbour can slow one arm only: the rate is a "
        "noisier reading than the memory). "
        "Readings in order: exact "
        + ", ".join(f"{r:.0f}" for r in ragged["rss_mb"])
        + "; fixed "
        + ", ".join(f"{r:.0f}" for r in fixed["rss_mb"])
        + " MB.",
        "",
    ]


def _scale(res: dict[str, Any]) -> list[str]:
    sc = res["scale"]
    tr, api, cap = sc.get("trends"), sc.get("api"), sc.get("capacity", {})
    m = sc["machine"]
    rows: list[list[object]] = []
    if "ingest" in sc:
        rows.append(["ingest -> broker (posts/s, one producer, acks=all)", sc["ingest"]["posts_per_s"], ""])
    streams = [(f"at {tr['firehose']['rate']:,} posts/s", tr["firehose"])] if tr and "firehose" in tr else []
    streams += [("30 days", tr)] if tr else []
    for label, st in streams:
        rows += [
            [f"trends, {label}: 1 worker (posts/s)", st["one"]["posts_per_s"], ">= 10,000"],
            [f"trends, {label}: 2 workers (posts/s)", st["two"]["posts_per_s"], ""],
            [f"trends, {label}: 2 workers / 1 worker", st["ratio"], ">= 1.7"],
        ]
    if api:
        rows += [
            [f"/api/trends p99 ms ({api['connections']} connections, 30 days, hourly)", api["p99_ms"], "<= 50"],
            ["/api/trends p50 ms / requests/s", f"{api['p50_ms']} / {api['requests_per_s']}", ""],
            [
                "/api/trends uncached (a new range), p50 / max ms",
                f"{api['uncached_p50_ms']} / {api['uncached_max_ms']}",
                "",
            ],
        ]
    out = [
        "## Scale (`voxpop bench scale`)",
        "",
        f"Measured {sc['date']} on {m['cpu']} ({m['cores']} cores). Command: `{sc['command']}`. "
        f"{sc['posts']:,} posts resampled from the real airline and SemEval streams (texts, labels, scores, "
        "airlines as watches; authors at the real stream's per-author frequencies; 30 days on the airline stream's "
        f"hours of day), generated in {sc['generate_seconds']} s. Trends workers are processes running the "
        "worker's batch path (parse posts.scored records, fold, close parts, merge) over "
        f"{PARTITIONS_NOTE} partitions keyed by author, batches of {tr['batch'] if tr else '-'}, timed until "
        "every window is closed and merged; the broker hop is measured by the ingest row. Two event-time "
        "densities of the same posts: squeezed to a firehose's rate (a window holds thousands of posts: the "
        "cost is per post) and spread over 30 days (a few posts per watch and minute: nearly every post opens "
        f"windows of its own, and the cost is per window{_windows_per_post(tr)}).",
        "",
        _table(["metric", "value", "goal"], rows),
        "",
    ]
    if api:
        st = api["store"]
        out += [
            f"Stored with COPY: {st['posts']:,} posts (posts, predictions, memberships, authors) in {st['seconds']} s "
            f"({st['rows_per_s']:,} rows/s). The trends response: {api['series']} watches x "
            f"{api['points_per_series']} hourly points, {api['posts_in_range']:,} posts in range"
            + (f", {api['response_bytes']:,} bytes of JSON" if "response_bytes" in api else "")
            + f". Load from {api.get('client', 'python threads')} on the same machine "
            "(the server is one API process; wrk reads each gzip body to its last byte).",
            "",
        ]
    if cap:
        lines = [f"### A {cap['posts_per_s']:,} posts/s firehose", ""]
        if "ingest_pods" in cap:
            lines.append(
                f"- ingest: {cap['posts_per_s']:,} / {sc['ingest']['posts_per_s']:,} posts/s per producer "
                f"= **{cap['ingest_pods']}** pod(s)"
            )
        fastest = res.get("fastest_precision", "")
        per_pod = res.get("e2e_posts_per_s", {}).get(fastest)
        if per_pod:  # the stream bench's newest rate (its run may be newer than the scale run)
            cpu = res.get("machine", {}).get("cpu", "?")
            lines.append(
                f"- scorers: {cap['posts_per_s']:,} / {per_pod} posts/s per pod (`voxpop bench`'s end-to-end "
                f"rate, {fastest}, layout {res.get('e2e_layout', {}).get(fastest)}, on {cpu}"
                f"{'' if cpu == m['cpu'] else ', not the machine above'}) "
                f"= **{-(-cap['posts_per_s'] // int(per_pod))}** pods"
            )
        if "trends_workers" in cap:
            per_worker = tr.get("firehose", tr)["one"]["posts_per_s"]
            lines.append(
                f"- trends: {cap['posts_per_s']:,} / {per_worker:,} posts/s per worker at that density "
                f"= **{cap['trends_workers']}** worker(s) (posts.scored needs at least as many partitions)"
            )
        if "pg_bytes_per_day" in cap:
            tw_mb = cap["trend_windows_bytes_per_day_of_data"] / 1e6
            lines.append(
                f"- PostgreSQL: {cap['pg_bytes_per_post']:,} bytes per post (posts, predictions, memberships, "
                f"authors, with indexes) x {cap['posts_per_s']:,} x 86,400 = **{cap['pg_bytes_per_day'] / 1e9:.1f} GB "
                f"per day** before retention; trend windows add {tw_mb:.1f} MB "
                "per day of data at this stream's watches"
            )
        out += [*lines, ""]
    return out


def _windows_per_post(tr: dict[str, Any] | None) -> str:
    """ ", N closed windows per post" of the 30-day stream, where the run counted them."""
    one = (tr or {}).get("one", {})
    return f", {one['windows'] / one['posts']:.2f} closed windows per post" if "windows" in one else ""


PARTITIONS_NOTE = "4"

#: (title, renderer) in page order; a section whose phase did not run says so instead.
SECTIONS = (
    ("Headline ratios", _headline),
    ("Encoder ceilings", _encoders),
    ("Accuracy per precision", _accuracy),
    ("Batching policy and scorer processes", _sweep),
    ("Compiled encoder", _compiled),
    ("Latency from ingest to stored", _latency),
    ("A scorer beside a busy neighbour", _cotenancy),
    ("The naive pipeline", _naive),
    ("Where a scorer's time goes", _profile),
    ("A scorer's memory under ragged batches", _memory),
    ("Scale", _scale),
)


def _phases(res: dict[str, Any]) -> list[str]:
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


def render(res: dict[str, Any], out_dir: Path) -> None:
    """docs/performance.md from whatever phases finished (a crash or a failed phase keeps the rest)."""
    try:
        _plots(res, out_dir / "performance")
    except (KeyError, ValueError) as e:  # a phase the plots need did not finish
        log.warning("plots not drawn: %s missing", e)
    head = _header(res) if "machine" in res else ["# Performance", ""]  # only `voxpop bench scale` ran
    lines = [*head, *_phases(res)]
    for title, fn in SECTIONS:
        try:
            lines += fn(res)
        except (KeyError, TypeError, StopIteration) as e:
            lines += [f"## {title}", "", f"Not measured in this run (no `{e}`; see the phases above).", ""]
    (out_dir / "performance.md").write_text("\n".join(lines))
