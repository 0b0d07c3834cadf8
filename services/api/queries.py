"""Read-side SQL of the API and reports: posts with their newest prediction, trends by date_bin,
author histories. Plain SQL (not ORM) because these are analytical queries over a few joins.

A post may carry predictions of several model versions; every query here uses the newest one
(``LATERAL ... ORDER BY scored_at DESC LIMIT 1``) so a re-score never double-counts a post.
Predictions of the tri-modal heads for audio/video posts (model_name ``av:<checkpoint>``) are
extra views of a post, never its primary prediction: they are left out of that choice and shown
alongside (``av_predictions``) with the modality that dominated. (The prefix is
``pipelines.av_heads.AV_PREFIX``, spelled out here so the API does not import the model stack.)
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import Integer, String

from pipelines.views import dominant_view

LATEST_PRED = """LEFT JOIN LATERAL (
    SELECT pr.model_name, pr.model_version, pr.label, pr.score, pr.probabilities, pr.emotion,
           pr.modality_weights, pr.user_prior_count, pr.scored_at, pr.reason, pr.reason_probability
    FROM predictions pr WHERE pr.post_id = p.id AND NOT starts_with(pr.model_name, 'av:')
    ORDER BY pr.scored_at DESC LIMIT 1) pr ON true"""
#: date_bin origin: a Monday at midnight UTC, so daily and weekly buckets line up with calendars
ORIGIN = datetime(2001, 1, 1, tzinfo=UTC)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
ORDERS = {
    "newest": ("p.created_at", "DESC"),
    "oldest": ("p.created_at", "ASC"),
    "most_negative": ("pr.score", "ASC"),
    "most_positive": ("pr.score", "DESC"),
}


class QueryError(ValueError):
    """A request the data cannot answer as asked (turned into a 400/422 by the API)."""


def parse_bucket(s: str) -> timedelta:
    """``"15m"``, ``"1h"``, ``"1d"``, ``"1w"`` -> timedelta (at least one second)."""
    s = s.strip()
    if len(s) < 2 or s[-1] not in _UNITS or not s[:-1].isdigit() or int(s[:-1]) <= 0:
        raise QueryError(f"bad bucket {s!r}: use <positive int><s|m|h|d|w>, e.g. 15m, 1h, 1d")
    n = int(s[:-1]) * _UNITS[s[-1]]
    if n > 366 * 86400:
        raise QueryError("bucket larger than a year")
    return timedelta(seconds=n)


def floor_time(t: datetime, step: timedelta) -> datetime:
    k = (t - ORIGIN) // step
    return ORIGIN + k * step


# --- posts ----------------------------------------------------------------------------------------
@dataclass
class PostFilter:
    watch_id: int | None = None
    label: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    author: str | None = None
    q: str | None = None
    search: str = "substring"
    modality: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    ids: list[str] | None = None


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _watch_join(f: PostFilter) -> str:
    """Filtering by watch joins post_watches (PK post, watch: one row per post) so the planner can use
    its (watch_id, created_at) index; an EXISTS here made ranged queries seconds slower."""
    return "JOIN post_watches pw ON pw.post_id = p.id AND pw.watch_id = :watch_id" if f.watch_id is not None else ""


def _where(f: PostFilter) -> tuple[list[str], dict[str, Any]]:
    w: list[str] = []
    p: dict[str, Any] = {}
    if f.watch_id is not None:
        p["watch_id"] = f.watch_id
        if f.since:
            w.append("pw.created_at >= :since")
        if f.until:
            w.append("pw.created_at < :until")
    if f.label:
        w.append("pr.label = :label")
        p["label"] = f.label
    if f.since:
        w.append("p.created_at >= :since")
        p["since"] = f.since
    if f.until:
        w.append("p.created_at < :until")
        p["until"] = f.until
    if f.author:
        w.append("(p.author_id = :author OR lower(a.handle) = lower(:author))")
        p["author"] = f.author
    if f.q:  # the post's own text or what was said in its audio (transcripts)
        if f.search == "words":
            w.append(
                "(to_tsvector('simple', p.text) @@ websearch_to_tsquery('simple', :q) OR EXISTS (SELECT 1 FROM "
                "transcripts t WHERE t.post_id = p.id AND to_tsvector('simple', t.text) @@ "
                "websearch_to_tsquery('simple', :q)))"
            )
            p["q"] = f.q
        else:
            w.append(
                "(p.text ILIKE :q ESCAPE '\\' OR EXISTS (SELECT 1 FROM transcripts t WHERE t.post_id = p.id "
                "AND t.text ILIKE :q ESCAPE '\\'))"
            )
            p["q"] = _like(f.q)
    if f.modality:
        w.append(":modality = ANY(p.modalities)")
        p["modality"] = f.modality
    if f.min_score is not None:
        w.append("pr.score >= :min_score")
        p["min_score"] = f.min_score
    if f.max_score is not None:
        w.append("pr.score <= :max_score")
        p["max_score"] = f.max_score
    if f.ids is not None:
        w.append("p.id = ANY(:ids)")
        p["ids"] = f.ids
    return w, p


def encode_cursor(order: str, key: Any, post_id: str) -> str:
    raw = json.dumps([order, key.isoformat() if isinstance(key, datetime) else key, post_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, order: str) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        o, key, pid = json.loads(raw)
        if o != order:
            raise QueryError(f"this cursor belongs to order={o!r}, not {order!r}")
        if order in ("newest", "oldest"):
            key = datetime.fromisoformat(key)
        else:
            key = float(key)
        if not isinstance(pid, str):
            raise ValueError
        return key, pid
    except QueryError:
        raise
    except Exception:
        raise QueryError("malformed cursor: pass back next_cursor exactly as returned") from None


def list_posts(
    conn: Connection, f: PostFilter, order: str = "newest", limit: int = 50, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One keyset page of posts (with newest prediction, media and watch ids)."""
    col, direction = ORDERS[order]
    where, params = _where(f)
    if order in ("most_negative", "most_positive"):
        where.append("pr.score IS NOT NULL")
    if cursor:
        key, pid = decode_cursor(cursor, order)
        cmp = "<" if direction == "DESC" else ">"
        where.append(f"({col}, p.id) {cmp} (:ck, :cid)")
        params.update(ck=key, cid=pid)
    sql = f"""SELECT p.*, a.handle AS author_handle, pr.model_name, pr.model_version, pr.label, pr.score,
                     pr.probabilities, pr.emotion, pr.modality_weights, pr.user_prior_count, pr.scored_at,
                     pr.reason, pr.reason_probability
              FROM posts p {_watch_join(f)} JOIN authors a ON a.id = p.author_id {LATEST_PRED}
              {"WHERE " + " AND ".join(where) if where else ""}
              ORDER BY {col} {direction}, p.id {direction} LIMIT :lim"""
    stmt = text(sql)
    if "ids" in params:
        stmt = stmt.bindparams(bindparam("ids", type_=ARRAY(String)))
    rows = [dict(r) for r in conn.execute(stmt, {**params, "lim": limit + 1}).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    attach_media_and_watches(conn, rows)
    nxt = None
    if more and rows:
        last = rows[-1]
        nxt = encode_cursor(order, last["created_at"] if order in ("newest", "oldest") else last["score"], last["id"])
    return rows, nxt


def attach_media_and_watches(conn: Connection, rows: list[dict[str, Any]]) -> None:
    ids = [r["id"] for r in rows]
    media: dict[str, list[dict[str, Any]]] = defaultdict(list)
    watches: dict[str, list[int]] = defaultdict(list)
    av: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if ids:
        p = {"ids": ids}
        for m in conn.execute(
            text("SELECT * FROM media WHERE post_id = ANY(:ids) ORDER BY post_id, idx").bindparams(
                bindparam("ids", type_=ARRAY(String))
            ),
            p,
        ).mappings():
            media[m["post_id"]].append(dict(m))
        for w in conn.execute(
            text("SELECT post_id, watch_id FROM post_watches WHERE post_id = ANY(:ids) ORDER BY watch_id").bindparams(
                bindparam("ids", type_=ARRAY(String))
            ),
            p,
        ):
            watches[w[0]].append(w[1])
        av_sql = text(
            "SELECT * FROM predictions WHERE post_id = ANY(:ids) AND starts_with(model_name, 'av:') "
            "ORDER BY post_id, model_name"
        ).bindparams(bindparam("ids", type_=ARRAY(String)))
        for pr in conn.execute(av_sql, p).mappings():
            av[pr["post_id"]].append(dict(pr))
        t_sql = text("SELECT * FROM transcripts WHERE post_id = ANY(:ids)").bindparams(
            bindparam("ids", type_=ARRAY(String))
        )
        spoken = {t["post_id"]: dict(t) for t in conn.execute(t_sql, p).mappings()}
    else:
        spoken = {}
    for r in rows:
        r["media"] = media.get(r["id"], [])
        r["watches"] = watches.get(r["id"], [])
        r["av_predictions"] = av.get(r["id"], [])
        r["transcript"] = spoken.get(r["id"])


def get_post(conn: Connection, post_id: str) -> dict[str, Any] | None:
    rows, _ = list_posts(conn, PostFilter(ids=[post_id]), limit=1)
    return rows[0] if rows else None


def dominant(weights: dict[str, float] | None) -> str | None:
    if not weights:
        return None
    return max(weights.items(), key=lambda kv: kv[1])[0]


def prediction_out(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "model_name": r["model_name"],
        "model_version": r["model_version"],
        "label": r["label"],
        "score": r["score"],
        "probabilities": r["probabilities"] or {},
        "emotion": r["emotion"],
        "modality_weights": r["modality_weights"] or {},
        "dominant_modality": dominant(r["modality_weights"]),
        "user_prior_count": r["user_prior_count"] or 0,
        "scored_at": r["scored_at"],
        "reason": r.get("reason"),
        "reason_probability": r.get("reason_probability"),
    }


def post_out(r: dict[str, Any]) -> dict[str, Any]:
    """Row from :func:`list_posts` -> the ``PostOut`` shape."""
    pred = prediction_out(r) if r.get("label") is not None else None
    return {
        "id": r["id"],
        "platform": r["platform"],
        "author": {"id": r["author_id"], "handle": r["author_handle"]},
        "text": r["text"],
        "lang": r["lang"],
        "created_at": r["created_at"],
        "thread_id": r["thread_id"],
        "reply_to": r["reply_to"],
        "modalities": list(r["modalities"] or []),
        "watches": r["watches"],
        "media": [
            {
                "idx": m["idx"],
                "kind": m["kind"],
                "mime": m["mime"],
                "bytes": m["bytes"],
                "status": m["status"],
                "url": f"/api/posts/{r['id']}/media/{m['idx']}",
            }
            for m in r["media"]
        ],
        "prediction": pred,
        "av_predictions": [prediction_out(a) for a in r.get("av_predictions", [])],
        "transcript": transcript_out(r.get("transcript")),
        "dominant_view": dominant_view(
            r.get("modality_weights") if pred else None,
            [a["modality_weights"] or {} for a in r.get("av_predictions", [])],
        ),
    }


def transcript_out(t: dict[str, Any] | None) -> dict[str, Any] | None:
    if t is None:
        return None
    keys = ("text", "language", "language_probability", "status", "model", "segments", "audio_s", "speech_s", "asr_ms")
    return {k: t[k] for k in keys}


# --- trends ---------------------------------------------------------------------------------------
def trends(
    conn: Connection, watches: dict[int, str], since: datetime, until: datetime, step: timedelta
) -> list[dict[str, Any]]:
    """Per watch and bucket: counts per label, mean score, shares, unique authors, share of voice,
    from the stored predictions (reports, which need every post of a closed period; the API reads
    the trend windows instead: :func:`trends_from_windows`).

    One pass with GROUPING SETS: (watch, bucket, label) rows give the label mix, (watch, bucket)
    rows the distinct-author counts that cannot be summed from the finer rows.
    """
    ids = list(watches)
    sql = text(f"""
        WITH base AS (
          SELECT pw.watch_id, date_bin(:step, p.created_at, :origin) AS t, pr.label, pr.score, p.author_id
          FROM post_watches pw JOIN posts p ON p.id = pw.post_id {LATEST_PRED.replace("LEFT JOIN", "JOIN")}
          WHERE pw.watch_id = ANY(:w) AND pw.created_at >= :since AND pw.created_at < :until)
        SELECT watch_id, t, label, grouping(label) AS g, count(*) AS n, sum(score) AS s,
               count(DISTINCT author_id) AS ua
        FROM base GROUP BY GROUPING SETS ((watch_id, t, label), (watch_id, t))""").bindparams(
        bindparam("w", type_=ARRAY(Integer))
    )
    rows = conn.execute(sql, {"step": step, "origin": ORIGIN, "w": ids, "since": since, "until": until}).mappings()
    cells: dict[tuple[int, datetime], dict[str, Any]] = {}
    totals_sql = text(f"""
        SELECT pw.watch_id, count(*) AS n, avg(pr.score) AS mean,
               avg((pr.label = 'negative')::int) AS neg, count(DISTINCT p.author_id) AS ua
        FROM post_watches pw JOIN posts p ON p.id = pw.post_id {LATEST_PRED.replace("LEFT JOIN", "JOIN")}
        WHERE pw.watch_id = ANY(:w) AND pw.created_at >= :since AND pw.created_at < :until
        GROUP BY pw.watch_id""").bindparams(bindparam("w", type_=ARRAY(Integer)))
    totals = {r["watch_id"]: r for r in conn.execute(totals_sql, {"w": ids, "since": since, "until": until}).mappings()}
    for r in rows:
        c = cells.setdefault((r["watch_id"], r["t"]), {"counts": {}, "n": 0, "s": 0.0, "ua": 0})
        if r["g"]:
            c.update(n=r["n"], s=float(r["s"] or 0.0), ua=r["ua"])
        else:
            c["counts"][r["label"]] = r["n"]
    return _series(watches, cells, totals, since, until, step)


def _series(
    watches: dict[int, str],
    cells: dict[tuple[int, datetime], dict[str, Any]],
    totals: dict[int, Any],
    since: datetime,
    until: datetime,
    step: timedelta,
) -> list[dict[str, Any]]:
    """The response's series from per (watch, bucket) cells ({counts, n, s = score sum, ua})."""
    starts = []
    t = floor_time(since, step)
    while t < until:
        starts.append(t)
        t += step
    all_n: dict[datetime, int] = defaultdict(int)
    for (_, t), c in cells.items():
        all_n[t] += c["n"]
    out = []
    for wid, name in watches.items():
        pts = []
        for t in starts:
            cell = cells.get((wid, t))
            n = cell["n"] if cell else 0
            counts = {lab: 0 for lab in ("negative", "neutral", "positive")}
            counts.update(cell["counts"] if cell else {})
            pts.append(
                {
                    "t": t,
                    "n": n,
                    "counts": counts,
                    "mean_score": cell["s"] / n if cell and n else None,
                    "share_negative": counts["negative"] / n if n else None,
                    "share_positive": counts["positive"] / n if n else None,
                    "unique_authors": cell["ua"] if cell else 0,
                    "share_of_voice": n / all_n[t] if all_n.get(t) else None,
                }
            )
        tot = totals.get(wid)
        out.append(
            {
                "watch_id": wid,
                "watch_name": name,
                "total": tot["n"] if tot else 0,
                "mean_score": float(tot["mean"]) if tot and tot["mean"] is not None else None,
                "share_negative": float(tot["neg"]) if tot and tot["neg"] is not None else None,
                "unique_authors": tot["ua"] if tot else 0,
                "points": pts,
            }
        )
    return out


# --- trends from the trend windows (the API: aggregates only, never `predictions`) -------------
_WINDOW_CELLS_SQL = """
SELECT watch_id, date_bin(:step, window_start, :origin) AS t, sum(n_posts) AS n, sum(n_negative) AS neg,
       sum(n_neutral) AS neu, sum(n_positive) AS pos, sum(mean_score * n_posts) AS s, sum(unique_authors) AS ua
FROM trend_windows
WHERE size = :size AND watch_id = ANY(:w) AND window_start >= :since
  AND window_start < least(:until, CAST(:open_from AS timestamptz))
GROUP BY 1, 2"""

# the windows still open: their members, from the start of the first open window on, those on time
# for their window (as its close will count them: a partition may have closed its part already)
_OPEN_CELLS_SQL = """
SELECT watch_id, date_bin(:step, created_at, :origin) AS t, count(*) AS n,
       count(*) FILTER (WHERE label = 'negative') AS neg, count(*) FILTER (WHERE label = 'neutral') AS neu,
       count(*) FILTER (WHERE label = 'positive') AS pos, sum(score) AS s, count(DISTINCT author_id) AS ua
FROM trend_members
WHERE watch_id = ANY(:w) AND created_at >= greatest(:since, CAST(:open_from AS timestamptz)) AND created_at < :until
  AND (arrival_wm IS NULL OR arrival_wm < date_bin(:size_step, created_at, :origin) + :size_step)
GROUP BY 1, 2"""


def window_extent(
    conn: Connection, watch_ids: list[int], size: str, open_from: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """First window start and newest counted instant of these watches (index probes per watch):
    closed windows of this size, then the open windows' members from ``open_from`` on."""
    r = conn.execute(
        text("""SELECT min(lo), max(hi), max(newest) FROM unnest(CAST(:w AS int[])) AS u(w),
                LATERAL (SELECT min(window_start) AS lo, max(window_end) AS hi FROM trend_windows t
                         WHERE t.watch_id = u.w AND t.size = :size) e,
                LATERAL (SELECT max(created_at) AS newest FROM trend_members m
                         WHERE m.watch_id = u.w AND m.created_at >= CAST(:open_from AS timestamptz)) o"""),
        {"w": watch_ids, "size": size, "open_from": open_from or ORIGIN},
    ).one()
    lo, hi, newest = r
    if newest is not None:
        hi = max(hi, newest + timedelta(microseconds=1)) if hi else newest + timedelta(microseconds=1)
    if lo is None and newest is not None:  # nothing closed yet
        lo = conn.execute(
            text("SELECT min(created_at) FROM trend_members WHERE watch_id = ANY(:w)").bindparams(
                bindparam("w", type_=ARRAY(Integer))
            ),
            {"w": watch_ids},
        ).scalar()
    return lo, hi


def trends_from_windows(
    conn: Connection,
    watches: dict[int, str],
    since: datetime,
    until: datetime,
    step: timedelta,
    size: str,
    open_from: datetime | None,
) -> list[dict[str, Any]]:
    """Like :func:`trends`, summed from the closed windows of one stored size that divides the
    bucket (those starting before ``open_from``), plus the members of the windows still open
    (from ``open_from`` on; every member when nothing is closed yet).

    A bucket's distinct authors are the sum of its windows' (exact where bucket = window size);
    a series' are the sum over its buckets.
    """
    params = {
        "step": step,
        "origin": ORIGIN,
        "w": list(watches),
        "since": since,
        "until": until,
        "size": size,
        "size_step": parse_bucket(size),
        "open_from": open_from,
    }
    cells: dict[tuple[int, datetime], dict[str, Any]] = {}
    for sql in (_WINDOW_CELLS_SQL, _OPEN_CELLS_SQL):
        rows = conn.execute(text(sql).bindparams(bindparam("w", type_=ARRAY(Integer))), params).mappings()
        for r in rows:
            c = cells.setdefault(
                (r["watch_id"], r["t"]),
                {"counts": {"negative": 0, "neutral": 0, "positive": 0}, "n": 0, "s": 0.0, "ua": 0},
            )
            c["n"] += int(r["n"])
            c["s"] += float(r["s"] or 0)
            c["ua"] += int(r["ua"])
            for k, col in (("negative", "neg"), ("neutral", "neu"), ("positive", "pos")):
                c["counts"][k] += int(r[col])
    totals: dict[int, dict[str, Any]] = {}
    for (wid, _), c in cells.items():
        tot = totals.setdefault(wid, {"n": 0, "s": 0.0, "negn": 0, "ua": 0})
        tot["n"] += c["n"]
        tot["s"] += c["s"]
        tot["negn"] += c["counts"]["negative"]
        tot["ua"] += c["ua"]
    for tot in totals.values():
        tot["mean"] = tot["s"] / tot["n"] if tot["n"] else None
        tot["neg"] = tot["negn"] / tot["n"] if tot["n"] else None
    return _series(watches, cells, totals, since, until, step)


# --- authors --------------------------------------------------------------------------------------
def top_authors(
    conn: Connection, watch_id: int | None, since: datetime | None, until: datetime | None, sort: str, limit: int
) -> list[dict[str, Any]]:
    f = PostFilter(watch_id=watch_id, since=since, until=until)
    where, params = _where(f)
    order = {
        "posts": "posts DESC",
        "negative": "share_negative DESC NULLS LAST, posts DESC",
        "positive": "mean_score DESC NULLS LAST, posts DESC",
    }[sort]
    sql = text(f"""SELECT a.id, a.handle, count(*) AS posts, avg(pr.score) AS mean_score,
                          avg((pr.label = 'negative')::int)::float AS share_negative,
                          max(p.created_at) AS last_post_at
                   FROM posts p {_watch_join(f)} JOIN authors a ON a.id = p.author_id {LATEST_PRED}
                   {"WHERE " + " AND ".join(where) if where else ""}
                   GROUP BY a.id, a.handle ORDER BY {order}, a.id LIMIT :lim""")
    return [dict(r) for r in conn.execute(sql, {**params, "lim": limit}).mappings()]


def author_detail(conn: Connection, author_id: str, limit: int) -> dict[str, Any] | None:
    a = (
        conn.execute(
            text("SELECT * FROM authors WHERE id = :a OR lower(handle) = lower(:a) ORDER BY (id = :a) DESC LIMIT 1"),
            {"a": author_id},
        )
        .mappings()
        .first()
    )
    if a is None:
        return None
    rows = (
        conn.execute(
            text(f"""
        SELECT * FROM (
          SELECT p.id AS post_id, p.created_at, pr.label, pr.score, pr.user_prior_count, left(p.text, 280) AS text,
                 avg(pr.score) OVER (ORDER BY p.created_at, p.id) AS running_mean
          FROM posts p {LATEST_PRED.replace("LEFT JOIN", "JOIN")} WHERE p.author_id = :a
        ) h ORDER BY created_at DESC, post_id DESC LIMIT :lim"""),
            {"a": a["id"], "lim": limit},
        )
        .mappings()
        .all()
    )
    hist = [dict(h) for h in reversed(rows)]
    agg = (
        conn.execute(
            text(f"""SELECT pr.label, count(*) AS n, sum(pr.score) AS s FROM posts p
                                {LATEST_PRED.replace("LEFT JOIN", "JOIN")} WHERE p.author_id = :a GROUP BY pr.label"""),
            {"a": a["id"]},
        )
        .mappings()
        .all()
    )
    n = sum(r["n"] for r in agg)
    return {
        **dict(a),
        "mean_score": (sum(float(r["s"]) for r in agg) / n) if n else None,
        "label_counts": {r["label"]: r["n"] for r in agg},
        "history": hist,
    }
