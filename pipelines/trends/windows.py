"""Window specifications and event-time window arithmetic (pure, no I/O).

Windows are aligned to the Unix epoch (UTC). A tumbling window is a hopping window whose step
equals its size. A window ``[start, end)`` is *closed* once the watermark reaches ``end``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class WindowSpec:
    """``name`` is what the ``size`` column stores, e.g. ``1h`` or ``1h@5m`` (hopping)."""

    name: str
    size_s: int
    step_s: int

    def __post_init__(self) -> None:
        if self.size_s <= 0 or self.step_s <= 0 or self.size_s % self.step_s:
            raise ValueError(f"window {self.name}: size must be a positive multiple of step")

    @property
    def slots(self) -> int:
        """How many windows of this spec contain any instant."""
        return self.size_s // self.step_s

    def starts_for(self, t: datetime) -> list[datetime]:
        """Starts of every window of this spec that contains ``t`` (oldest first)."""
        e = int(t.timestamp() // self.step_s) * self.step_s
        return [epoch_time(e - i * self.step_s) for i in range(self.slots - 1, -1, -1)]

    def current_start(self, t: datetime) -> datetime:
        """Start of the newest window containing ``t`` (the one a live dashboard shows)."""
        return epoch_time(int(t.timestamp() // self.step_s) * self.step_s)


def epoch_time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``"90s"``, ``"5m"``, ``"1h"``, ``"2d"`` -> seconds."""
    text = text.strip()
    if not text or text[-1] not in _UNITS or not text[:-1].isdigit():
        raise ValueError(f"bad duration {text!r}: use <int><s|m|h|d>")
    return int(text[:-1]) * _UNITS[text[-1]]


def parse_spec(text: str) -> WindowSpec:
    """``"1h"`` (tumbling) or ``"1h@5m"`` (1 h windows every 5 min)."""
    size, _, step = text.partition("@")
    size_s = parse_duration(size)
    return WindowSpec(text.strip(), size_s, parse_duration(step) if step else size_s)


DEFAULT_SPECS: tuple[WindowSpec, ...] = tuple(parse_spec(s) for s in ("1m", "5m", "1h", "1h@5m", "1d"))


def parse_specs(texts: Iterable[str]) -> tuple[WindowSpec, ...]:
    specs = tuple(parse_spec(t) for t in texts)
    if len({s.name for s in specs}) != len(specs):
        raise ValueError("duplicate window spec")
    return specs


def closed_windows_containing(
    t: datetime, closed_through: datetime | None, specs: Iterable[WindowSpec]
) -> Iterator[tuple[WindowSpec, datetime]]:
    """Windows containing ``t`` that were already closed at ``closed_through`` (a late post)."""
    if closed_through is None or t >= closed_through:
        return  # every window containing t ends after t: none of them is closed
    for spec in specs:
        for start in spec.starts_for(t):
            if start + timedelta(seconds=spec.size_s) <= closed_through:
                yield spec, start


def global_watermark(
    partition_max: dict[int, datetime], expected_partitions: int, idle: set[int], lateness_s: float
) -> datetime | None:
    """Event-time watermark: min over the active partitions' max event time, minus lateness.

    Partitions that never reported block closing (None) until they are declared idle; idle
    partitions do not hold the watermark back; if every partition is idle the max is used.
    """
    if not partition_max:
        return None
    reported = set(partition_max)
    missing = expected_partitions - len(reported)
    if missing > 0 and not idle >= {-1}:  # -1 in idle = "stop waiting for silent partitions"
        return None
    active = [t for p, t in partition_max.items() if p not in idle]
    base = min(active) if active else max(partition_max.values())
    return base - timedelta(seconds=lateness_s)
