"""Read endpoints: posts (filters, keyset pages), media bytes, trends, windows, authors, overview."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from pipelines.trends.windows import parse_specs
from services.api import queries as Q
from services.api import schemas as S
from services.api.deps import AppState, IdQuery, Reader, State
from services.storage import redis_keys as rk
from services.storage.redis_keys import KEYS
from services.storage.redis_stats import as_text

router = APIRouter(prefix="/api")
NOT_FOUND: S.Responses = {404: {"model": S.ErrorOut, "description": "no such object"}}
BAD: S.Responses = {400: {"model": S.ErrorOut, "description": "the query cannot be answered as asked"}}
Since = Annotated[datetime | None, Query(description="inclusive lower bound of created_at (ISO 8601)")]
Until = Annotated[datetime | None, Query(description="exclusive upper bound of created_at (ISO 8601)")]
Text = Annotated[str | None, Query(max_length=300, pattern=r"^[^\x00]*$")]


def _aware(*ts: datetime | None) -> None:
    for t in ts:
        if t is not None and t.tzinfo is None:
            raise HTTPException(400, "timestamps must carry a timezone (ISO 8601 with offset or Z)")


def _limit(st: AppState, limit: int) -> int:
    return min(limit, st.api.max_page)


@router.get("/posts", response_model=S.PostPage, tags=["posts"], responses=BAD)
def list_posts(
    st: State,
    _: Reader,
    watch_id: IdQuery = None,
    label: Annotated[S.Label | None, Query()] = None,
    since: Since = None,
    until: Until = None,
    author: Annotated[
        str | None, Query(max_length=300, pattern=r"^[^\x00]*$", description="author id or handle")
    ] = None,
    q: Annotated[str | None, Query(max_length=300, pattern=r"^[^\x00]*$", description="text search")] = None,
    search: Annotated[
        Literal["substring", "words"],
        Query(description="substring: case-insensitive ILIKE; words: PostgreSQL full text (websearch syntax)"),
    ] = "substring",
    modality: Annotated[S.Modality | None, Query()] = None,
    min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
    max_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
    order: Annotated[Literal["newest", "oldest", "most_negative", "most_positive"], Query()] = "newest",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> dict[str, Any]:
    """Posts with their newest prediction; keyset pagination through ``next_cursor``."""
    _aware(since, until)
    f = Q.PostFilter(
        watch_id=watch_id,
        label=label,
        since=since,
        until=until,
        author=author,
        q=q,
        search=search,
        modality=modality,
        min_score=min_score,
        max_score=max_score,
    )
    lim = _limit(st, limit)
    try:
        with st.engine.connect() as conn:
            rows, nxt = Q.list_posts(conn, f, order, lim, cursor)
    except Q.QueryError as e:
        raise HTTPException(400, str(e)) from None
    return {"items": [Q.post_out(r) for r in rows], "next_cursor": nxt, "limit": lim}


# Post ids are `platform:native_id`, and native ids may hold "/" (URLs, AT-URIs): the routes take
# the rest of the path, the media route first so ".../media/0" is never read as an id.
PostId = Annotated[str, PathParam(max_length=300, pattern=r"^[^\x00]+$")]


@router.get(
    "/posts/{post_id:path}/media/{idx}",
    tags=["posts"],
    response_class=Response,
    responses={
        200: {"content": {"image/*": {}, "application/octet-stream": {}}, "description": "the media bytes"},
        404: {"model": S.ErrorOut, "description": "no such media, or it cannot be read"},
    },
)
def get_media(post_id: PostId, idx: Annotated[int, PathParam(ge=0, le=15)], st: State, _: Reader) -> Response:
    """The post's media through the scorer's limits (allowed roots, size cap, timeout, no private hosts)."""
    from PIL import Image, UnidentifiedImageError

    from services.scorer.media import MediaError, MediaPolicy, fetch_bytes

    with st.engine.connect() as conn:
        m = (
            conn.execute(text("SELECT * FROM media WHERE post_id = :p AND idx = :i"), {"p": post_id, "i": idx})
            .mappings()
            .first()
        )
    if m is None:
        raise HTTPException(404, f"post {post_id} has no media #{idx}")
    s = st.settings
    roots = tuple(Path(p) for p in s.media_allowed_roots) or (Path(s.data_dir),)
    policy = MediaPolicy(s.media_max_bytes, s.media_timeout_s, roots, st.api.media_allow_private_hosts)
    try:
        data = fetch_bytes(m["uri"], policy)
    except MediaError as e:
        raise HTTPException(404, f"media unavailable: {e}") from None
    mime = m["mime"] or "application/octet-stream"
    if m["kind"] == "image":
        try:
            fmt = Image.open(io.BytesIO(data)).format
        except (UnidentifiedImageError, OSError):
            raise HTTPException(404, "media unavailable: not a decodable image") from None
        mime = Image.MIME.get(fmt or "", "application/octet-stream")
    return Response(
        data,
        media_type=mime,
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
            "Cache-Control": "private, max-age=3600",
        },
    )


# --- trends ---------------------------------------------------------------------------------------
def _watches(st: AppState, ids: list[int] | None) -> dict[int, str]:
    with st.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, name FROM watches ORDER BY id")).all()
    all_w = {r[0]: r[1] for r in rows}
    if not ids:
        return all_w
    missing = [i for i in ids if i not in all_w]
    if missing:
        raise HTTPException(404, f"watch(es) not found: {missing}")
    return {i: all_w[i] for i in dict.fromkeys(ids)}


@router.get("/posts/{post_id:path}", response_model=S.PostOut, tags=["posts"], responses=NOT_FOUND)
def get_post(post_id: PostId, st: State, _: Reader) -> dict[str, Any]:
    with st.engine.connect() as conn:
        r = Q.get_post(conn, post_id)
    if r is None:
        raise HTTPException(404, f"post {post_id} not found")
    return Q.post_out(r)


def _stored_size(st: AppState, step: timedelta) -> str:
    """The coarsest tumbling window size the trends app stores that divides the bucket."""
    sizes = [sp for sp in parse_specs(st.settings.trends.windows) if sp.size_s == sp.step_s]
    fits = [sp for sp in sizes if step.total_seconds() % sp.size_s == 0]
    if not fits:
        stored = ", ".join(sp.name for sp in sizes)
        raise HTTPException(400, f"bucket must be a multiple of a stored window size ({stored})")
    return max(fits, key=lambda sp: sp.size_s).name


@dataclass(frozen=True)
class _Body:
    """A finished JSON body, and the same gzip-compressed once (a month of hourly points for
    every watch is most of a megabyte: sending it, not computing it, is what costs)."""

    raw: bytes
    gz: bytes

    @classmethod
    def of(cls, raw: bytes) -> _Body:
        return cls(raw, gzip.compress(raw, compresslevel=6))

    def response(self, request: Request) -> Response:
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(
                self.gz,
                media_type="application/json",
                headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
            )
        return Response(self.raw, media_type="application/json", headers={"Vary": "Accept-Encoding"})


class _ResponseCache:
    """Finished /api/trends bodies, keyed by the query and the data version they were built on: a
    hit is valid until the trends app closes a window or folds more posts."""

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[Any, ...], _Body] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> _Body | None:
        with self.lock:
            body = self.entries.get(key)
            if body is not None:
                self.entries.move_to_end(key)
            return body

    def put(self, key: tuple[Any, ...], body: _Body, limit: int) -> None:
        with self.lock:
            self.entries[key] = body
            while len(self.entries) > limit:
                self.entries.popitem(last=False)


@dataclass(frozen=True)
class _DataVersion:
    """What a cached /api/trends body depends on, read at most once per ``api.trends_fresh_s``:
    the merged point, the last folded batch and the watch list. A cache hit then costs no
    PostgreSQL round trip and no thread hop, which is what keeps a busy dashboard's tail short."""

    read_at: float
    merged: datetime | None
    folded: datetime | None
    watches: dict[int, str]

    @classmethod
    def read(cls, st: AppState) -> _DataVersion:
        with st.engine.connect() as conn:
            merged, folded = conn.execute(
                text(
                    "SELECT (SELECT max(closed_through) FROM trend_progress), "
                    "(SELECT max(updated_at) FROM trend_watermarks)"
                )
            ).one()
            rows = conn.execute(text("SELECT id, name FROM watches ORDER BY id")).all()
        return cls(time.monotonic(), merged, folded, {r[0]: r[1] for r in rows})

    def pick(self, ids: list[int] | None) -> dict[int, str]:
        if not ids:
            return self.watches
        missing = [i for i in ids if i not in self.watches]
        if missing:
            raise HTTPException(404, f"watch(es) not found: {missing}")
        return {i: self.watches[i] for i in dict.fromkeys(ids)}


