"""Event-time trend windows kept in PostgreSQL, idempotent by post id.

Design (why not Faust table state): Faust's changelog writes and its offset commits are not
atomic, so after a SIGKILL a changelog-backed aggregate can count a replayed post twice or miss
one. Here a batch of ``posts.scored`` records is applied in ONE PostgreSQL transaction per batch,
and each source partition's state is owned by that partition (no lock shared by all workers):

1. every (watch, post) goes into ``trend_members`` with ``ON CONFLICT DO NOTHING`` (a replayed
   post is a no-op, whichever worker replays it, before or after a rebalance), stamped with its
   partition's closed-through point (``arrival_wm``);
2. the partition's highest event time goes into ``trend_watermarks``; the partition closes its
   *parts* of every window ending by that time minus the allowed lateness, aggregated in SQL from
   its own members into ``trend_window_parts``, and moves its own ``closed_through``;
3. a merge (one merger at a time, ``pg_try_advisory_xact_lock``: a busy merger is skipped, never
   waited for) sums the parts of every window that all partitions closed, i.e. up to the global
   watermark (the minimum over partitions minus the lateness, idle partitions excepted), into
   ``trend_windows``; alert rules are evaluated on those windows and their firings (plus an
   outbox row each) are written in the same transaction. Partitions behind it (idle ones) have
   their parts closed by the merger, under their lock.

The parts of a window add up because ``posts.scored`` is keyed by author: one author's posts are
all on one partition, so counts, score sums and distinct authors are disjoint across parts, and
each window's top posts are the top of the parts' tops. The Kafka offset is committed only after
the transaction, so a crash at any point either replays into no-ops or redoes the whole batch. A
partition's batches are serialised by ``pg_advisory_xact_lock(TRENDS_BATCH, partition)``, taken
only by the worker owning it (two only while a rebalance hands it over), so "which of its windows
were closed when a post arrived" (``arrival_wm``) is exact: a post counts in every window that
ends after it, and is *late* (counted in ``trend_windows.late_posts``, never silently dropped)
for the others.

Raw SQL on purpose: ``pipelines`` may not import ``services``; the tables are defined in
``services/storage/alert_models.py`` and created by migrations 0002 and 0008.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from pipelines.advisory_locks import Lock
from pipelines.schemas import ScoredPost
from pipelines.trends.rules import COUNT_METRICS, Rule, Verdict, evaluate
from pipelines.trends.windows import (
    DEFAULT_SPECS,
    WindowSpec,
    closed_windows_containing,
    epoch_time,
    global_watermark,
)

log = logging.getLogger("voxpop.trends")

LOCK_KEY = int(Lock.TRENDS_BATCH)  # with a partition: pg_advisory_xact_lock(key, partition), per partition
MERGE_KEY = int(Lock.TRENDS_MERGE)  # the merge of closed parts and the alert rules: one merger at a time
_EPOCH_FLOOR = datetime(1900, 1, 1, tzinfo=UTC)
WINDOW_COLUMNS = (
    "watch_id",
    "size",
    "window_start",
    "window_end",
    "n_posts",
    "n_negative",
    "n_neutral",
    "n_positive",
    "mean_score",
    "share_negative",
    "share_positive",
    "unique_authors",
    "top_negative",
    "top_positive",
    "late_posts",
)


@dataclass
class LatePost:
    watch_id: int
    post_id: str
    size: str
    window_start: datetime


@dataclass
class BatchResult:
    """What one batch did; the service layer turns it into Redis updates, logs and Kafka events."""

    received: int = 0
    new_members: int = 0
    duplicate_members: int = 0
    late: list[LatePost] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)
    firings: list[dict[str, Any]] = field(default_factory=list)
    live: list[dict[str, Any]] = field(default_factory=list)
    watermark: datetime | None = None


@dataclass
class TrendConfig:
    source: str = "posts.scored"
    specs: tuple[WindowSpec, ...] = DEFAULT_SPECS
    lateness_s: float = 300.0
    expected_partitions: int = 1
    idle_s: float = 120.0
    top_n: int = 5
    #: closed windows kept per size, in days of event time behind the merged point (absent: forever)
    retention_days: dict[str, float] = field(default_factory=dict)
    #: memberships kept (days of event time): they close windows and feed the live snapshots
    members_retention_days: float | None = None
    #: a batch merges only if this long passed since this processor's last merge (0: every batch);
    #: the worker's relay timer merges too, so closed windows wait at most about this long
    merge_interval_s: float = 0.0


class TrendProcessor:
    """Applies batches of scored posts to the window store; see the module docstring."""

    def __init__(self, engine: Engine, config: TrendConfig | None = None) -> None:
        self.engine = engine
        self.cfg = config or TrendConfig()
        self.started = time.monotonic()
        self._spec_by_name = {s.name: s for s in self.cfg.specs}
        self._merged_at = float("-inf")
        self._merged_wm: datetime | None = None

    # --- public -------------------------------------------------------------------------------

    def process(self, items: Sequence[tuple[int, ScoredPost]]) -> BatchResult:
        """Apply ``(source partition, post)`` pairs; returns what changed.

        One transaction per batch holds only the locks of the batch's own partitions (uncontended
        unless a rebalance hands a partition over mid-batch); the merge runs after it, skipped when
        another worker is merging (that merge, or the next one, takes these parts too).
        """
        res = BatchResult(received=len(items))
        by_part: dict[int, list[tuple[int, ScoredPost]]] = defaultdict(list)
        for it in items:
            by_part[it[0]].append(it)
        with self.engine.begin() as conn:
            if self._any_unclosed(conn, list(by_part)):  # before the partition locks: see _part_closed_through
                conn.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": MERGE_KEY})
            for part in sorted(by_part):
                conn.execute(text(_PART_LOCK_SQL), {"k": LOCK_KEY, "p": part})
            touched: set[int] = set()
            for part in sorted(by_part):
                its = by_part[part]
                prev = self._part_closed_through(conn, part)
                new = self._insert_members(conn, its, prev)
                res.new_members += len(new)
                res.duplicate_members += sum(len(set(p.watches)) for _, p in its) - len(new)
                res.late += self._record_late(conn, new, prev)
                self._update_live(conn, part, new, {p.post_id: p for _, p in its}, prev)
                touched.update(w for w, _, _ in new)
                top = self._bump_watermark(conn, part, its)
                wm = top - timedelta(seconds=self.cfg.lateness_s)
                if prev is None or wm > prev:
                    self._close_part(conn, part, prev, wm)
        if time.monotonic() - self._merged_at >= self.cfg.merge_interval_s:
            merged = self.merge()
            res.closed, res.firings = merged.closed, merged.firings
        res.watermark = self._merged_wm
        res.live = self.live_snapshots(touched, res.watermark)
        return res

    def merge(self, through: datetime | None = None, wait: bool = False) -> BatchResult:
        """Merge the parts of every window that all partitions closed into ``trend_windows`` and
        evaluate the alert rules on them, in event-time order; one merger at a time.

        ``through``: merge up to here instead of the watermark (the end of a finite replay).
        Without ``wait`` a merge already running elsewhere makes this a no-op.
        """
        res = BatchResult()
        with self.engine.begin() as conn:
            if wait:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MERGE_KEY})
            elif not conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": MERGE_KEY}).scalar_one():
                return res
            self._merged_at = time.monotonic()
            prev = self._closed_through(conn)
            wm = through or self._watermark(conn)
            res.watermark = prev
            if wm is not None and (prev is None or wm > prev):
                self._catch_up(conn, wm)
                res.closed, res.firings = self._merge(conn, prev, wm)
                res.watermark = wm
        self._merged_wm = res.watermark
        return res

    def close_partitions(self, parts: Iterable[int], through: datetime) -> None:
        """Close these partitions' parts of every window ending by ``through``, as their own
        watermark would (the end of a finite stream: each worker closes its own partitions, in
        parallel); a merge then only sums the parts."""
        with self.engine.begin() as conn:
            self._catch_up(conn, through, sorted(parts))

    def advance(self, watermark: datetime) -> BatchResult:
        """Close every window ending at or before ``watermark`` (end of a finite replay)."""
        return self.merge(through=watermark, wait=True)

    def live_snapshots(self, watches: Iterable[int], watermark: datetime | None) -> list[dict[str, Any]]:
        """The newest open window of each of ``watches`` and each spec, summed over the partitions'
        live parts (windows the merged ``watermark`` already closed are skipped). Distinct authors
        are ``None`` here: they do not add up incrementally, and are counted when windows close."""
        ids = sorted(set(watches))
        if not ids:
            return []
        newest: dict[tuple[int, str], list[Any]] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT * FROM trend_live_parts WHERE source = :s AND watch_id = ANY(:w)"),
                {"s": self.cfg.source, "w": ids},
            ).mappings()
            for r in rows:
                have = newest.setdefault((r["watch_id"], r["size"]), [r])
                if r["window_start"] > have[0]["window_start"]:
                    have[:] = [r]
                elif r is not have[0] and r["window_start"] == have[0]["window_start"]:
                    have.append(r)
        return [
            _live_window(watch, size, parts, self.cfg.top_n)
            for (watch, size), parts in sorted(newest.items())
            if watermark is None or parts[0]["window_end"] > watermark
        ]

    def prune(self) -> dict[str, int]:
        """Retention, in event time behind the merged point (replays of old data keep theirs):
        closed windows per size and memberships older than configured. Rows deleted per kind."""
        out: dict[str, int] = {}
        with self.engine.begin() as conn:
            through = conn.execute(
                text("SELECT closed_through FROM trend_progress WHERE source = :s"), {"s": self.cfg.source}
            ).scalar()
            if through is None:
                return out
            longest = max((sp.size_s for sp in self.cfg.specs), default=0) + self.cfg.lateness_s
            for size, days in self.cfg.retention_days.items():
                cut = through - timedelta(days=days)
                out[size] = conn.execute(
                    text("DELETE FROM trend_windows WHERE size = :z AND window_start < :cut"), {"z": size, "cut": cut}
                ).rowcount
            if self.cfg.members_retention_days is not None:  # never what an open window still needs
                keep = max(timedelta(days=self.cfg.members_retention_days), timedelta(seconds=2 * longest))
                out["members"] = conn.execute(
                    text("DELETE FROM trend_members WHERE created_at < :cut"), {"cut": through - keep}
                ).rowcount
        return out

    def unpublished_firings(self, limit: int = 500) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    text("SELECT * FROM alert_firings WHERE published_at IS NULL ORDER BY id LIMIT :n"),
                    {"n": limit},
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    def mark_published(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if ids:
            with self.engine.begin() as conn:
                conn.execute(text("UPDATE alert_firings SET published_at = now() WHERE id = ANY(:ids)"), {"ids": ids})

    # --- steps --------------------------------------------------------------------------------

    def _closed_through(self, conn: Connection) -> datetime | None:
        """How far windows are merged (the global, "closed" point the API and dispatcher read)."""
        conn.execute(
            text(
                "INSERT INTO trend_progress (source, closed_through, updated_at) "
                "VALUES (:s, NULL, now()) ON CONFLICT DO NOTHING"
            ),
            {"s": self.cfg.source},
        )
        return conn.execute(
            text("SELECT closed_through FROM trend_progress WHERE source = :s"), {"s": self.cfg.source}
        ).scalar_one()

    def _any_unclosed(self, conn: Connection, parts: list[int]) -> bool:
        """Whether any of these partitions has no closed-through point of its own yet.

        Such a partition is invisible to a concurrent merge's catch-up (its row is not committed
        yet), so its batch takes the merge lock in shared mode first, before any partition lock (a
        merger holds the merge lock while it takes partition locks): a merge running now finishes
        first, and its merged point is read after it; no merge starts until this batch commits
        (merges only try the lock, and run again later).
        """
        n = conn.execute(
            text(
                "SELECT count(*) FROM trend_watermarks WHERE source = :s AND partition = ANY(:p) "
                "AND closed_through IS NOT NULL"
            ),
            {"s": self.cfg.source, "p": parts},
        ).scalar_one()
        return n < len(parts)

    def _part_closed_through(self, conn: Connection, part: int) -> datetime | None:
        """Through where this partition's parts are closed: never before the merged point, so a
        partition that reports for the first time (or was never caught up) after windows were
        merged finds its posts for those windows late, instead of closing parts of merged windows."""
        return conn.execute(
            text(
                "SELECT greatest((SELECT closed_through FROM trend_watermarks WHERE source = :s AND partition = :p), "
                "(SELECT closed_through FROM trend_progress WHERE source = :s))"
            ),
            {"s": self.cfg.source, "p": part},
        ).scalar_one_or_none()

    def _insert_members(
        self, conn: Connection, items: Sequence[tuple[int, ScoredPost]], prev: datetime | None
    ) -> list[tuple[int, str, datetime]]:
        rows: list[dict[str, Any]] = []
        seen: set[tuple[int, str]] = set()
        for partition, p in items:
            for w in sorted(set(p.watches)):
                if (w, p.post_id) in seen:
                    continue
                seen.add((w, p.post_id))
                t, a, lab, sc = p.created_at.isoformat(), p.author_id, p.label, float(p.score)
                rows.append({"w": w, "p": p.post_id, "t": t, "a": a, "l": lab, "s": sc, "part": partition})
        if not rows:
            return []
        # one JSON document, not seven arrays: psycopg adapts a JSON string in C, arrays per element
        out = conn.execute(text(_INSERT_MEMBERS_SQL), {"rows": json.dumps(rows), "wm": prev}).all()
        return [(r[0], r[1], r[2]) for r in out]

    def _record_late(
        self, conn: Connection, new: list[tuple[int, str, datetime]], prev: datetime | None
    ) -> list[LatePost]:
        late: list[LatePost] = []
        for watch, post_id, t in new:
            for spec, start in closed_windows_containing(t, prev, self.cfg.specs):
                late.append(LatePost(watch, post_id, spec.name, start))
        if late:
            per = Counter((lp.watch_id, lp.size, lp.window_start) for lp in late)
            for (watch, size, start), n in per.items():
                spec = self._spec_by_name[size]
                conn.execute(
                    text(_LATE_UPSERT_SQL),
                    {
                        "w": watch,
                        "size": size,
                        "start": start,
                        "n": n,
                        "end": start + timedelta(seconds=spec.size_s),
                    },
                )
        return late

    def _update_live(
        self,
        conn: Connection,
        part: int,
        new: list[tuple[int, str, datetime]],
        posts: dict[str, ScoredPost],
        prev: datetime | None,
    ) -> None:
        """Add the batch's new memberships to this partition's newest open window per watch and
        spec (``trend_live_parts``: one row each, replaced when a newer window starts). A post
        counts only in the newest window it is in, which is the one a live view shows."""
        prev_e = prev.timestamp() if prev is not None else float("-inf")
        per_watch: dict[int, list[tuple[float, ScoredPost]]] = defaultdict(list)
        for watch, post_id, t in new:
            per_watch[watch].append((t.timestamp(), posts[post_id]))
        acc: dict[tuple[int, str], _LiveAcc] = {}
        for watch, its in per_watch.items():
            newest = max(e for e, _ in its)
            for spec in self.cfg.specs:
                start = newest // spec.step_s * spec.step_s
                if start + spec.size_s > prev_e:  # else closed for this partition: late posts only
                    acc[(watch, spec.name)] = _LiveAcc(start, spec.size_s, [p for e, p in its if e >= start])
        if acc:
            rows = [a.row(watch, size, self.cfg.top_n) for (watch, size), a in acc.items()]
            conn.execute(
                text(_LIVE_UPSERT_SQL),
                {"src": self.cfg.source, "part": part, "rows": json.dumps(rows), "top": self.cfg.top_n},
            )

    def _bump_watermark(self, conn: Connection, part: int, items: Sequence[tuple[int, ScoredPost]]) -> datetime:
        """Raise this partition's highest event time; returns it (as stored, never lowered)."""
        return conn.execute(
            text(
                "INSERT INTO trend_watermarks (source, partition, max_event_time, updated_at) "
                "VALUES (:s, :p, :t, now()) ON CONFLICT (source, partition) DO UPDATE SET "
                "max_event_time = GREATEST(trend_watermarks.max_event_time, EXCLUDED.max_event_time), "
                "updated_at = now() RETURNING max_event_time"
            ),
            {"s": self.cfg.source, "p": part, "t": max(p.created_at for _, p in items)},
        ).scalar_one()

    def _watermark(self, conn: Connection) -> datetime | None:
        rows = conn.execute(
            text("SELECT partition, max_event_time, updated_at, now() AS now FROM trend_watermarks WHERE source = :s"),
            {"s": self.cfg.source},
        ).all()
        if not rows:
            return None
        maxes = {r.partition: r.max_event_time for r in rows}
        idle: set[int] = set()
        if time.monotonic() - self.started >= self.cfg.idle_s:  # grace after (re)start
            horizon = rows[0].now - timedelta(seconds=self.cfg.idle_s)
            idle = {r.partition for r in rows if r.updated_at < horizon}
            idle.add(-1)  # stop waiting for partitions that never reported
        return global_watermark(maxes, self.cfg.expected_partitions, idle, self.cfg.lateness_s)

    def _close_part(self, conn: Connection, part: int, prev: datetime | None, wm: datetime) -> None:
        """Aggregate this partition's members of every window ending in ``(prev, wm]`` into its
        parts (the caller holds the partition's lock); moves the partition's closed-through point."""
        prev_e = (prev or _EPOCH_FLOOR).timestamp()
        # The CTEs' row estimates are guesses: nested loops over them go quadratic, hash joins do
        # not (and with them off the inflated cost estimate must not trigger JIT compilation).
        conn.execute(text("SET LOCAL enable_nestloop = off"))
        conn.execute(text("SET LOCAL jit = off"))
        for spec in self.cfg.specs:
            # windows end on multiples of the step: the first and last ending in (prev, wm]
            first_end = (prev_e // spec.step_s + 1) * spec.step_s
            last_end = wm.timestamp() // spec.step_s * spec.step_s
            if last_end < first_end:
                continue  # no window of this spec closes: nothing to scan
            conn.execute(
                text(_CLOSE_PART_SQL),
                {
                    "src": self.cfg.source,
                    "part": part,
                    "lo": epoch_time(first_end - spec.size_s),  # the members of exactly the closing windows
                    "hi": epoch_time(last_end),
                    "step": spec.step_s,
                    "slots": spec.slots,
                    "size": spec.size_s,
                    "prev_e": prev_e,
                    "wm_e": wm.timestamp(),
                    "name": spec.name,
                    "top": self.cfg.top_n,
                },
            )
        conn.execute(
            text("UPDATE trend_watermarks SET closed_through = :wm WHERE source = :s AND partition = :p"),
            {"wm": wm, "s": self.cfg.source, "p": part},
        )

    def _catch_up(self, conn: Connection, wm: datetime, parts: list[int] | None = None) -> None:
        """Close the parts of partitions behind ``wm`` (idle ones, or the end of a replay; of
        ``parts`` only if given) under their locks, so the merge misses no partition's members."""
        behind = conn.execute(
            text(
                "SELECT partition FROM trend_watermarks WHERE source = :s "
                "AND (closed_through IS NULL OR closed_through < :wm) "
                "AND (CAST(:parts AS int[]) IS NULL OR partition = ANY(CAST(:parts AS int[]))) ORDER BY partition"
            ),
            {"s": self.cfg.source, "wm": wm, "parts": parts},
        ).scalars()
        for part in list(behind):
            conn.execute(text(_PART_LOCK_SQL), {"k": LOCK_KEY, "p": part})
            prev = self._part_closed_through(conn, part)  # read again under the lock
            if prev is None or prev < wm:
                self._close_part(conn, part, prev, wm)

    def _merge(
        self, conn: Connection, prev: datetime | None, wm: datetime
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        # The parts come from a DELETE ... RETURNING, which the planner estimates at one row (the
        # table churns faster than its statistics): with nested loops that join is quadratic in
        # the windows merged (seconds per merge at thousands of windows); hash joins stay linear.
        # (Disabling them inflates the cost estimate past the JIT threshold: no JIT for a merge.)
        conn.execute(text("SET LOCAL enable_nestloop = off"))
        conn.execute(text("SET LOCAL jit = off"))
        result = conn.execute(
            text(_MERGE_SQL), {"s": self.cfg.source, "lo": prev or _EPOCH_FLOOR, "hi": wm, "top": self.cfg.top_n}
        )
        closed = [_window_dict(zip(WINDOW_COLUMNS, r, strict=True)) for r in result.all()]
        conn.execute(
            text("UPDATE trend_progress SET closed_through = :wm, updated_at = now() WHERE source = :s"),
            {"wm": wm, "s": self.cfg.source},
        )
        closed.sort(key=lambda r: (r["window_end"], r["size"], r["watch_id"]))
        firings = self._evaluate_rules(conn, closed) if closed else []
        return closed, firings

    # --- alert rules --------------------------------------------------------------------------

    def _evaluate_rules(self, conn: Connection, closed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rules = [
            Rule.from_row(r)
            for r in conn.execute(text("SELECT * FROM alert_rules WHERE enabled ORDER BY id")).mappings().all()
        ]
        rules = [r for r in rules if r.window_size in self._spec_by_name]
        if not rules:
            return []
        history = _HistoryCache(conn)
        states: dict[tuple[int, int], dict[str, Any]] = {}
        firings: list[dict[str, Any]] = []
        for win in closed:
            for rule in rules:
                if rule.window_size != win["size"] or rule.watch_id not in (None, win["watch_id"]):
                    continue
                spec = self._spec_by_name[rule.window_size]
                hist = history.values(rule, spec, win) if rule.uses_baseline else []
                verdict = evaluate(rule, win, hist)
                key = (rule.id, win["watch_id"])
                if key not in states:
                    states[key] = _load_state(conn, *key)
                if not verdict.evaluated and not states[key]["firing"]:
                    continue
                ev = self._transition(conn, rule, spec, win, verdict, states[key], history)
                if ev is not None:
                    firings.append(ev)
        return firings

    def _transition(
        self,
        conn: Connection,
        rule: Rule,
        spec: WindowSpec,
        win: dict[str, Any],
        verdict: Verdict,
        state: dict[str, Any],
        history: _HistoryCache,
    ) -> dict[str, Any] | None:
        """The episode state machine, on the window's event time (never the wall clock).

        Closed -> firing on a hot window (unless within ``cooldown_s`` of the last hot one); firing
        stays firing through warm windows and resolves after ``resolve_after`` calm windows (empty
        windows count as calm); a hot window after a non-hot one re-escalates the open episode.
        """
        end = win["window_end"]
        hot = verdict.firing
        if hot or state["firing"]:
            history.exclude(rule.id, win, conn)
        escalated = False
        if state["firing"]:
            if hot:
                gap = (end - state["last_fired_end"]).total_seconds() if state["last_fired_end"] else 0
                escalated = gap > spec.step_s
                if escalated:
                    state["severity"] = rule.escalated(state["severity"] or rule.severity)
                state["last_fired_end"] = state["last_warm_end"] = end
                status = "firing"
            elif verdict.calm(rule.resolve_ratio):
                warm = state["last_warm_end"] or state["last_fired_end"] or _EPOCH_FLOOR
                if (end - warm).total_seconds() < rule.resolve_after * spec.step_s:
                    return None  # calm, but not for long enough yet
                status = "resolved"
            else:
                state["last_warm_end"] = end
                _save_state(conn, rule.id, win["watch_id"], state, None)
                return None
        elif hot:
            last = state["last_fired_end"]
            if last is not None and (end - last).total_seconds() < rule.cooldown_s:
                return None  # within cooldown of the last episode: no new episode
            state.update(severity=rule.severity, episode_start=end, last_fired_end=end, last_warm_end=end)
            status = "firing"
        else:
            return None
        base = verdict.baseline
        row = {
            "rule_id": rule.id,
            "rule_name": rule.name,
            "status": status,
            "watch_id": win["watch_id"],
            "window_size": win["size"],
            "window_start": win["window_start"],
            "window_end": end,
            "metric": rule.metric,
            "observed": verdict.observed,
            "baseline": base.mean if base else None,
            "baseline_std": base.std if base else None,
            "zscore": verdict.z,
            "n_posts": win["n_posts"],
            "severity": state["severity"] or rule.severity,
            "sample_post_ids": list(win.get(rule.sample_field) or [])[:5],
            "episode_start": state["episode_start"],
            "reason": verdict.reason,
            "escalated": escalated,
        }
        fid = conn.execute(text(_FIRING_INSERT_SQL), row).scalar()
        if fid is None:  # this exact event exists already (a replay): nothing new to announce
            return None
        conn.execute(text("INSERT INTO alert_outbox (firing_id, created_at) VALUES (:f, now())"), {"f": fid})
        if status == "resolved":
            state.update(firing=False, episode_start=None, severity=None)
        else:
            state["firing"] = True
        _save_state(conn, rule.id, win["watch_id"], state, fid)
        row.update(id=fid)
        return row


class _HistoryCache:
    """Closed windows of one watch and size, fetched once per batch for rule baselines, and the
    windows each rule keeps out of its baseline (those of its episodes)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.rows: dict[tuple[int, str], dict[datetime, dict[str, Any]]] = {}
        self.first: dict[tuple[int, str], datetime | None] = {}
        self.excluded: dict[tuple[int, int], set[datetime]] = {}

    def _load(self, watch: int, size: str) -> None:
        rows = (
            self.conn.execute(
                text(
                    "SELECT window_start, n_posts, n_negative, n_neutral, n_positive, unique_authors, "
                    "mean_score, "
                    "share_negative, share_positive FROM trend_windows WHERE watch_id = :w AND size = :s "
                    "ORDER BY window_start DESC LIMIT 5000"
                ),
                {"w": watch, "s": size},
            )
            .mappings()
            .all()
        )
        self.rows[(watch, size)] = {r["window_start"]: dict(r) for r in rows}
        self.first[(watch, size)] = min(self.rows[(watch, size)], default=None)

    def _excluded(self, rule_id: int, watch: int) -> set[datetime]:
        key = (rule_id, watch)
        if key not in self.excluded:
            self.excluded[key] = set(
                self.conn.execute(
                    text("SELECT window_start FROM alert_episode_windows WHERE rule_id = :r AND watch_id = :w"),
                    {"r": rule_id, "w": watch},
                ).scalars()
            )
        return self.excluded[key]

    def exclude(self, rule_id: int, win: dict[str, Any], conn: Connection) -> None:
        self._excluded(rule_id, win["watch_id"]).add(win["window_start"])
        conn.execute(
            text(
                "INSERT INTO alert_episode_windows (rule_id, watch_id, window_start) VALUES (:r, :w, :s) "
                "ON CONFLICT DO NOTHING"
            ),
            {"r": rule_id, "w": win["watch_id"], "s": win["window_start"]},
        )

    def _value(self, rule: Rule, row: dict[str, Any] | None) -> float | None:
        if rule.metric in COUNT_METRICS:
            return float(row[rule.metric]) if row else 0.0
        if row and row["n_posts"] >= max(1, rule.min_volume) and row[rule.metric] is not None:
            return float(row[rule.metric])
        return None

    def values(self, rule: Rule, spec: WindowSpec, win: dict[str, Any]) -> list[float]:
        """Baseline values, oldest first: the ``lookback`` previous windows not in an episode
        (reaching up to 4x further back for clean ones), or with ``seasonality=hour_of_day`` the
        same hour +-1 step of the previous 7 days once ``min_baseline`` of those exist."""
        key = (win["watch_id"], spec.name)
        if key not in self.rows:
            self._load(*key)
        rows, first = self.rows[key], self.first[key]
        skip = self._excluded(rule.id, win["watch_id"]) if rule.exclude_fired else set()
        if first is None:
            return []

        def take(starts: Iterable[datetime], limit: int) -> list[float]:
            out: list[float] = []
            for start in starts:
                if start < first or start in skip:
                    continue
                v = self._value(rule, rows.get(start))
                if v is not None:
                    out.append(v)
                    if len(out) >= limit:
                        break
            return out

        ws = win["window_start"]
        if rule.seasonality == "hour_of_day" and 86400 % spec.step_s == 0:
            same = [
                ws - timedelta(days=d) + timedelta(seconds=k * spec.step_s) for d in range(1, 8) for k in (-1, 0, 1)
            ]
            seasonal = take(same, len(same))
            if len(seasonal) >= rule.min_baseline:
                return seasonal[::-1]
        recent = (ws - timedelta(seconds=i * spec.step_s) for i in range(1, 4 * rule.lookback + 1))
        return take(recent, rule.lookback)[::-1]


def _load_state(conn: Connection, rule_id: int, watch_id: int) -> dict[str, Any]:
    row = (
        conn.execute(
            text(
                "SELECT firing, last_fired_end, last_warm_end, episode_start, severity "
                "FROM alert_rule_state WHERE rule_id = :r AND watch_id = :w"
            ),
            {"r": rule_id, "w": watch_id},
        )
        .mappings()
        .first()
    )
    empty = {"firing": False, "last_fired_end": None, "last_warm_end": None, "episode_start": None}
    return dict(row) if row else {**empty, "severity": None}


def _save_state(conn: Connection, rule_id: int, watch_id: int, state: dict[str, Any], ev: int | None) -> None:
    conn.execute(text(_STATE_UPSERT_SQL), {"r": rule_id, "w": watch_id, "ev": ev, **state})


@dataclass
class _LiveAcc:
    """One batch's posts in one partition's newest window of a watch and spec."""

    start: float
    size_s: int
    posts: list[ScoredPost]

    def row(self, watch: int, size: str, top: int) -> dict[str, Any]:
        n = Counter(p.label for p in self.posts)
        scored = [(float(p.score), p.post_id) for p in self.posts]
        neg = heapq.nsmallest(top, scored)
        pos = [(-sc, i) for sc, i in heapq.nsmallest(top, [(-sc, i) for sc, i in scored])]
        return {
            "watch_id": watch,
            "size": size,
            "ws": self.start,
            "we": self.start + self.size_s,
            "n": len(self.posts),
            "neg": n["negative"],
            "neu": n["neutral"],
            "pos": n["positive"],
            "sum": math.fsum(sc for sc, _ in scored),
            "tn": [i for _, i in neg],
            "tns": [sc for sc, _ in neg],
            "tp": [i for _, i in pos],
            "tps": [sc for sc, _ in pos],
        }


def _live_window(watch: int, size: str, parts: list[Any], top: int) -> dict[str, Any]:
    """A live snapshot: the partitions' parts of one open window summed, as the merge sums them."""
    n = sum(r["n_posts"] for r in parts)
    counts = {k: sum(r[f"n_{k}"] for r in parts) for k in ("negative", "neutral", "positive")}
    neg = sorted((sc, i) for r in parts for i, sc in zip(r["top_negative"], r["top_negative_scores"], strict=True))
    pos = sorted(
        ((sc, i) for r in parts for i, sc in zip(r["top_positive"], r["top_positive_scores"], strict=True)),
        key=lambda x: (-x[0], x[1]),
    )
    return {
        "watch_id": watch,
        "size": size,
        "window_start": parts[0]["window_start"],
        "window_end": parts[0]["window_end"],
        "n_posts": n,
        **{f"n_{k}": v for k, v in counts.items()},
        "mean_score": sum(r["sum_score"] for r in parts) / n if n else None,
        "share_negative": counts["negative"] / n if n else None,
        "share_positive": counts["positive"] / n if n else None,
        "unique_authors": None,
        "top_negative": [i for _, i in neg[:top]],
        "top_positive": [i for _, i in pos[:top]],
        "open": True,
    }


def _window_dict(r: Any) -> dict[str, Any]:
    d = dict(r)
    for k in ("top_negative", "top_positive"):
        d[k] = list(d.get(k) or [])
    return d


_INSERT_MEMBERS_SQL = """
INSERT INTO trend_members (watch_id, post_id, created_at, author_id, label, score, arrival_wm,
                           source_partition, inserted_at)
SELECT w, p, t, a, l, s, CAST(:wm AS timestamptz), part, now()
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(w int, p text, t timestamptz, a text, l text, s float8, part int)
ON CONFLICT (watch_id, post_id) DO NOTHING
RETURNING watch_id, post_id, created_at
"""

_LATE_UPSERT_SQL = """
INSERT INTO trend_windows (watch_id, size, window_start, window_end, n_posts, n_negative, n_neutral,
    n_positive, label_counts, mean_score, share_negative, share_positive, unique_authors, top_negative,
    top_positive, late_posts, closed_at)
VALUES (:w, :size, :start, :end, 0, 0, 0, 0, '{}'::jsonb, NULL, NULL, NULL, 0, '{}', '{}', :n, now())
ON CONFLICT (watch_id, size, window_start) DO UPDATE
    SET late_posts = trend_windows.late_posts + EXCLUDED.late_posts
"""

_PART_LOCK_SQL = "SELECT pg_advisory_xact_lock(CAST(:k AS int), CAST(:p AS int))"

# Closing a partition's parts, in three passes so that the hopping windows' ``slots``-fold fan-out
# happens on small rows, not on members: (1) members grouped by step-aligned slot and "arrival
# class" (NULL: the member counts in every window containing its slot; else its arrival point,
# which excludes it from the windows that were closed when it arrived: late posts, rare), with each
# group's counts, score sum and top posts (the only per-member sort); (2) each group fanned out to
# the windows containing its slot, summed per window, tops merged from the groups' tops; (3)
# distinct authors per window, from distinct (slot, class, author) rows (hashed, not sorted).
_CLOSE_PART_SQL = """
WITH m AS (
    SELECT watch_id, post_id, author_id, label, score,
           CAST(floor(extract(epoch FROM created_at) / CAST(:step AS bigint)) AS bigint)
               * CAST(:step AS bigint) AS slot,
           arrival_wm
    FROM trend_members
    WHERE source_partition = :part AND created_at >= :lo AND created_at < :hi
), mk AS (
    SELECT watch_id, post_id, author_id, label, score, slot,
           CASE WHEN arrival_wm IS NULL OR arrival_wm < to_timestamp(slot + CAST(:step AS bigint)) THEN NULL
                ELSE arrival_wm END AS late_wm
    FROM m
), g AS (
    SELECT watch_id, slot, late_wm, count(*) AS n_posts,
           count(*) FILTER (WHERE label = 'negative') AS n_negative,
           count(*) FILTER (WHERE label = 'neutral') AS n_neutral,
           count(*) FILTER (WHERE label = 'positive') AS n_positive,
           sum(score) AS sum_score,
           (array_agg(post_id ORDER BY score ASC, post_id ASC))[1:CAST(:top AS int)] AS tn,
           (array_agg(score ORDER BY score ASC, post_id ASC))[1:CAST(:top AS int)] AS tns,
           (array_agg(post_id ORDER BY score DESC, post_id ASC))[1:CAST(:top AS int)] AS tp,
           (array_agg(score ORDER BY score DESC, post_id ASC))[1:CAST(:top AS int)] AS tps
    FROM mk GROUP BY watch_id, slot, late_wm
), w AS (
    SELECT g.*, g.slot - k.i * CAST(:step AS bigint) AS ws
    FROM g CROSS JOIN generate_series(0, CAST(:slots AS int) - 1) AS k(i)
), wf AS (
    SELECT * FROM w
    WHERE ws + CAST(:size AS bigint) > CAST(:prev_e AS float8)
      AND ws + CAST(:size AS bigint) <= CAST(:wm_e AS float8)
      AND (late_wm IS NULL OR late_wm < to_timestamp(ws + CAST(:size AS bigint)))
), sums AS (
    SELECT watch_id, ws, sum(n_posts) AS n_posts, sum(n_negative) AS n_negative, sum(n_neutral) AS n_neutral,
           sum(n_positive) AS n_positive, sum(sum_score) AS sum_score
    FROM wf GROUP BY watch_id, ws
), neg AS (
    SELECT watch_id, ws, (array_agg(pid ORDER BY sc ASC, pid ASC))[1:CAST(:top AS int)] AS top_negative,
           (array_agg(sc ORDER BY sc ASC, pid ASC))[1:CAST(:top AS int)] AS top_negative_scores
    FROM wf, unnest(tn, tns) AS u(pid, sc) GROUP BY watch_id, ws
), pos AS (
    SELECT watch_id, ws, (array_agg(pid ORDER BY sc DESC, pid ASC))[1:CAST(:top AS int)] AS top_positive,
           (array_agg(sc ORDER BY sc DESC, pid ASC))[1:CAST(:top AS int)] AS top_positive_scores
    FROM wf, unnest(tp, tps) AS u(pid, sc) GROUP BY watch_id, ws
), span AS (
    -- each distinct (author, slot, arrival class): the windows it counts in, starts lo..hi on the
    -- step grid (a late class only in windows ending after its arrival point)
    SELECT watch_id, author_id, slot AS hi,
           CASE WHEN late_wm IS NULL THEN slot - CAST(:size AS bigint) + CAST(:step AS bigint)
                ELSE greatest(slot - CAST(:size AS bigint) + CAST(:step AS bigint),
                              CAST(floor((extract(epoch FROM late_wm) - CAST(:size AS bigint)) / CAST(:step AS bigint))
                                   AS bigint) * CAST(:step AS bigint) + CAST(:step AS bigint)) END AS lo
    FROM mk GROUP BY watch_id, author_id, slot, late_wm
), fresh AS (
    -- the part of each span no earlier span of the same author covered (spans taken by start):
    -- an author's pieces are disjoint, so counting pieces that cover a window counts its authors
    SELECT watch_id, lo, hi, max(hi) OVER (PARTITION BY watch_id, author_id ORDER BY lo, hi
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS covered
    FROM span WHERE lo <= hi
), ev AS (
    -- +1 where a piece starts, -1 one step after it ends, and a 0 at every closing window
    SELECT watch_id, greatest(lo, coalesce(covered + CAST(:step AS bigint), lo)) AS ws, 1 AS d
    FROM fresh WHERE covered IS NULL OR hi > covered
    UNION ALL
    SELECT watch_id, hi + CAST(:step AS bigint), -1 FROM fresh WHERE covered IS NULL OR hi > covered
    UNION ALL
    SELECT watch_id, ws, 0 FROM sums
), au AS (
    SELECT watch_id, ws, CAST(sum(sum(d)) OVER (PARTITION BY watch_id ORDER BY ws) AS int) AS unique_authors
    FROM ev GROUP BY watch_id, ws
)
INSERT INTO trend_window_parts (source, watch_id, size, window_start, partition, window_end, n_posts,
    n_negative, n_neutral, n_positive, sum_score, unique_authors, top_negative, top_negative_scores,
    top_positive, top_positive_scores)
SELECT :src, s.watch_id, CAST(:name AS text), to_timestamp(s.ws), :part, to_timestamp(s.ws + CAST(:size AS bigint)),
       s.n_posts, s.n_negative, s.n_neutral, s.n_positive, s.sum_score, au.unique_authors, neg.top_negative,
       neg.top_negative_scores, pos.top_positive, pos.top_positive_scores
FROM sums s JOIN au USING (watch_id, ws) JOIN neg USING (watch_id, ws) JOIN pos USING (watch_id, ws)
ON CONFLICT (source, watch_id, size, window_start, partition) DO UPDATE SET
    n_posts = EXCLUDED.n_posts, n_negative = EXCLUDED.n_negative, n_neutral = EXCLUDED.n_neutral,
    n_positive = EXCLUDED.n_positive, sum_score = EXCLUDED.sum_score, unique_authors = EXCLUDED.unique_authors,
    top_negative = EXCLUDED.top_negative, top_negative_scores = EXCLUDED.top_negative_scores,
    top_positive = EXCLUDED.top_positive, top_positive_scores = EXCLUDED.top_positive_scores
"""

# Parts of every window all partitions closed, summed (authors are disjoint across partitions:
# posts.scored is keyed by author), their top posts merged from each part's top, then deleted.
_MERGE_SQL = f"""
WITH parts AS (
    DELETE FROM trend_window_parts WHERE source = :s AND window_end > :lo AND window_end <= :hi RETURNING *
), neg AS (
    SELECT watch_id, size, window_start,
           (array_agg(pid ORDER BY sc ASC, pid ASC))[1:CAST(:top AS int)] AS top_negative
    FROM parts, unnest(top_negative, top_negative_scores) AS u(pid, sc) GROUP BY 1, 2, 3
), pos AS (
    SELECT watch_id, size, window_start,
           (array_agg(pid ORDER BY sc DESC, pid ASC))[1:CAST(:top AS int)] AS top_positive
    FROM parts, unnest(top_positive, top_positive_scores) AS u(pid, sc) GROUP BY 1, 2, 3
), agg AS (
    SELECT watch_id, size, window_start, max(window_end) AS window_end, CAST(sum(n_posts) AS int) AS n_posts,
           CAST(sum(n_negative) AS int) AS n_negative, CAST(sum(n_neutral) AS int) AS n_neutral,
           CAST(sum(n_positive) AS int) AS n_positive, sum(sum_score) AS sum_score,
           CAST(sum(unique_authors) AS int) AS unique_authors
    FROM parts GROUP BY 1, 2, 3
)
INSERT INTO trend_windows (watch_id, size, window_start, window_end, n_posts, n_negative, n_neutral,
    n_positive, label_counts, mean_score, share_negative, share_positive, unique_authors, top_negative,
    top_positive, late_posts, closed_at)
SELECT a.watch_id, a.size, a.window_start, a.window_end, n_posts, n_negative, n_neutral, n_positive,
       jsonb_build_object('negative', n_negative, 'neutral', n_neutral, 'positive', n_positive),
       sum_score / n_posts, CAST(n_negative AS float8) / n_posts, CAST(n_positive AS float8) / n_posts,
       unique_authors, coalesce(neg.top_negative, '{{}}'), coalesce(pos.top_positive, '{{}}'), 0, now()
FROM agg a LEFT JOIN neg USING (watch_id, size, window_start) LEFT JOIN pos USING (watch_id, size, window_start)
WHERE n_posts > 0
ON CONFLICT (watch_id, size, window_start) DO UPDATE SET
    n_posts = EXCLUDED.n_posts, n_negative = EXCLUDED.n_negative, n_neutral = EXCLUDED.n_neutral,
    n_positive = EXCLUDED.n_positive, label_counts = EXCLUDED.label_counts, mean_score = EXCLUDED.mean_score,
    share_negative = EXCLUDED.share_negative, share_positive = EXCLUDED.share_positive,
    unique_authors = EXCLUDED.unique_authors, top_negative = EXCLUDED.top_negative,
    top_positive = EXCLUDED.top_positive, closed_at = EXCLUDED.closed_at
RETURNING {", ".join(WINDOW_COLUMNS)}
"""


def _merged_top(col: str, what: str, order: str) -> str:
    """SQL for one top-posts column of a live part after an upsert: the batch's own top when it
    opens a newer window, else the stored top merged with the batch's (ids ``pid`` or scores ``sc``)."""
    return (
        f"CASE WHEN EXCLUDED.window_start > l.window_start THEN EXCLUDED.{col}{'_scores' if what == 'sc' else ''} "
        f"ELSE ARRAY(SELECT {what} FROM unnest(l.{col} || EXCLUDED.{col}, l.{col}_scores || EXCLUDED.{col}_scores) "
        f"AS u(pid, sc) ORDER BY sc {order}, pid ASC LIMIT CAST(:top AS int)) END"
    )


# One row per (watch, size, partition): a newer window replaces it, the same window adds to it (top
# posts merged with the batch's), an older one (a late post's) leaves it alone.
_LIVE_UPSERT_SQL = f"""
INSERT INTO trend_live_parts AS l (source, watch_id, size, partition, window_start, window_end, n_posts,
    n_negative, n_neutral, n_positive, sum_score, top_negative, top_negative_scores, top_positive,
    top_positive_scores)
SELECT :src, r.watch_id, r.size, :part, to_timestamp(r.ws), to_timestamp(r.we), r.n, r.neg, r.neu, r.pos,
       r.sum, r.tn, r.tns, r.tp, r.tps
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(watch_id int, size text, ws float8, we float8, n int,
     neg int, neu int, pos int, sum float8, tn text[], tns float8[], tp text[], tps float8[])
ON CONFLICT (source, watch_id, size, partition) DO UPDATE SET
    window_start = EXCLUDED.window_start,
    window_end = EXCLUDED.window_end,
    n_posts = EXCLUDED.n_posts + CASE WHEN EXCLUDED.window_start = l.window_start THEN l.n_posts ELSE 0 END,
    n_negative = EXCLUDED.n_negative + CASE WHEN EXCLUDED.window_start = l.window_start THEN l.n_negative ELSE 0 END,
    n_neutral = EXCLUDED.n_neutral + CASE WHEN EXCLUDED.window_start = l.window_start THEN l.n_neutral ELSE 0 END,
    n_positive = EXCLUDED.n_positive + CASE WHEN EXCLUDED.window_start = l.window_start THEN l.n_positive ELSE 0 END,
    sum_score = EXCLUDED.sum_score + CASE WHEN EXCLUDED.window_start = l.window_start THEN l.sum_score ELSE 0 END,
    top_negative = {_merged_top("top_negative", "pid", "ASC")},
    top_negative_scores = {_merged_top("top_negative", "sc", "ASC")},
    top_positive = {_merged_top("top_positive", "pid", "DESC")},
    top_positive_scores = {_merged_top("top_positive", "sc", "DESC")}
WHERE EXCLUDED.window_start >= l.window_start
"""

_FIRING_INSERT_SQL = """
INSERT INTO alert_firings (rule_id, rule_name, status, watch_id, window_size, window_start, window_end,
    metric,
    observed, baseline, baseline_std, zscore, n_posts, severity, sample_post_ids, fired_at, episode_start,
    reason, escalated)
VALUES (:rule_id, :rule_name, :status, :watch_id, :window_size, :window_start, :window_end, :metric,
    :observed,
    :baseline, :baseline_std, :zscore, :n_posts, :severity, CAST(:sample_post_ids AS varchar[]), now(),
    :episode_start, :reason, :escalated)
ON CONFLICT ON CONSTRAINT uq_alert_firings_event DO NOTHING
RETURNING id
"""

_STATE_UPSERT_SQL = """
INSERT INTO alert_rule_state (rule_id, watch_id, firing, last_fired_end, last_warm_end, episode_start,
    severity, last_event_id, updated_at)
VALUES (:r, :w, :firing, :last_fired_end, :last_warm_end, :episode_start, :severity, :ev, now())
ON CONFLICT (rule_id, watch_id) DO UPDATE SET firing = EXCLUDED.firing,
    last_fired_end = EXCLUDED.last_fired_end, last_warm_end = EXCLUDED.last_warm_end,
    episode_start = EXCLUDED.episode_start, severity = EXCLUDED.severity,
    last_event_id = COALESCE(EXCLUDED.last_event_id, alert_rule_state.last_event_id), updated_at = now()
"""
