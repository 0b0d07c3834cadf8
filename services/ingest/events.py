"""What a connector hands to ingest: a validated `Post`, or a `BadRecord` bound for the DLQ.

Connectors never drop input silently (docs/architecture.md, "Guarantees"): anything they cannot
turn into a `Post` comes out as a `BadRecord` carrying the original bytes and the reason,
so the ingest service can write it to `posts.dlq` next to the good records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from pipelines.schemas import Post


@dataclass(frozen=True, slots=True)
class BadRecord:
    """One input record that could not become a `Post`.

    `raw` is exactly what the source sent (a websocket frame, an SSE `data:` payload, a
    REST item); `source` names the connector (`jetstream`, `mastodon`); `position` is the
    source's own resume point for the record when it has one (Jetstream `time_us`, a
    Mastodon status id), to help find it again.
    """

    raw: bytes
    reason: str
    source: str
    position: str | None = None


ConnectorEvent: TypeAlias = Post | BadRecord


class ConnectorError(RuntimeError):
    """A live connector gave up: a non-retryable answer (401, 404) or its reconnect budget is spent."""