async def _data_version(st: AppState) -> _DataVersion:
    """The newest reading, shared by every request of this app. One request reads it again when it
    is stale; the others meanwhile answer from the last reading (with ``trends_fresh_s`` at 0 every
    request waits for its own): a burst must not take a PostgreSQL connection per request."""
    fresh_s = st.api.trends_fresh_s
    ver: _DataVersion | None = st.memo.get("trends_version")
    if ver is not None and time.monotonic() - ver.read_at < fresh_s:
        return ver
    lock: asyncio.Lock = st.memo.setdefault("trends_version_lock", asyncio.Lock())
    if ver is not None and fresh_s > 0 and lock.locked():
        return ver
    async with lock:
        ver = st.memo.get("trends_version")
        if ver is None or time.monotonic() - ver.read_at >= fresh_s:
            ver = st.memo["trends_version"] = await run_in_threadpool(_DataVersion.read, st)
    return ver


@router.get("/trends", response_model=S.TrendsOut, tags=["trends"], responses=BAD | NOT_FOUND)
async def get_trends(
    request: Request,
    st: State,
    _: Reader,
    watch_id: Annotated[
        list[Annotated[int, Query(ge=1, le=2_147_483_647)]] | None,
        Query(max_length=50, description="repeat for several; default: every watch"),
    ] = None,
    bucket: Annotated[
        str, Query(max_length=8, description="bucket width, a multiple of a stored window size: 15m, 1h, 1d, 1w ...")
    ] = "1h",
    since: Since = None,
    until: Until = None,
    days: Annotated[int, Query(ge=1, le=3660, description="range length when `since` is omitted")] = 7,
) -> Response:
    """Any bucket width over any range from the trends app's aggregates, never from the stored
    predictions: the closed windows (``trend_windows``, the coarsest stored size that divides the
    bucket) and, for the windows still open, their members (``trend_members`` from the merged
    point on: at most the allowed lateness plus a window's worth of posts). A year answers as fast
    as a week.

    With no range: the last ``days`` up to the newest counted post of these watches (data time, so
    replays of old streams show their own days), starting no earlier than their first window.
    A post that arrived after its window closed is counted in the window's ``late_posts``, not here.
    Answers may trail the trends app by up to ``VOXPOP_API_TRENDS_FRESH_S``.
    """
    _aware(since, until)
    try:
        step = Q.parse_bucket(bucket)
    except Q.QueryError as e:
        raise HTTPException(400, str(e)) from None
    size = _stored_size(st, step)
    ver = await _data_version(st)
    watches = ver.pick(watch_id)
    key = (tuple(watches), bucket, since, until, days, ver.merged, ver.folded)  # stale once a batch is folded
    cache: _ResponseCache = st.memo.setdefault("trends_bodies", _ResponseCache())
    hit = cache.get(key)
    if hit is None:  # built once per key: the requests that miss together wait for the one build
        lock = st.memo.setdefault("trends_builds", weakref.WeakValueDictionary()).setdefault(key, asyncio.Lock())
        async with lock:
            hit = cache.get(key)
            if hit is None:
                hit = await run_in_threadpool(_trends_body, st, watches, bucket, size, since, until, days, ver.merged)
                cache.put(key, hit, st.api.trends_cache_entries)
    return hit.response(request)


