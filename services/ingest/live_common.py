"""Small pieces the live platform clients share: backoff, filters, bounded memories, stop handling."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.retry import exponential, jittered

K = TypeVar("K")
V = TypeVar("V")


class BackoffConfig(BaseModel):
    """Reconnect timing: exponential with jitter so a fleet of clients does not reconnect in step."""

    model_config = ConfigDict(extra="forbid")

    initial_s: float = Field(0.5, gt=0)
    max_s: float = Field(30.0, gt=0)
    factor: float = Field(2.0, ge=1.0)
    # None = reconnect forever (production). A number = give up (ConnectorError) after that many
    # reconnects in a row that delivered nothing (tests, and callers that want to fail over).
    max_reconnects: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _order(self) -> BackoffConfig:
        if self.max_s < self.initial_s:
            raise ValueError("backoff max_s must be >= initial_s")
        return self


class Backoff:
    """Delay: min(max, initial * factor**n) times a random factor in [0.5, 1] ("equal jitter")."""

    def __init__(self, cfg: BackoffConfig, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.failures = 0
        self._rng = rng or random.Random()
        self._wait = exponential(cfg.initial_s, cfg.max_s, cfg.factor)

    def reset(self) -> None:
        self.failures = 0

    @property
    def exhausted(self) -> bool:
        limit = self.cfg.max_reconnects
        return limit is not None and self.failures >= limit

    def next_delay(self) -> float:
        self.failures += 1
        return jittered(self._wait, self.failures, self._rng)


class KeywordFilter:
    """Case-insensitive any-of substring match; no keywords means everything passes."""

    def __init__(self, keywords: Iterable[str]) -> None:
        self.keywords = tuple(k.casefold() for k in keywords if k.strip())

    def __call__(self, text: str) -> bool:
        if not self.keywords:
            return True
        folded = text.casefold()
        return any(k in folded for k in self.keywords)


def lang_allowed(lang: str | None, wanted: Iterable[str]) -> bool:
    """True when no languages are wanted, or the post's primary subtag is one of them ('en-GB' ~ 'en')."""
    wanted_set = {w.lower().split("-")[0] for w in wanted}
    if not wanted_set:
        return True
    return lang is not None and lang.lower().split("-")[0] in wanted_set


class LRU(Generic[K, V]):
    """A bounded mapping that forgets the oldest entries; connectors run for days, memory must not grow."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._d: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, default: V | None = None) -> V | None:
        if key in self._d:
            self._d.move_to_end(key)
            return self._d[key]
        return default

    def put(self, key: K, value: V) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.capacity:
            self._d.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)


class SeenIds:
    """Recently emitted ids, so a cursor rewind or a backfill overlap does not emit a record twice.

    Only a first line of defence: ingest's own dedup (Redis, days long) is the authority.
    """

    def __init__(self, capacity: int) -> None:
        self._lru: LRU[str, None] = LRU(capacity)

    def add(self, key: str) -> bool:
        """Remember `key`; False when it was already there."""
        if key in self._lru:
            return False
        self._lru.put(key, None)
        return True


def clip_text(text: str, max_chars: int) -> tuple[str, bool]:
    """Cut text to the schema's limit rather than reject the post; report whether it was cut."""
    if len(text) <= max_chars:
        return text, False
    return text[:max_chars], True


async def sleep_or_stop(delay: float, stop: asyncio.Event | None) -> bool:
    """Sleep `delay` seconds; return True early (and at once) if `stop` is set."""
    if stop is None:
        await asyncio.sleep(delay)
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)
    return stop.is_set()


@contextlib.asynccontextmanager
async def close_on_stop(stop: asyncio.Event | None, closer: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """While inside, a set `stop` event closes the live connection so a blocked read returns."""
    if stop is None:
        yield
        return

    async def _watch() -> None:
        await stop.wait()
        with contextlib.suppress(Exception):
            await closer()

    task = asyncio.create_task(_watch())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
