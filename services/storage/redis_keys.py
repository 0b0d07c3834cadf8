"""Every Redis key and channel VoxPop uses, in one place.

Scheme: ``vp:<area>:<what>[:<id>...]``. Areas: ``scorer`` (per-user state,
thread context), ``stats`` (counters), ``trends`` (live window snapshots, late/invalid counters),
``alerts`` (live firing events). Add keys here rather than building key strings elsewhere, so the
layout stays greppable and collision-free.
"""

from __future__ import annotations

from services.config import get_settings

# One Redis shared by several deployments (or test sessions) stays separate with VOXPOP_REDIS_PREFIX;
# keys are module constants, so the prefix is read once, when this module is first imported.
PREFIX = get_settings().redis_prefix


class _Keys:
    """Key builders for the scorer and the counters (used as ``KEYS.stats("scored")`` etc.)."""

    prefix = PREFIX

    def stats(self, name: str) -> str:
        """Monotonic counter, e.g. ``stats("scored")``."""
        return f"{PREFIX}stats:{name}"

    def thread(self, thread_id: str) -> str:
        """List of the newest post ids of one thread (scorer thread context)."""
        return f"{PREFIX}scorer:thread:{thread_id}"

    def user_state(self, author_id: str, view: str) -> str:
        """Hash {mean, n}: cached running mean of one author's encoder features for one view.

        PostgreSQL's `author_states` is the truth (`services.scorer.user_state`)."""
        return f"{PREFIX}scorer:user:{author_id}:{view}"


KEYS = _Keys()

# --- trends -------------------------------------------------------------------------------------
#: pub/sub channel: one JSON message per live snapshot update or window close
TRENDS_UPDATES_CHANNEL = PREFIX + "trends:updates"
#: hash: field = window size name, value = number of late posts (beyond allowed lateness)
TRENDS_LATE_TOTAL = PREFIX + "trends:late"
#: counter: posts.scored records that failed validation in the trends worker
TRENDS_INVALID_TOTAL = PREFIX + "trends:invalid"
#: string: current event-time watermark (ISO 8601) of the trends app
TRENDS_WATERMARK = PREFIX + "trends:watermark"


def trend_live(watch_id: int, size: str) -> str:
    """JSON snapshot of the newest open window of one watch and window size."""
    return f"{PREFIX}trends:live:{watch_id}:{size}"


def trend_closed(watch_id: int, size: str) -> str:
    """JSON of the most recently closed window of one watch and window size."""
    return f"{PREFIX}trends:closed:{watch_id}:{size}"


def trend_late(watch_id: int) -> str:
    """Hash: field = window size name, value = late posts of this watch."""
    return f"{PREFIX}trends:late:{watch_id}"


# --- alerts -------------------------------------------------------------------------------------
#: pub/sub channel: one JSON message per alert firing / resolution (for the dashboard)
ALERTS_EVENTS_CHANNEL = PREFIX + "alerts:events"


# --- scorer / api -------------------------------------------------------------------------------
#: pub/sub channel: one JSON summary per scored batch (posts, per-watch label counts, time range)
SCORER_BATCHES_CHANNEL = PREFIX + "scorer:batches"


def stats_hist(name: str) -> str:
    """Hash of a cumulative histogram kept across processes: fields ``le:<bound>``, ``sum``, ``count``."""
    return f"{PREFIX}stats:hist:{name}"
