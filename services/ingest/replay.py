"""Replay a CSV/JSONL stream into the gate, at real time or a speed factor of its own timestamps.

`speed=1` replays at the pace the posts were written, `speed=60` one hour per minute, `speed=0`
as fast as the broker takes them. A progress bar shows the rate.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from tqdm import tqdm

from services.ingest.gate import GateResult, Incoming, IngestGate, validation_reason
from services.ingest.records import ColumnMap, RecordError, read_rows, row_to_post


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
) -> ReplayStats:
    """Send records in order; with speed > 0, each is sent when its own timestamp comes due."""
    stats = ReplayStats()
    t_wall0 = time.monotonic()
    t_ev0 = next((r.post.created_at for r in records if r.post is not None), None)
    batch: list[Incoming] = []
    bar = tqdm(total=len(records), unit="post", desc="replay", disable=not progress, smoothing=0.1)

    def flush() -> None:
        if batch:
            stats.add(gate.submit(batch))
            stats.read += len(batch)
            bar.update(len(batch))
            bar.set_postfix(dup=stats.duplicates, dlq=stats.rejected)
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
    bar.close()
    stats.seconds = time.monotonic() - t_wall0
    return stats
