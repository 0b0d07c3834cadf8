"""Bluesky Jetstream client: the public JSON firehose over a websocket, mapped to `Post`s.

Protocol (github.com/bluesky-social/jetstream README): connect to `wss://<host>/subscribe`
with repeatable `wantedCollections` / `wantedDids`, optional `cursor` (unix microseconds) and
`maxMessageSizeBytes`. Each text frame is one JSON event `{did, time_us, kind, ...}` with
kind `commit` (operation create/update/delete on `collection`/`rkey`, `record` and `cid`
for create/update), `identity` (new handle), `account` (status) or `heartbeat`. Identity and
account events arrive whatever the filters. Cursors are time based, so a reconnect resumes
from the last `time_us` minus a few seconds (the README's advice for gapless playback); the
replayed overlap is dropped here by post id and again by ingest's dedup.

`compress=true` is not offered: it needs Jetstream's custom zstd dictionary.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

from pipelines.schemas import Author, Media, Post
from services.ingest.events import BadRecord, ConnectorError, ConnectorEvent
from services.ingest.live_common import (
    LRU,
    Backoff,
    BackoffConfig,
    KeywordFilter,
    SeenIds,
    clip_text,
    close_on_stop,
    lang_allowed,
    sleep_or_stop,
)

log = logging.getLogger("voxpop.ingest.jetstream")

DEFAULT_URL = "wss://jetstream2.us-east.bsky.network/subscribe"
POST_COLLECTION = "app.bsky.feed.post"
SOURCE = "jetstream"
# The Bluesky AppView CDN serves any blob of a repo by (did, cid); `@jpeg` asks for a JPEG rendition.
CDN_IMAGE_URL = "https://cdn.bsky.app/img/feed_fullsize/plain/{did}/{cid}@jpeg"
# Videos are served as HLS by the video service, keyed the same way.
VIDEO_PLAYLIST_URL = "https://video.bsky.app/watch/{did}/{cid}/playlist.m3u8"
MAX_TEXT_CHARS = 10_000
MAX_MEDIA = 16


class JetstreamConfig(BaseModel):
    """Everything one Jetstream subscription needs; defaults follow the public instances."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    url: str = DEFAULT_URL
    wanted_collections: list[str] = Field(default_factory=lambda: [POST_COLLECTION], max_length=100)
    wanted_dids: list[str] = Field(default_factory=list, max_length=10_000)
    keywords: list[str] = Field(default_factory=list, description="case-insensitive any-of on the text")
    languages: list[str] = Field(default_factory=list, description="keep posts in these languages; empty = all")
    cursor: int | None = Field(None, ge=0, description="time_us to start from; None = live tail")
    rewind_s: float = Field(3.0, ge=0, description="replay this much before the last time_us on reconnect")
    include_updates: bool = Field(False, description="emit `update` commits of posts as Posts too")
    max_message_size_bytes: int = Field(0, ge=0, description="server-side cap per event; 0 = none")
    open_timeout_s: float = Field(10.0, gt=0)
    ping_interval_s: float | None = Field(20.0, gt=0, description="websocket pings detect dead links")
    dedup_window: int = Field(50_000, ge=1, description="post ids remembered to drop replayed overlap")
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    stop: asyncio.Event | None = Field(None, exclude=True, description="set to end the stream cleanly")


def build_url(cfg: JetstreamConfig, cursor: int | None) -> str:
    """The subscribe URL with repeated query parameters, as Jetstream expects them."""
    params: list[tuple[str, str]] = [("wantedCollections", c) for c in cfg.wanted_collections]
    params += [("wantedDids", d) for d in cfg.wanted_dids]
    if cfg.max_message_size_bytes:
        params.append(("maxMessageSizeBytes", str(cfg.max_message_size_bytes)))
    if cursor is not None:
        params.append(("cursor", str(cursor)))
    if not params:
        return cfg.url
    return f"{cfg.url}{'&' if '?' in cfg.url else '?'}{urlencode(params)}"


