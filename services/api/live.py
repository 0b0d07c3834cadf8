"""Server-sent events: one Redis pub/sub subscription per API process, fanned out to every client.

Channels (``services.storage.redis_keys``): the scorer's per-batch summary (event ``batch``), the
trends app's window updates (``trend``) and alert firings/resolutions (``alert``). A slow client
loses its oldest queued events rather than holding memory or slowing the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import APIRouter, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from pipelines.retry import delay_after, exponential
from services.api.deps import Reader, State
from services.storage.redis_keys import ALERTS_EVENTS_CHANNEL, SCORER_BATCHES_CHANNEL, TRENDS_UPDATES_CHANNEL

log = logging.getLogger("voxpop.api.live")
RECONNECT = exponential(0.5, 10.0)  # Redis pub/sub reconnects
CHANNELS = {SCORER_BATCHES_CHANNEL: "batch", TRENDS_UPDATES_CHANNEL: "trend", ALERTS_EVENTS_CHANNEL: "alert"}
QUEUE_MAX = 256


class LiveHub:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.subscribers: set[asyncio.Queue[tuple[str, str, str]]] = set()
        self.task: asyncio.Task[None] | None = None
        self.ids = itertools.count(1)
        self.ready = asyncio.Event()

    def subscribe(self) -> asyncio.Queue[tuple[str, str, str]]:
        q: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue(QUEUE_MAX)
        self.subscribers.add(q)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[str, str, str]]) -> None:
        self.subscribers.discard(q)

    def _fan_out(self, event: str, data: str) -> None:
        item = (str(next(self.ids)), event, data)
        for q in list(self.subscribers):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(item)

    async def _run(self) -> None:
        failures = 0
        while self.subscribers:
            client = aioredis.Redis.from_url(self.redis_url)
            try:
                async with client.pubsub() as ps:
                    await ps.subscribe(*CHANNELS)
                    self.ready.set()
                    failures = 0
                    while self.subscribers:
                        msg = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if msg and msg.get("type") == "message":
                            ch = msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
                            data = msg["data"].decode() if isinstance(msg["data"], bytes) else str(msg["data"])
                            self._fan_out(CHANNELS.get(ch, "message"), data)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis restarts: reconnect, tell clients to refetch
                self.ready.clear()
                failures += 1
                wait = delay_after(RECONNECT, failures)
                log.warning("live: redis pub/sub failed (%s); reconnecting in %.1fs", e, wait)
                self._fan_out("resync", json.dumps({"reason": "event stream reconnected"}))
                await asyncio.sleep(wait)
            finally:
                await client.aclose()
        self.ready.clear()

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


router = APIRouter(prefix="/api", tags=["live"])


@router.get(
    "/live",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "event stream: `batch` (new scored posts per watch and label), "
            "`trend` (windows updated/closed), `alert` (firing/resolved), "
            "`resync` (refetch: events may have been missed)"
        }
    },
)
async def live(
    request: Request,
    st: State,
    _: Reader,
    events: Annotated[list[str] | None, Query(max_length=4, description="batch, trend, alert")] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Live updates as server-sent events; a comment line is sent when idle to keep proxies open."""
    hub: LiveHub = request.app.state.live
    wanted = set(events or CHANNELS.values()) | {"resync"}
    q = hub.subscribe()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hub.ready.wait(), 5.0)
        yield ServerSentEvent(event="hello", data={"events": sorted(wanted)}, retry=3000)
        while True:
            eid, event, data = await q.get()
            if event in wanted:
                yield ServerSentEvent(id=eid, event=event, raw_data=data)
    finally:
        hub.unsubscribe(q)
