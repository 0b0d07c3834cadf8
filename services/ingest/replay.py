"""Replay a CSV/JSONL stream into the gate, at real time or a speed factor of its own timestamps.

`speed=1` replays at the pace the posts were written, `speed=60` one hour per minute, `speed=0`
as fast as the broker takes them. On a terminal a progress bar shows the rate; otherwise (under
`voxpop up`, in a container, piped to a file) a progress line is logged every
`VOXPOP_INGEST_PROGRESS_S` seconds and once at the end, so the log shows a long replay moving.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError
from tqdm import tqdm

from services.ingest.gate import GateResult, Incoming, IngestGate, validation_reason
from services.ingest.records import ColumnMap, RecordError, read_rows, row_to_post

log = logging.getLogger("voxpop.ingest.replay")


@dataclass
class ReplayStats:
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0

    def add(self, r: GateResult) -> None:
        self.accepted += len(r.accepted)
        self.duplicates += len(r.duplicates)
        self.rejected += len(r.rejected)


class Progress:
    """A tqdm bar on a terminal; elsewhere a log line every ``every_s`` seconds and one at the end."""

    def __init__(self, total: int, every_s: float, enabled: bool = True, tty: bool | None = None) -> None:
        self.total, self.every_s = total, every_s
        tty = sys.stderr.isatty() if tty is None else tty
        self.bar = tqdm(total=total, unit="post", desc="replay", disable=not (enabled and tty), smoothing=0.1)
        self.logging = enabled and not tty
        self.t0 = self.last = time.monotonic()
        self.event_time: datetime | None = None  # of the newest post sent

    def update(self, stats: ReplayStats, sent: list[Incoming]) -> None:
        self.bar.update(len(sent))
        self.bar.set_postfix(dup=stats.duplicates, dlq=stats.rejected)
        self.event_time = next((r.post.created_at for r in reversed(sent) if r.post is not None), self.event_time)
        if self.logging and time.monotonic() - self.last >= self.every_s:
            self._log(stats)

    def close(self, stats: ReplayStats) -> None:
        self.bar.close()
        if self.logging:
            self._log(stats, done=True)

    def _log(self, stats: ReplayStats, done: bool = False) -> None:
        now = time.monotonic()
        self.last, elapsed = now, now - self.t0
        rate = stats.read / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * stats.read / self.total if self.total else 100.0
        left = f", about {(self.total - stats.read) / rate / 60:.0f} min left" if rate and not done else ""
        at = f", event time {self.event_time:%Y-%m-%d %H:%M %Z}" if self.event_time else ""
        log.info(
            "replay %s: %d/%d posts (%.0f%%), %.1f posts/s%s, %d accepted, %d duplicates, %d to the DLQ%s",
            "done" if done else "progress",
            stats.read,
            self.total,
            pct,
            rate,
            at,
            stats.accepted,
            stats.duplicates,
            stats.rejected,
            left,
        )


def load_records(path: Path, cmap: ColumnMap, limit: int | None = None) -> list[Incoming]:
    """Parse a file into gate records (bad rows become records carrying their error)."""
    out: list[Incoming] = []
    source = f"file:{path.name}"
    for line, raw, row, err in read_rows(path):
        if limit is not None and len(out) >= limit:
            break
        if err is not None or row is None:
            out.append(Incoming(raw=raw, error=f"line {line}: {err}", source=source))
            continue
        try:
            out.append(Incoming(raw=raw, post=row_to_post(row, cmap), source=source))
        except (RecordError, ValidationError, ValueError) as e:
            out.append(Incoming(raw=raw, error=f"line {line}: {validation_reason(e)}", source=source))
    return out


def replay(
    records: list[Incoming],
    gate: IngestGate,
    speed: float = 0.0,
    batch_size: int = 500,
    progress: bool = True,
    stop: threading.Event | None = None,
    progress_every_s: float = 30.0,
) -> ReplayStats:
    """Send records in order; with speed > 0, each is sent when its own timestamp comes due."""
    stats = ReplayStats()
    t_wall0 = time.monotonic()
    t_ev0 = next((r.post.created_at for r in records if r.post is not None), None)
    batch: list[Incoming] = []
    bar = Progress(len(records), progress_every_s, enabled=progress)

    def flush() -> None:
        if batch:
            stats.add(gate.submit(batch))
            stats.read += len(batch)
            bar.update(stats, batch)
            batch.clear()

    for rec in records:
        if stop is not None and stop.is_set():
            break
        if speed > 0 and rec.post is not None and t_ev0 is not None:
            due = t_wall0 + (rec.post.created_at - t_ev0).total_seconds() / speed
            wait = due - time.monotonic()
            if wait > 0:
                flush()
                (stop.wait(wait) if stop is not None else time.sleep(wait))
        batch.append(rec)
        if len(batch) >= batch_size:
            flush()
    flush()
    bar.close(stats)
    stats.seconds = time.monotonic() - t_wall0
    return stats