def collection_wanted(collection: str, wanted: list[str]) -> bool:
    """Jetstream's own filter semantics: exact NSIDs or `prefix.*`; empty = everything."""
    if not wanted:
        return True
    for w in wanted:
        if w.endswith(".*"):
            if collection.startswith(w[:-1]):
                return True
        elif collection == w:
            return True
    return False


def at_uri_to_post_id(uri: str) -> str:
    """`at://did/app.bsky.feed.post/rkey` -> `bluesky:did/rkey`, the id space `Post.id` uses."""
    if not uri.startswith("at://"):
        raise ValueError(f"not an at:// uri: {uri!r}")
    parts = uri[len("at://") :].split("/")
    if len(parts) != 3 or not parts[0] or not parts[2]:
        raise ValueError(f"unexpected at:// uri shape: {uri!r}")
    return f"bluesky:{parts[0]}/{parts[2]}"


def _blob_cid(blob: Any) -> str | None:
    """CID of a blob ref in the current (`ref.$link`) or the two legacy shapes (`ref` string, `cid`)."""
    if not isinstance(blob, dict):
        return None
    ref = blob.get("ref")
    if isinstance(ref, dict):
        link = ref.get("$link")
        if isinstance(link, str):
            return link
    if isinstance(ref, str):
        return ref
    cid = blob.get("cid")
    return cid if isinstance(cid, str) else None


def _blob_size(blob: Any) -> int | None:
    size = blob.get("size") if isinstance(blob, dict) else None
    return size if isinstance(size, int) and size >= 0 else None


def _media_from_embed(did: str, embed: Any) -> tuple[list[Media], list[str]]:
    """Images and video of a post's embed (also inside recordWithMedia); returns media and alt texts."""
    if not isinstance(embed, dict):
        return [], []
    etype = embed.get("$type")
    if etype == "app.bsky.embed.recordWithMedia":
        return _media_from_embed(did, embed.get("media"))
    media: list[Media] = []
    alts: list[str] = []
    if etype == "app.bsky.embed.images":
        for item in embed.get("images") or []:
            if not isinstance(item, dict):
                continue
            blob = item.get("image")
            cid = _blob_cid(blob)
            if cid is None:
                continue
            # The CDN re-encodes to JPEG (`@jpeg`), so that is the type behind the URI; `bytes`
            # is the uploaded blob's size, an upper-bound hint for the media loader.
            media.append(
                Media(
                    kind="image",
                    uri=CDN_IMAGE_URL.format(did=did, cid=cid),
                    bytes=_blob_size(blob),
                    mime="image/jpeg",
                )
            )
            if isinstance(item.get("alt"), str) and item["alt"].strip():
                alts.append(item["alt"].strip())
    elif etype == "app.bsky.embed.video":
        blob = embed.get("video")
        cid = _blob_cid(blob)
        if cid is not None:
            media.append(
                Media(
                    kind="video",
                    uri=VIDEO_PLAYLIST_URL.format(did=did, cid=cid),
                    bytes=_blob_size(blob),
                    mime="application/vnd.apple.mpegurl",
                )
            )
            if isinstance(embed.get("alt"), str) and embed["alt"].strip():
                alts.append(embed["alt"].strip())
    return media, alts


