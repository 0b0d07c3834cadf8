"""Run a live platform connector into the ingest gate, in small batches (size or time bound)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator

from services.ingest.events import BadRecord, ConnectorEvent
from services.ingest.gate import Incoming, IngestGate
from services.ingest.sources import LiveSource

log = logging.getLogger("voxpop.ingest.live")


def to_incoming(ev: ConnectorEvent, source: str) -> Incoming:
    if isinstance(ev, BadRecord):
        return Incoming(raw=ev.raw, error=ev.reason, source=ev.source)
    return Incoming(raw=ev.model_dump_json().encode(), post=ev, source=source)


async def pump(
    events: AsyncIterator[ConnectorEvent], gate: IngestGate, source: str, max_batch: int = 200, max_wait_s: float = 0.5
) -> int:
    """Forward events to the gate in batches bounded by size and by time, so a quiet stream's
    last few posts do not wait for the next event; the blocking gate call runs in a thread."""
    batch: list[Incoming] = []
    sent = 0
    it = aiter(events)
    pending: asyncio.Future[ConnectorEvent] | None = None
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


def run_live(source: LiveSource, gate: IngestGate) -> int:
    """Blocking entry point of `voxpop ingest jetstream|mastodon|...`; Ctrl-C/SIGTERM stop it cleanly."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("following %s", source)
        return await pump(source.events(stop), gate, source.name)

    return asyncio.run(main())
