"""Recount hourly windows from the stored posts: the source of truth a closed window must equal.

Used by the window tests and by `voxpop faults` to prove that kill -9, rebalances and replays
leave every closed hourly window exactly as a fresh count over `posts`/`predictions` says.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

RECOUNT_HOURLY_SQL = """
SELECT pw.watch_id, to_timestamp(floor(extract(epoch FROM p.created_at) / 3600) * 3600) AS window_start,
       count(*) AS n_posts, count(*) FILTER (WHERE pr.label = 'negative') AS n_negative,
       count(*) FILTER (WHERE pr.label = 'neutral') AS n_neutral,
       count(*) FILTER (WHERE pr.label = 'positive') AS n_positive,
       avg(pr.score) AS mean_score, count(DISTINCT p.author_id) AS unique_authors
FROM post_watches pw JOIN posts p ON p.id = pw.post_id JOIN predictions pr ON pr.post_id = p.id
GROUP BY 1, 2
"""
COUNTS = ("n_posts", "n_negative", "n_neutral", "n_positive", "unique_authors")


def recount_hourly(engine: Engine) -> dict[tuple[int, Any], dict[str, Any]]:
    with engine.connect() as c:
        return {(r["watch_id"], r["window_start"]): dict(r) for r in c.execute(text(RECOUNT_HOURLY_SQL)).mappings()}


def closed_windows(engine: Engine, size: str) -> dict[tuple[int, Any], dict[str, Any]]:
    with engine.connect() as c:
        rows = c.execute(text("SELECT * FROM trend_windows WHERE size = :s"), {"s": size}).mappings()
        return {(r["watch_id"], r["window_start"]): dict(r) for r in rows}


def closed_through(engine: Engine, source: str) -> datetime | None:
    """How far the trends worker reading `source` (a posts.scored topic) has closed windows."""
    with engine.connect() as c:
        return c.execute(
            text("SELECT closed_through FROM trend_progress WHERE source = :s"), {"s": source}
        ).scalar_one_or_none()


def hourly_mismatches(engine: Engine, through: datetime) -> tuple[int, list[str]]:
    """(windows checked, differences) for every hourly window that ends by `through`.

    A window that closed before some of its posts arrived counts them in `late_posts` and leaves
    its other columns as they were at the close: `late_explained` tells those apart.
    """
    expected = {k: v for k, v in recount_hourly(engine).items() if k[1] + timedelta(hours=1) <= through}
    got = closed_windows(engine, "1h")
    diffs = [f"{k}: missing" for k in expected.keys() - got.keys()]
    diffs += [f"{k}: not in the recount" for k in got.keys() - expected.keys() if k[1] + timedelta(hours=1) <= through]
    for k in expected.keys() & got.keys():
        e, g = expected[k], got[k]
        diffs += [f"{k} {col}: {g[col]} != {e[col]}" for col in COUNTS if g[col] != e[col]]
        if not _close(g["mean_score"], float(e["mean_score"]), 1e-9):
            diffs.append(f"{k} mean_score: {g['mean_score']} != {e['mean_score']}")
        if not _close(g["share_negative"], e["n_negative"] / e["n_posts"], 1e-12):
            diffs.append(f"{k} share_negative: {g['share_negative']}")
    return len(expected), diffs


def _close(got: float | None, want: float, tol: float) -> bool:
    return got is not None and abs(got - want) < tol


def late_explained(engine: Engine, through: datetime) -> int:
    """Closed hourly windows that differ from the recount only by the posts they counted as late."""
    expected = {k: v for k, v in recount_hourly(engine).items() if k[1] + timedelta(hours=1) <= through}
    got = closed_windows(engine, "1h")
    return sum(
        1
        for k, e in expected.items()
        if k in got and got[k]["n_posts"] != e["n_posts"] and got[k]["n_posts"] + got[k]["late_posts"] == e["n_posts"]
    )