def post_from_commit(event: dict[str, Any], handle: str | None = None) -> Post:
    """Map one `commit` event creating/updating an `app.bsky.feed.post` to a `Post`.

    Raises ValueError / pydantic.ValidationError with a readable reason when the record is unusable.
    """
    did = event.get("did")
    commit = event.get("commit")
    if not isinstance(did, str) or not did.startswith("did:"):
        raise ValueError("missing or invalid 'did'")
    if not isinstance(commit, dict):
        raise ValueError("missing 'commit' object")
    rkey = commit.get("rkey")
    record = commit.get("record")
    if not isinstance(rkey, str) or not rkey:
        raise ValueError("missing 'commit.rkey'")
    if not isinstance(record, dict):
        raise ValueError("missing 'commit.record' object")
    created = record.get("createdAt")
    if not isinstance(created, str):
        raise ValueError("missing 'record.createdAt'")
    text = record.get("text", "")
    if not isinstance(text, str):
        raise ValueError("'record.text' is not a string")
    text, truncated = clip_text(text, MAX_TEXT_CHARS)

    langs = record.get("langs")
    lang = langs[0] if isinstance(langs, list) and langs and isinstance(langs[0], str) else None
    if lang is not None and len(lang) > 16:
        lang = None  # a malformed tag is not worth losing the post over

    own_uri = f"at://{did}/{commit.get('collection', POST_COLLECTION)}/{rkey}"
    post_id = f"bluesky:{did}/{rkey}"
    thread_id, reply_to = post_id, None
    reply = record.get("reply")
    if isinstance(reply, dict):
        root, parent = reply.get("root"), reply.get("parent")
        if isinstance(root, dict) and isinstance(root.get("uri"), str):
            thread_id = at_uri_to_post_id(root["uri"])
        if isinstance(parent, dict) and isinstance(parent.get("uri"), str):
            reply_to = at_uri_to_post_id(parent["uri"])
        if reply_to is not None and thread_id == post_id:
            thread_id = reply_to  # root missing: the parent is the best thread key we have

    media, alts = _media_from_embed(did, record.get("embed"))
    extra: dict[str, str | int | float | bool | None] = {"uri": own_uri, "time_us": event.get("time_us")}
    if isinstance(commit.get("cid"), str):
        extra["cid"] = commit["cid"]
    if alts:
        extra["alt_text"] = clip_text(" | ".join(alts), 2000)[0]
    if truncated:
        extra["truncated"] = True
    if commit.get("operation") == "update":
        extra["edited"] = True
    return Post(
        id=post_id,
        platform="bluesky",
        author=Author(id=f"bluesky:{did}", handle=handle),
        text=text,
        lang=lang,
        created_at=created,  # ISO 8601; pydantic parses it and the schema rejects naive times
        thread_id=thread_id,
        reply_to=reply_to,
        media=media[:MAX_MEDIA],
        extra=extra,
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return f"schema: {loc + ': ' if loc else ''}{first.get('msg', 'invalid')}"
    return str(exc) or type(exc).__name__


class JetstreamClient:
    """One subscription with its resume state; iterate `events()` for `Post`s and `BadRecord`s.

    `cursor` (the last `time_us` seen) is public so a caller can persist it across restarts.
    """

    def __init__(self, cfg: JetstreamConfig) -> None:
        self.cfg = cfg
        self.cursor: int | None = None
        self.connects = 0
        self.skipped: dict[str, int] = {}
        self._handles: LRU[str, str] = LRU(100_000)
        self._seen = SeenIds(cfg.dedup_window)
        self._keywords = KeywordFilter(cfg.keywords)
        self._backoff = Backoff(cfg.backoff)

    def resume_cursor(self) -> int | None:
        """Where the next connection starts: a little before the last event seen, else the start."""
        if self.cursor is not None:
            return max(0, self.cursor - int(self.cfg.rewind_s * 1_000_000))
        return self.cfg.cursor

    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def handle_frame(self, frame: str | bytes) -> ConnectorEvent | None:
        """Turn one websocket frame into a Post, a BadRecord, or None (not a post, filtered, duplicate)."""
        raw = frame.encode("utf-8") if isinstance(frame, str) else frame
        try:
            event = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._bad(raw, f"invalid JSON: {exc}")
        if not isinstance(event, dict):
            return self._bad(raw, "event is not a JSON object")
        time_us = event.get("time_us")
        if isinstance(time_us, int) and (self.cursor is None or time_us > self.cursor):
            self.cursor = time_us
        kind = event.get("kind")
        if kind == "identity":
            ident = event.get("identity")
            if isinstance(ident, dict) and isinstance(ident.get("handle"), str) and isinstance(event.get("did"), str):
                self._handles.put(event["did"], ident["handle"])
            self._skip("identity")
            return None
        if kind in ("account", "heartbeat"):
            self._skip(kind)
            return None
        if kind != "commit":
            self._skip(f"kind {kind}")  # a kind newer than this client: not a post, not bad input
            return None
        commit = event.get("commit")
        if not isinstance(commit, dict):
            return self._bad(raw, "commit event without a 'commit' object", time_us)
        collection = commit.get("collection")
        if not isinstance(collection, str) or not collection_wanted(collection, self.cfg.wanted_collections):
            self._skip("collection")
            return None
        if collection != POST_COLLECTION:
            self._skip("not a post")
            return None
        op = commit.get("operation")
        if op == "delete":
            self._skip("delete")
            return None
        if op == "update" and not self.cfg.include_updates:
            self._skip("update")
            return None
        if op not in ("create", "update"):
            return self._bad(raw, f"unknown commit operation {op!r}", time_us)
        try:
            post = post_from_commit(event, self._handles.get(str(event.get("did"))))
        except (ValueError, TypeError, ValidationError) as exc:
            return self._bad(raw, _reason(exc), time_us)
        if not self._keywords(post.text):
            self._skip("keyword")
            return None
        if not lang_allowed(post.lang, self.cfg.languages):
            self._skip("language")
            return None
        if not self._seen.add(post.id if op == "create" else f"{post.id}@{commit.get('cid')}"):
            self._skip("duplicate")
            return None
        return post

    def _bad(self, raw: bytes, reason: str, time_us: Any = None) -> BadRecord | None:
        # A rewound replay would DLQ the same broken frame twice; remember its hash like an id.
        if not self._seen.add("bad:" + hashlib.sha256(raw).hexdigest()):
            self._skip("duplicate")
            return None
        return BadRecord(raw=raw, reason=reason, source=SOURCE, position=str(time_us) if time_us else None)

    async def events(self) -> AsyncGenerator[ConnectorEvent, None]:
        """Stream forever (until `cfg.stop`), reconnecting with backoff and resuming from the cursor.

        Close it with `contextlib.aclosing` (or set `cfg.stop`) so the websocket is closed promptly.
        """
        stop = self.cfg.stop
        while not (stop and stop.is_set()):
            url = build_url(self.cfg, self.resume_cursor())
            why = "server closed the connection"
            try:
                async with connect(
                    url,
                    open_timeout=self.cfg.open_timeout_s,
                    ping_interval=self.cfg.ping_interval_s,
                    max_size=4 * 1024 * 1024,
                    user_agent_header="voxpop-ingest (+jetstream)",
                ) as ws:
                    self.connects += 1
                    log.info("jetstream connected (%s), cursor=%s", self.cfg.url, self.resume_cursor())
                    async with close_on_stop(stop, ws.close):
                        async for frame in ws:
                            self._backoff.reset()
                            item = self.handle_frame(frame)
                            if item is not None:
                                yield item
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (400, 401, 403, 404):
                    raise ConnectorError(f"jetstream refused the subscription: HTTP {status}") from exc
                why = f"HTTP {status}"
            except (OSError, TimeoutError, WebSocketException) as exc:
                why = f"{type(exc).__name__}: {exc}"
            if stop and stop.is_set():
                return
            if self._backoff.exhausted:
                raise ConnectorError(f"jetstream: gave up after {self._backoff.failures} reconnects ({why})")
            delay = self._backoff.next_delay()
            log.warning("jetstream disconnected (%s); reconnecting in %.2fs", why, delay)
            if await sleep_or_stop(delay, stop):
                return


async def stream_jetstream(cfg: JetstreamConfig) -> AsyncIterator[ConnectorEvent]:
    """Entry point for the ingest service: Posts and BadRecords from Jetstream until `cfg.stop` is set."""
    async with contextlib.aclosing(JetstreamClient(cfg).events()) as events:
        async for item in events:
            yield item
