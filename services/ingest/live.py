"""Run a live platform connector into the ingest gate, in small batches (size or time bound)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator

from services.config import Settings
from services.ingest.events import BadRecord, ConnectorEvent
from services.ingest.gate import Incoming, IngestGate

log = logging.getLogger("voxpop.ingest.live")


def to_incoming(ev: ConnectorEvent, source: str) -> Incoming:
    if isinstance(ev, BadRecord):
        return Incoming(raw=ev.raw, error=ev.reason, source=ev.source)
    return Incoming(raw=ev.model_dump_json().encode(), post=ev, source=source)


async def pump(events: AsyncIterator[ConnectorEvent], gate: IngestGate, source: str,
               max_batch: int = 200, max_wait_s: float = 0.5) -> int:
    """Forward events to the gate in batches bounded by size and by time, so a quiet stream's
    last few posts do not wait for the next event; the blocking gate call runs in a thread."""
    batch: list[Incoming] = []
    sent = 0
    it = aiter(events)
    pending: asyncio.Task | None = None
    deadline = None
    while True:
        if pending is None:
            pending = asyncio.ensure_future(anext(it))
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, _ = await asyncio.wait({pending}, timeout=timeout)
        finished = False
        if done:
            try:
                batch.append(to_incoming(pending.result(), source))
            except StopAsyncIteration:
                finished = True
            pending = None
            if batch and deadline is None:
                deadline = time.monotonic() + max_wait_s
        if batch and (finished or len(batch) >= max_batch or time.monotonic() >= (deadline or 0)):
            sent += len((await asyncio.to_thread(gate.submit, batch)).accepted)
            batch, deadline = [], None
        if finished:
            return sent


def run_live(kind: str, settings: Settings, gate: IngestGate, *, url: str, keywords: list[str] | None = None,
             hashtag: str | None = None, token: str | None = None) -> int:
    """Blocking entry point of `voxpop ingest jetstream|mastodon`; Ctrl-C/SIGTERM stop it cleanly."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if kind == "jetstream":
            from services.ingest.jetstream import JetstreamConfig, stream_jetstream

            events = stream_jetstream(JetstreamConfig(url=url, keywords=keywords or [], stop=stop))
        elif kind == "mastodon":
            from services.ingest.mastodon import MastodonConfig, stream_mastodon

            cfg = MastodonConfig(base_url=url, stream="hashtag" if hashtag else "public", tag=hashtag,
                                 access_token=token, keywords=keywords or [], stop=stop)
            events = stream_mastodon(cfg)
        else:
            raise ValueError(f"unknown live source {kind!r}")
        log.info("following %s at %s", kind, url)
        return await pump(events, gate, kind)

    return asyncio.run(main())