def _trends_body(
    st: AppState,
    watches: dict[int, str],
    bucket: str,
    size: str,
    since: datetime | None,
    until: datetime | None,
    days: int,
    merged: datetime | None,
) -> _Body:
    step = Q.parse_bucket(bucket)
    open_from = Q.floor_time(merged, Q.parse_bucket(size)) if merged is not None else None
    with st.engine.connect() as conn:
        if until is None or since is None:
            lo, hi = Q.window_extent(conn, list(watches), size, open_from) if watches else (None, None)
            hi = hi or datetime.now(UTC)
            until = until or Q.floor_time(hi - timedelta(microseconds=1), step) + step
            span = timedelta(days=days)
            since = since or max(until - span, Q.floor_time(lo or until - span, step))
        if until <= since:
            raise HTTPException(400, "until must be after since")
        n = (until - Q.floor_time(since, step)) / step
        if n > st.api.max_buckets:
            raise HTTPException(400, f"{int(n)} buckets asked; at most {st.api.max_buckets}: widen the bucket")
        series = Q.trends_from_windows(conn, watches, since, until, step, size, open_from) if watches else []
    out = S.TrendsOut.model_validate({"bucket": bucket, "since": since, "until": until, "series": series})
    return _Body.of(out.model_dump_json().encode())


