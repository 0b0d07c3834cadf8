"""The live ingest sources, one registry: `voxpop ingest <name>`, `run_live` and `voxpop up` read it.

A source is anything with a `name` (it tags the records it yields) and `events(stop)`, an async
iterator of posts and bad records that ends once `stop` is set. To add a platform: write its
connector module (see `jetstream.py`, `mastodon.py`), a small dataclass here, and one entry in
`LIVE_SOURCES`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from services.ingest.events import ConnectorEvent


class LiveSource(Protocol):
    name: str

    def events(self, stop: asyncio.Event) -> AsyncIterator[ConnectorEvent]: ...


@dataclass
class Jetstream:
    """The Bluesky Jetstream (posts collection), reconnecting with a cursor."""

    url: str = "wss://jetstream2.us-east.bsky.network/subscribe"
    keywords: list[str] = field(default_factory=list)
    name: str = "jetstream"

    def events(self, stop: asyncio.Event) -> AsyncIterator[ConnectorEvent]:
        from services.ingest.jetstream import JetstreamConfig, stream_jetstream

        return stream_jetstream(JetstreamConfig(url=self.url, keywords=self.keywords, stop=stop))


@dataclass
class Mastodon:
    """A Mastodon streaming timeline (public, or one hashtag), backfilling after reconnects."""

    base_url: str
    hashtag: str | None = None
    token: str | None = None
    keywords: list[str] = field(default_factory=list)
    name: str = "mastodon"

    def events(self, stop: asyncio.Event) -> AsyncIterator[ConnectorEvent]:
        from services.ingest.mastodon import MastodonConfig, stream_mastodon

        return stream_mastodon(
            MastodonConfig(
                base_url=self.base_url,
                stream="hashtag" if self.hashtag else "public",
                tag=self.hashtag,
                access_token=self.token,
                keywords=self.keywords,
                stop=stop,
            )
        )


#: name -> source class; `voxpop up --source NAME` runs `voxpop ingest NAME` for these.
LIVE_SOURCES: dict[str, type] = {"jetstream": Jetstream, "mastodon": Mastodon}
