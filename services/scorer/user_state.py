"""Per-user state for the eta term: PostgreSQL holds it, Redis caches it.

For each author and view: the running mean of the author's EARLIER posts' encoder features and
their count `n`. A post's own features are folded in after it was scored, exactly once: a post
already stored in `posts` is never folded again (at-least-once input, re-deliveries are no-ops).

The truth is the `author_states` table, written in the same transaction as the posts whose
features it folds in (`services.scorer.sinks.write_batch`), so it can never be ahead of or
behind the stored posts. Redis keeps a copy of the vectors so a batch does not read them from
PostgreSQL; every batch compares each author's `n` in Redis with PostgreSQL's (one small indexed
query) and reloads the vectors that differ. A Redis that lost its data (restart without
persistence, eviction, failover) is therefore detected per author and repaired from PostgreSQL
instead of silently restarting the eta term from zero; each repair is counted in
`stats:author_state_rebuilt`.

`posts.raw` is keyed by author, so one consumer owns an author at a time and updates never race.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from sqlalchemy import Engine, text

from services.storage.redis_keys import KEYS

_STORED = text("SELECT id FROM posts WHERE id = ANY(CAST(:ids AS text[]))")
_COUNTS = text("SELECT author_id, view, n FROM author_states WHERE author_id = ANY(CAST(:a AS text[]))")
_VECTORS = text("SELECT author_id, view, n, mean FROM author_states WHERE author_id = ANY(CAST(:a AS text[]))")


@dataclass
class ViewState:
    mean: np.ndarray  # float32 [D]
    n: int

    def fold(self, x: np.ndarray) -> None:
        """Running mean update: mean += (x - mean) / (n + 1)."""
        self.n += 1
        self.mean = self.mean + (x.astype(np.float32) - self.mean) / np.float32(self.n)


class UserStateStore:
    def __init__(self, rds: redis.Redis, db: Engine, dims: dict[str, int]) -> None:
        self.redis, self.db, self.dims = rds, db, dims
        self.rebuilt = 0  # (author, view) states this process reloaded from PostgreSQL

    def load(
        self, authors: Sequence[str], post_ids: Sequence[str]
    ) -> tuple[dict[tuple[str, str], ViewState], set[str]]:
        """States for every (author, view), and which of `post_ids` are already stored (never folded again)."""
        uniq = list(dict.fromkeys(authors))
        with self.db.connect() as conn:
            stored = set(conn.execute(_STORED, {"ids": list(post_ids)}).scalars())
            truth = {(a, v): n for a, v, n in conn.execute(_COUNTS, {"a": uniq})}
        pipe = self.redis.pipeline(transaction=False)
        for a in uniq:
            for v in self.dims:
                pipe.hmget(KEYS.user_state(a, v), "mean", "n")
        replies = iter(pipe.execute())
        states: dict[tuple[str, str], ViewState] = {}
        stale: set[str] = set()
        for a in uniq:
            for v, d in self.dims.items():
                mean_b, n_b = next(replies)
                want = truth.get((a, v), 0)
                if mean_b is not None and int(n_b) == want:
                    states[(a, v)] = ViewState(np.frombuffer(mean_b, np.float32).copy(), want)
                elif want == 0:
                    states[(a, v)] = ViewState(np.zeros(d, np.float32), 0)
                else:
                    stale.add(a)
        if stale:
            self._reload(stale, states)
        return states, stored

    def _reload(self, authors: set[str], states: dict[tuple[str, str], ViewState]) -> None:
        """Vectors Redis lacks or holds stale, from PostgreSQL; written back to Redis at once."""
        with self.db.connect() as conn:
            rows = conn.execute(_VECTORS, {"a": sorted(authors)}).all()
        fresh = {(a, v): ViewState(np.frombuffer(mean, np.float32).copy(), n) for a, v, n, mean in rows}
        repaired = {k: st for k, st in fresh.items() if k not in states}
        states.update(repaired)
        self.rebuilt += len(repaired)
        self.cache(repaired)
        self.redis.incrby(KEYS.stats("author_state_rebuilt"), len(repaired))

    @staticmethod
    def rows(changed: dict[tuple[str, str], ViewState]) -> list[dict[str, Any]]:
        """The `author_states` rows of the changed states (written by the batch's transaction)."""
        return [
            {"author_id": a, "view": v, "n": st.n, "mean": st.mean.astype(np.float32).tobytes()}
            for (a, v), st in changed.items()
        ]

    def cache(self, changed: dict[tuple[str, str], ViewState]) -> None:
        """Copy states to Redis after PostgreSQL committed them (one MULTI/EXEC: all or nothing)."""
        if not changed:
            return
        pipe = self.redis.pipeline(transaction=True)
        for (a, v), st in changed.items():
            pipe.hset(KEYS.user_state(a, v), mapping={"mean": st.mean.astype(np.float32).tobytes(), "n": st.n})
        pipe.execute()

    def get(self, author: str, view: str) -> ViewState | None:
        """The state as PostgreSQL holds it (what the next post of this author will see)."""
        with self.db.connect() as conn:
            row = conn.execute(
                text("SELECT n, mean FROM author_states WHERE author_id = :a AND view = :v"), {"a": author, "v": view}
            ).first()
        return None if row is None else ViewState(np.frombuffer(row.mean, np.float32).copy(), row.n)