@router.get("/trends/windows", response_model=list[S.WindowOut], tags=["trends"])
def closed_windows(
    st: State,
    _: Reader,
    watch_id: IdQuery = None,
    size: Annotated[str, Query(max_length=16, pattern=r"^[^\x00]*$")] = "1h",
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    """Closed windows as the trends app wrote them (the numbers alert rules were evaluated on)."""
    _aware(since, until)
    where, p = ["size = :size"], {"size": size, "lim": limit}
    if watch_id is not None:
        where.append("watch_id = :w")
        p["w"] = watch_id
    if since:
        where.append("window_start >= :since")
        p["since"] = since
    if until:
        where.append("window_start < :until")
        p["until"] = until
    with st.engine.connect() as conn:
        rows = (
            conn.execute(
                text(
                    f"SELECT * FROM (SELECT * FROM trend_windows WHERE {' AND '.join(where)} "
                    "ORDER BY window_start DESC, watch_id LIMIT :lim) w ORDER BY window_start, watch_id"
                ),
                p,
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


@router.get("/trends/live", response_model=S.LiveOut, tags=["trends"])
def live_windows(
    st: State, _: Reader, size: Annotated[str, Query(max_length=16, pattern=r"^[^\x00:*?\[\]]*$")] = "1h"
) -> dict[str, Any]:
    """The newest open window per watch, from the trends app's live snapshots in Redis."""
    ids = list(_watches(st, None))
    vals = st.redis.mget([rk.trend_live(w, size) for w in ids]) if ids else []
    wins = []
    for v in vals:
        if v:
            d = json.loads(v)
            d.setdefault("size", size)
            d["open"] = True
            wins.append(
                {k: d.get(k) for k in S.WindowOut.model_fields if k in d}
                | {
                    "top_negative": d.get("top_negative") or [],
                    "top_positive": d.get("top_positive") or [],
                    "late_posts": d.get("late_posts") or 0,
                }
            )
    wm = st.redis.get(rk.TRENDS_WATERMARK)
    out = []
    for w in wins:
        try:
            out.append(S.WindowOut.model_validate(w).model_dump())
        except ValueError:
            continue  # a snapshot of another shape: skip rather than fail the dashboard
    return {"watermark": as_text(wm) if wm else None, "windows": out}


# --- authors --------------------------------------------------------------------------------------
@router.get("/authors", response_model=list[S.AuthorSummary], tags=["authors"])
def list_authors(
    st: State,
    _: Reader,
    watch_id: IdQuery = None,
    since: Since = None,
    until: Until = None,
    sort: Annotated[Literal["posts", "negative", "positive"], Query()] = "posts",
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> list[dict[str, Any]]:
    """Most active (or most negative / positive) authors in a range."""
    _aware(since, until)
    with st.engine.connect() as conn:
        return Q.top_authors(conn, watch_id, since, until, sort, limit)


@router.get("/authors/{author_id}", response_model=S.AuthorDetail, tags=["authors"], responses=NOT_FOUND)
def get_author(
    author_id: Annotated[str, PathParam(max_length=300, pattern=r"^[^\x00/]+$")],
    st: State,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=2000)] = 500,
) -> dict[str, Any]:
    """Sentiment history of one author: each post's score, the n behind its per-user term, and the
    author's running mean score."""
    with st.engine.connect() as conn:
        d = Q.author_detail(conn, author_id, limit)
    if d is None:
        raise HTTPException(404, f"author {author_id} not found")
    return d


# --- overview -------------------------------------------------------------------------------------
COUNTERS = ("ingest_accepted", "ingest_duplicates", "ingest_dlq", "scored", "scorer_batches")


@router.get("/overview", response_model=S.Overview, tags=["overview"])
def overview(st: State, _: Reader) -> dict[str, Any]:
    with st.engine.connect() as conn:
        r = (
            conn.execute(
                text("""SELECT (SELECT count(*) FROM posts) AS posts,
                                        (SELECT count(*) FROM authors) AS authors,
                                        (SELECT count(*) FROM watches WHERE active) AS watches,
                                        (SELECT count(*) FROM alert_rule_state WHERE firing) AS firing,
                                        (SELECT max(created_at) FROM posts) AS latest""")
            )
            .mappings()
            .one()
        )
    vals = st.redis.mget([KEYS.stats(c) for c in COUNTERS])
    wm = st.redis.get(rk.TRENDS_WATERMARK)
    return {
        "posts": r["posts"],
        "authors": r["authors"],
        "watches": r["watches"],
        "firing_alerts": r["firing"],
        "latest_post_at": r["latest"],
        "counters": {c: int(v or 0) for c, v in zip(COUNTERS, vals, strict=True)},
        "watermark": as_text(wm) if wm else None,
    }
