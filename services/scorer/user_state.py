"""Per-user state for the eta term, kept in Redis (architecture.md, "Per-user fusion").

For each author and view: the running mean of the author's EARLIER posts' encoder features and
their count. A post's own features are folded in only after it was scored, and only once: the
set of folded post ids makes a re-delivered post (at-least-once input) a no-op.
`posts.raw` is keyed by author, so one consumer owns an author at a time and updates never race.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis

from services.storage.redis_keys import KEYS


@dataclass
class ViewState:
    mean: np.ndarray  # float32 [D]
    n: int

    def fold(self, x: np.ndarray) -> None:
        """Running mean update: mean += (x - mean) / (n + 1)."""
        self.n += 1
        self.mean = self.mean + (x.astype(np.float32) - self.mean) / np.float32(self.n)


class UserStateStore:
    def __init__(self, rds: redis.Redis, dims: dict[str, int], applied_ttl_s: int = 30 * 24 * 3600) -> None:
        self.redis, self.dims, self.applied_ttl_s = rds, dims, applied_ttl_s

    def load(self, authors: Sequence[str], post_ids_by_author: dict[str, list[str]]
             ) -> tuple[dict[tuple[str, str], ViewState], set[str]]:
        """States for every (author, view) and the subset of the given post ids already folded in."""
        uniq = list(dict.fromkeys(authors))
        pipe = self.redis.pipeline(transaction=False)
        for a in uniq:
            for v in self.dims:
                pipe.hmget(KEYS.user_state(a, v), "mean", "n")
            pipe.smismember(KEYS.user_applied(a), post_ids_by_author.get(a) or ["-"])
        replies = iter(pipe.execute())
        states: dict[tuple[str, str], ViewState] = {}
        applied: set[str] = set()
        for a in uniq:
            for v, d in self.dims.items():
                mean_b, n_b = next(replies)
                if mean_b is None:
                    states[(a, v)] = ViewState(np.zeros(d, np.float32), 0)
                else:
                    states[(a, v)] = ViewState(np.frombuffer(mean_b, np.float32).copy(), int(n_b))
            flags = next(replies)
            applied.update(p for p, f in zip(post_ids_by_author.get(a) or [], flags, strict=False) if f)
        return states, applied

    def save(self, changed: dict[tuple[str, str], ViewState], folded: dict[str, list[str]]) -> None:
        """Write changed states and the newly folded post ids in one MULTI/EXEC (all or nothing)."""
        if not changed and not folded:
            return
        pipe = self.redis.pipeline(transaction=True)
        for (a, v), st in changed.items():
            pipe.hset(KEYS.user_state(a, v), mapping={"mean": st.mean.astype(np.float32).tobytes(), "n": st.n})
        for a, ids in folded.items():
            if ids:
                pipe.sadd(KEYS.user_applied(a), *ids)
                pipe.expire(KEYS.user_applied(a), self.applied_ttl_s)
        pipe.execute()

    def get(self, author: str, view: str) -> ViewState | None:
        mean_b, n_b = self.redis.hmget(KEYS.user_state(author, view), "mean", "n")
        if mean_b is None:
            return None
        return ViewState(np.frombuffer(mean_b, np.float32).copy(), int(n_b))
