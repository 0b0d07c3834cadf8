"""Mastodon streaming client: server-sent events from one instance's public or hashtag timeline.

Protocol (docs.joinmastodon.org/methods/streaming, mastodon/streaming/index.js): the HTTP form
maps a path to a channel: `/api/v1/streaming/public` (`public`, `?only_media=true` for
`public:media`), `/public/local`, `/public/remote`, `/hashtag?tag=X`, `/hashtag/local?tag=X`.
(The `?stream=` query form belongs to the WebSocket endpoint `/api/v1/streaming`, not used here.)
The body is an SSE stream: `event: <name>` / `data: <payload>` blocks ended by a blank line, and
`:`-comments as heartbeats (`:thump`). `update` and `status.update` carry a Status JSON,
`delete` a bare status id. Since Mastodon 4.2 these streams want a user token
(`Authorization: Bearer`). The streaming server may live on another host, announced as
`configuration.urls.streaming` by `GET /api/v2/instance`.

SSE has no cursor, so after a reconnect the client backfills the gap from the REST timeline
(`/api/v1/timelines/public` or `/api/v1/timelines/tag/:tag`) with `since_id` = the newest
status id seen, paging back with `max_id` while pages come back full.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

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

log = logging.getLogger("voxpop.ingest.mastodon")

SOURCE = "mastodon"
MAX_TEXT_CHARS = 10_000
MAX_MEDIA = 16
StreamName = Literal["public", "public:local", "public:remote", "hashtag", "hashtag:local"]

_STREAM_PATHS: dict[str, str] = {
    "public": "/api/v1/streaming/public",
    "public:local": "/api/v1/streaming/public/local",
    "public:remote": "/api/v1/streaming/public/remote",
    "hashtag": "/api/v1/streaming/hashtag",
    "hashtag:local": "/api/v1/streaming/hashtag/local",
}
_MEDIA_KINDS: dict[str, Literal["image", "video", "audio"]] = {
    "image": "image",
    "video": "video",
    "gifv": "video",
    "audio": "audio",
}
_NON_RETRYABLE = {400, 401, 403, 404, 410, 422}


class MastodonConfig(BaseModel):
    """One instance, one stream. `base_url` is the instance (e.g. https://mastodon.social)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    base_url: str
    stream: StreamName = "public"
    tag: str | None = Field(None, description="hashtag (without #) for the hashtag streams")
    only_media: bool = False
    access_token: SecretStr | None = Field(None, description="user token; required by Mastodon >= 4.2")
    streaming_base_url: str | None = Field(None, description="None = ask /api/v2/instance, else base_url")
    keywords: list[str] = Field(default_factory=list, description="case-insensitive any-of on the text")
    languages: list[str] = Field(default_factory=list, description="keep posts in these languages; empty = all")
    include_edits: bool = Field(False, description="emit `status.update` (edits) as Posts too")
    include_reblogs: bool = Field(False, description="boosts repeat someone else's post; off by default")
    since_id: str | None = Field(None, description="resume point from an earlier run: backfill from here")
    backfill: bool = True
    backfill_limit: int = Field(40, ge=1, le=40, description="statuses per REST page (Mastodon max 40)")
    backfill_max_pages: int = Field(10, ge=1)
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(60.0, gt=0, description="no byte (not even a heartbeat) for this long = dead")
    dedup_window: int = Field(50_000, ge=1)
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    stop: asyncio.Event | None = Field(None, exclude=True, description="set to end the stream cleanly")

    @model_validator(mode="after")
    def _tag_needed(self) -> MastodonConfig:
        if self.stream.startswith("hashtag"):
            if not self.tag or not self.tag.lstrip("#").strip():
                raise ValueError(f"stream {self.stream!r} needs a tag")
            self.tag = self.tag.lstrip("#").strip()
        return self

    @property
    def instance_host(self) -> str:
        return urlsplit(self.base_url).netloc.lower()


def stream_request(cfg: MastodonConfig) -> tuple[str, dict[str, str]]:
    """Path and query of the SSE endpoint for the configured stream."""
    params: dict[str, str] = {}
    if cfg.stream.startswith("hashtag"):
        params["tag"] = cfg.tag or ""
    elif cfg.only_media:
        params["only_media"] = "true"
    return _STREAM_PATHS[cfg.stream], params


def timeline_request(cfg: MastodonConfig) -> tuple[str, dict[str, str]]:
    """Path and query of the REST timeline that holds the same statuses as the stream (for backfill)."""
    params: dict[str, str] = {}
    if cfg.stream.startswith("hashtag"):
        path = f"/api/v1/timelines/tag/{quote(cfg.tag or '', safe='')}"
    else:
        path = "/api/v1/timelines/public"
    if cfg.stream.endswith(":local"):
        params["local"] = "true"
    elif cfg.stream.endswith(":remote"):
        params["remote"] = "true"
    if cfg.only_media:
        params["only_media"] = "true"
    return path, params


# --- HTML -> text -------------------------------------------------------------------------------


class _TextExtractor(HTMLParser):
    _BLOCK = {"p", "pre", "blockquote", "ul", "ol", "li", "div", "h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in self._BLOCK:
            self._break(2 if tag == "p" else 1)

    def _break(self, n: int) -> None:
        """End the current block with at least `n` newlines, not stacking them with the previous break."""
        tail = "".join(self.parts[-3:])
        have = len(tail) - len(tail.rstrip("\n"))
        if have < n:
            self.parts.append("\n" * (n - have))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCK:
            self._break(2 if tag == "p" else 1)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Mastodon's status HTML to plain text: paragraphs become blank lines, <br> a newline.

    Link text is kept whole (Mastodon hides a URL's scheme in `invisible` spans; the text still
    holds it), entities are decoded.
    """
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


# --- SSE ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str
    id: str | None = None


class SSEParser:
    """Incremental text/event-stream parser (WHATWG rules: fields, comments, blank-line dispatch)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.comments = 0

    def feed(self, line: str) -> SSEEvent | None:
        if line == "":
            if not self._data and not self._event:
                return None
            ev = SSEEvent(event=self._event or "message", data="\n".join(self._data), id=self._id)
            self._event, self._data = "", []
            return ev
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None  # `retry` and unknown fields are ignored


# --- Status -> Post -------------------------------------------------------------------------------


def _id_key(status_id: str) -> tuple[int, str]:
    """Order Mastodon ids (numeric strings, snowflake-like) without trusting they are numeric."""
    return (len(status_id), status_id)


def _media(attachments: Any) -> list[Media]:
    out: list[Media] = []
    for att in attachments or []:
        if not isinstance(att, dict):
            continue
        kind = _MEDIA_KINDS.get(str(att.get("type")))
        uri = att.get("url") or att.get("remote_url")
        if kind is None or not isinstance(uri, str) or not uri:
            continue
        mime, _ = mimetypes.guess_type(urlsplit(uri).path)
        out.append(Media(kind=kind, uri=uri, mime=mime))
    return out[:MAX_MEDIA]


def post_from_status(status: dict[str, Any], instance_host: str, thread_id: str | None = None) -> Post:
    """Map a Mastodon Status entity, as seen from `instance_host`, to a `Post`.

    Status ids are local to the instance that serves them, hence `mastodon:{host}/{id}`; the
    federated identity (`uri`) goes to `extra`. Raises ValueError / ValidationError when unusable.
    """
    sid = status.get("id")
    account = status.get("account")
    if not isinstance(sid, str) or not sid:
        raise ValueError("missing status 'id'")
    if not isinstance(account, dict) or not isinstance(account.get("acct"), str) or not account["acct"]:
        raise ValueError("missing 'account.acct'")
    created = status.get("created_at")
    if not isinstance(created, str):
        raise ValueError("missing 'created_at'")
    acct = account["acct"] if "@" in account["acct"] else f"{account['acct']}@{instance_host}"
    content = status.get("content") or ""
    if not isinstance(content, str):
        raise ValueError("'content' is not a string")
    text, truncated = clip_text(html_to_text(content), MAX_TEXT_CHARS)
    lang = status.get("language") if isinstance(status.get("language"), str) else None
    if lang is not None and len(lang) > 16:
        lang = None

    post_id = f"mastodon:{instance_host}/{sid}"
    parent = status.get("in_reply_to_id")
    reply_to = f"mastodon:{instance_host}/{parent}" if isinstance(parent, str) and parent else None
    extra: dict[str, str | int | float | bool | None] = {}
    for key in ("uri", "url", "visibility"):
        if isinstance(status.get(key), str):
            extra[key] = status[key]
    if status.get("spoiler_text"):
        extra["spoiler_text"] = str(status["spoiler_text"])[:500]
    tags = [t["name"] for t in status.get("tags") or [] if isinstance(t, dict) and t.get("name")]
    if tags:
        extra["tags"] = " ".join(tags)[:1000]
    if status.get("edited_at"):
        extra["edited"] = True
    if truncated:
        extra["truncated"] = True
    return Post(
        id=post_id,
        platform="mastodon",
        author=Author(id=f"mastodon:{acct}", handle=acct),
        text=text,
        lang=lang,
        created_at=created,
        thread_id=thread_id or reply_to or post_id,
        reply_to=reply_to,
        media=_media(status.get("media_attachments")),
        extra=extra,
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return f"schema: {loc + ': ' if loc else ''}{first.get('msg', 'invalid')}"
    return str(exc) or type(exc).__name__


def _http_base(url: str) -> str:
    """The streaming URL Mastodon announces is ws(s)://; the SSE endpoints live at http(s):// on it."""
    url = url.rstrip("/")
    if url.startswith("wss://"):
        return "https://" + url[len("wss://") :]
    if url.startswith("ws://"):
        return "http://" + url[len("ws://") :]
    return url


class _Retry(Exception):
    def __init__(self, why: str, after: float | None = None) -> None:
        super().__init__(why)
        self.after = after


class MastodonClient:
    """One stream with its resume state; iterate `events()` for `Post`s and `BadRecord`s.

    `last_id` (newest status id seen) is public so a caller can persist it and pass it back
    as `since_id` after a restart.
    """

    def __init__(self, cfg: MastodonConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.cfg = cfg
        self.last_id: str | None = cfg.since_id
        self.connects = 0
        self.backfilled = 0
        self.skipped: dict[str, int] = {}
        self.streaming_base: str | None = cfg.streaming_base_url
        self._host = cfg.instance_host
        self._threads: LRU[str, str] = LRU(100_000)
        self._seen = SeenIds(cfg.dedup_window)
        self._keywords = KeywordFilter(cfg.keywords)
        self._backoff = Backoff(cfg.backoff)
        self._transport = transport

    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "voxpop-ingest (+mastodon)"}
        if self.cfg.access_token is not None:
            headers["Authorization"] = f"Bearer {self.cfg.access_token.get_secret_value()}"
        return headers

    def _note_id(self, sid: Any) -> None:
        if isinstance(sid, str) and sid and (self.last_id is None or _id_key(sid) > _id_key(self.last_id)):
            self.last_id = sid

    def handle_status(
        self, status: Any, raw: bytes, *, edit: bool = False, backfill: bool = False
    ) -> ConnectorEvent | None:
        """A Status (from the stream or the REST backfill) to a Post, a BadRecord, or None (filtered)."""
        if not isinstance(status, dict):
            return self._bad(raw, "status payload is not a JSON object")
        sid = status.get("id")
        if not edit:
            self._note_id(sid)
        if status.get("reblog") and not self.cfg.include_reblogs:
            self._skip("reblog")
            return None
        if status.get("reblog"):
            status = status["reblog"]
            if not isinstance(status, dict):
                return self._bad(raw, "'reblog' is not a status object", sid)
        parent = status.get("in_reply_to_id")
        thread = self._threads.get(parent) if isinstance(parent, str) else None
        try:
            post = post_from_status(status, self._host, thread_id=thread)
        except (ValueError, TypeError, ValidationError) as exc:
            return self._bad(raw, _reason(exc), sid)
        if post.thread_id:
            self._threads.put(str(status["id"]), post.thread_id)
        if not self._keywords(post.text):
            self._skip("keyword")
            return None
        if not lang_allowed(post.lang, self.cfg.languages):
            self._skip("language")
            return None
        key = post.id if not edit else f"{post.id}@{status.get('edited_at')}"
        if not self._seen.add(key):
            self._skip("duplicate")
            return None
        if backfill:
            post.extra["backfill"] = True
        return post

    def handle_sse(self, ev: SSEEvent) -> ConnectorEvent | None:
        """One SSE event: `update` / `status.update` become Posts; `delete` and the rest are skipped."""
        if ev.event not in ("update", "status.update"):
            self._skip(ev.event)
            return None
        if ev.event == "status.update" and not self.cfg.include_edits:
            self._skip("status.update")
            return None
        raw = ev.data.encode("utf-8")
        try:
            status = json.loads(ev.data)
        except json.JSONDecodeError as exc:
            return self._bad(raw, f"invalid JSON in '{ev.event}' event: {exc}")
        return self.handle_status(status, raw, edit=ev.event == "status.update")

    def _bad(self, raw: bytes, reason: str, position: Any = None) -> BadRecord:
        return BadRecord(raw=raw, reason=reason, source=SOURCE, position=str(position) if position else None)

    async def discover_streaming(self, http: httpx.AsyncClient) -> str:
        """Where the SSE endpoints are: configured, else the instance's announced URL, else base_url."""
        if self.streaming_base:
            return self.streaming_base
        base = self.cfg.base_url.rstrip("/")
        found = base
        try:
            resp = await http.get(f"{base}/api/v2/instance")
            if resp.status_code == 200:
                urls = (resp.json().get("configuration") or {}).get("urls") or {}
                if isinstance(urls.get("streaming"), str) and urls["streaming"]:
                    found = _http_base(urls["streaming"])
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.info("mastodon: instance discovery failed (%s); streaming from %s", exc, base)
        self.streaming_base = found
        return found

    async def backfill(self, http: httpx.AsyncClient) -> list[ConnectorEvent]:
        """Statuses newer than `last_id` from the REST timeline, oldest first."""
        if self.last_id is None:
            return []
        path, params = timeline_request(self.cfg)
        url = self.cfg.base_url.rstrip("/") + path
        since = self.last_id
        collected: list[tuple[dict[str, Any], bytes]] = []
        max_id: str | None = None
        for _ in range(self.cfg.backfill_max_pages):
            query = {**params, "since_id": since, "limit": str(self.cfg.backfill_limit)}
            if max_id is not None:
                query["max_id"] = max_id
            resp = await http.get(url, params=query)
            if resp.status_code != 200:
                log.warning("mastodon: backfill %s -> HTTP %s; gap not filled", path, resp.status_code)
                break
            try:
                page = resp.json()
            except ValueError:
                log.warning("mastodon: backfill %s returned non-JSON; gap not filled", path)
                break
            if not isinstance(page, list) or not page:
                break
            for item in page:
                collected.append((item, json.dumps(item, ensure_ascii=False).encode("utf-8")))
            ids = [s["id"] for s in page if isinstance(s, dict) and isinstance(s.get("id"), str)]
            if len(page) < self.cfg.backfill_limit or not ids:
                break
            max_id = min(ids, key=_id_key)
        else:
            log.warning("mastodon: backfill hit %d pages; older part of the gap skipped", self.cfg.backfill_max_pages)

        def order(pair: tuple[dict[str, Any], bytes]) -> tuple[int, str]:
            sid = pair[0].get("id") if isinstance(pair[0], dict) else None
            return _id_key(sid) if isinstance(sid, str) else (0, "")

        out: list[ConnectorEvent] = []
        for status, raw in sorted(collected, key=order):
            item = self.handle_status(status, raw, backfill=True)
            if item is not None:
                out.append(item)
        self.backfilled += len(out)
        return out

    async def events(self) -> AsyncGenerator[ConnectorEvent, None]:
        """Stream until `cfg.stop`, reconnecting with backoff and backfilling each gap.

        Close it with `contextlib.aclosing` (or set `cfg.stop`) so the connection is closed promptly.
        """
        stop = self.cfg.stop
        timeout = httpx.Timeout(self.cfg.connect_timeout_s, read=self.cfg.read_timeout_s)
        async with httpx.AsyncClient(headers=self._headers(), timeout=timeout, transport=self._transport) as http:
            stream_base = await self.discover_streaming(http)
            path, params = stream_request(self.cfg)
            while not (stop and stop.is_set()):
                retry_after: float | None = None
                try:
                    async with http.stream("GET", stream_base + path, params=params) as resp:
                        if resp.status_code != 200:
                            await resp.aread()
                            if resp.status_code in _NON_RETRYABLE:
                                raise ConnectorError(
                                    f"mastodon refused {path}: HTTP {resp.status_code} {resp.text[:200]!r}"
                                )
                            ra = resp.headers.get("retry-after", "")
                            raise _Retry(f"HTTP {resp.status_code}", float(ra) if ra.isdigit() else None)
                        self.connects += 1
                        log.info("mastodon connected: %s%s (last_id=%s)", stream_base, path, self.last_id)
                        # The stream is open, so nothing posted from now on is missed: fill the gap behind us.
                        if self.cfg.backfill and self.last_id is not None:
                            for item in await self.backfill(http):
                                yield item
                        parser = SSEParser()
                        async with close_on_stop(stop, resp.aclose):
                            async for line in resp.aiter_lines():
                                self._backoff.reset()
                                ev = parser.feed(line)
                                if ev is None:
                                    continue
                                got = self.handle_sse(ev)
                                if got is not None:
                                    yield got
                    why = "server ended the stream"
                except _Retry as exc:
                    why, retry_after = str(exc), exc.after
                except (httpx.HTTPError, httpx.StreamError, OSError) as exc:
                    why = f"{type(exc).__name__}: {exc}"
                except Exception:
                    if stop and stop.is_set():  # closing the response under a pending read may raise anything
                        return
                    raise
                if stop and stop.is_set():
                    return
                if self._backoff.exhausted:
                    raise ConnectorError(f"mastodon: gave up after {self._backoff.failures} reconnects ({why})")
                delay = self._backoff.next_delay()
                if retry_after is not None:
                    delay = max(delay, min(retry_after, 300.0))
                log.warning("mastodon stream dropped (%s); reconnecting in %.2fs", why, delay)
                if await sleep_or_stop(delay, stop):
                    return


async def stream_mastodon(
    cfg: MastodonConfig, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[ConnectorEvent]:
    """Entry point for the ingest service: Posts and BadRecords from one Mastodon stream until `cfg.stop`."""
    async with contextlib.aclosing(MastodonClient(cfg, transport).events()) as events:
        async for item in events:
            yield item
