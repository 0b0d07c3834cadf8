"""What a brand-sentiment report says, gathered from PostgreSQL for one watch and period."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from services.alerts.why import explain, posts_of, why_line
from services.api import queries as Q

PERIODS = {"daily": timedelta(days=1), "weekly": timedelta(days=7), "monthly": None}
PERIOD_NOUN = {"daily": "day", "weekly": "week", "monthly": "month"}
BUCKETS = {"daily": timedelta(hours=1), "weekly": timedelta(days=1), "monthly": timedelta(days=1)}


def _month_start(d: date) -> date:
    return d.replace(day=1)


def period_bounds(period: str, end: date | datetime) -> tuple[datetime, datetime]:
    """[start, end) of the period that ends at ``end`` (a date means its midnight UTC)."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {list(PERIODS)}")
    if isinstance(end, datetime):
        e = end if end.tzinfo else end.replace(tzinfo=UTC)
    else:
        e = datetime.combine(end, time(), tzinfo=UTC)
    length = PERIODS[period]
    if length is None:  # monthly: a calendar month, of varying length
        prev = _month_start((e - timedelta(days=1)).date())
        return datetime.combine(prev, time(), tzinfo=UTC), e
    return e - length, e


def last_full_period_end(period: str, now: datetime) -> datetime:
    """Where the newest complete period ends: today's midnight, this Monday, or the 1st."""
    midnight = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
    if period == "daily":
        return midnight
    if period == "weekly":
        return midnight - timedelta(days=midnight.weekday())
    return datetime.combine(_month_start(midnight.date()), time(), tzinfo=UTC)


def period_end_after(period: str, t: datetime) -> datetime:
    """Where the period holding ``t`` ends (its start is ``last_full_period_end(period, t)``)."""
    start = last_full_period_end(period, t)
    if period == "monthly":
        return datetime.combine(_month_start((start + timedelta(days=32)).date()), time(), tzinfo=UTC)
    step = PERIODS[period]
    assert step is not None
    return start + step


def find_watch(conn: Connection, watch: int | str) -> tuple[int, str]:
    """(id, name) of a watch given by id or name; LookupError when there is none."""
    w = conn.execute(
        text("SELECT id, name FROM watches WHERE id = :i OR name = :n ORDER BY id = :i DESC LIMIT 1"),
        {"i": watch if isinstance(watch, int) else -1, "n": str(watch)},
    ).first()
    if w is None:
        raise LookupError(f"watch {watch!r} not found")
    return int(w[0]), str(w[1])


def posts_between(
    conn: Connection, watch_id: int, start: datetime | None, end: datetime | None
) -> tuple[int, Any, Any]:
    """(posts, first, newest event time) of a watch in [start, end); open ends with None."""
    n, first, last = conn.execute(
        text("""SELECT count(*), min(created_at), max(created_at) FROM post_watches
                WHERE watch_id = :w AND (CAST(:s AS timestamptz) IS NULL OR created_at >= :s)
                  AND (CAST(:e AS timestamptz) IS NULL OR created_at < :e)"""),
        {"w": watch_id, "s": start, "e": end},
    ).one()
    return int(n), first, last


def data_period_end(engine: Engine, watch: int | str, period: str) -> datetime | None:
    """The end of a report's default period, by the data rather than the clock: the newest full
    period that holds posts of the watch, else the (partial) one holding its newest post, so a
    replayed or backfilled stream reports on its own time. None when the watch has no posts."""
    with engine.connect() as conn:
        wid, _ = find_watch(conn, watch)
        _, _, newest = posts_between(conn, wid, None, None)
        if newest is None:
            return None
        end = last_full_period_end(period, newest)
        full = posts_between(conn, wid, period_bounds(period, end)[0], end)[0] > 0
    return end if full else period_end_after(period, newest)


@dataclass
class Kpis:
    posts: int = 0
    mean_score: float | None = None
    share_negative: float | None = None
    share_positive: float | None = None
    unique_authors: int = 0


@dataclass
class ReportData:
    watch_id: int
    watch_name: str
    period: str
    start: datetime
    end: datetime
    prev_start: datetime
    kpis: Kpis
    previous: Kpis
    series: list[dict[str, Any]]
    share_of_voice: list[tuple[str, int]]
    top_positive: list[dict[str, Any]]
    top_negative: list[dict[str, Any]]
    top_authors: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    themes: dict[str, Any] = field(default_factory=dict)  # the period's negatives against the previous period's

    @property
    def narrative(self) -> str:
        """The why in one sentence: negative volume, its leading reasons, its distinguishing phrases."""
        return why_line(self.themes, against=f"the previous {PERIOD_NOUN[self.period]}") if self.themes else ""

    def delta(self, name: str) -> float | None:
        a: float | None = getattr(self.kpis, name)
        b: float | None = getattr(self.previous, name)
        if a is None or b is None:
            return None
        return a - b

    def summary(self) -> dict[str, Any]:
        k = self.kpis
        return {
            "posts": k.posts,
            "mean_score": k.mean_score,
            "share_negative": k.share_negative,
            "share_positive": k.share_positive,
            "unique_authors": k.unique_authors,
            "previous_posts": self.previous.posts,
            "previous_mean_score": self.previous.mean_score,
            "previous_share_negative": self.previous.share_negative,
            "alerts": len(self.alerts),
            "narrative": self.narrative,
        }


def _kpis(conn: Connection, watch_id: int, start: datetime, end: datetime) -> Kpis:
    r = (
        conn.execute(
            text(f"""SELECT count(*) AS n, avg(pr.score) AS mean,
                                      avg((pr.label = 'negative')::int)::float AS neg,
                                      avg((pr.label = 'positive')::int)::float AS pos,
                                      count(DISTINCT p.author_id) AS ua
                               FROM post_watches pw JOIN posts p ON p.id = pw.post_id
                               {Q.LATEST_PRED.replace("LEFT JOIN", "JOIN")}
                               WHERE pw.watch_id = :w AND pw.created_at >= :s AND pw.created_at < :e"""),
            {"w": watch_id, "s": start, "e": end},
        )
        .mappings()
        .one()
    )
    return Kpis(r["n"], r["mean"], r["neg"], r["pos"], r["ua"])


def collect(
    engine: Engine, watch_id: int, period: str, end: date | datetime, top_n: int = 5, with_rows: bool = True
) -> ReportData:
    start, stop = period_bounds(period, end)
    prev_start, _ = period_bounds(period, start)
    with engine.connect() as conn:
        w = conn.execute(text("SELECT id, name FROM watches WHERE id = :w"), {"w": watch_id}).first()
        if w is None:
            raise LookupError(f"watch {watch_id} not found")
        kpis, previous = _kpis(conn, watch_id, start, stop), _kpis(conn, watch_id, prev_start, start)
        series = Q.trends(conn, {watch_id: w[1]}, start, stop, BUCKETS[period])[0]["points"]
        sov = conn.execute(
            text("""SELECT w.name, count(pw.post_id) AS n FROM watches w
                                   LEFT JOIN post_watches pw ON pw.watch_id = w.id AND pw.created_at >= :s
                                        AND pw.created_at < :e
                                   WHERE w.active OR w.id = :w GROUP BY w.name ORDER BY n DESC, w.name"""),
            {"s": start, "e": stop, "w": watch_id},
        ).all()
        f = Q.PostFilter(watch_id=watch_id, since=start, until=stop)
        neg, _ = Q.list_posts(conn, f, "most_negative", top_n)
        pos, _ = Q.list_posts(conn, f, "most_positive", top_n)
        authors = Q.top_authors(conn, watch_id, start, stop, "posts", 10)
        alerts = [
            dict(r)
            for r in conn.execute(
                text(
                    """SELECT id, rule_name, status, severity, metric, observed, baseline, window_size, window_start,
                      window_end, n_posts FROM alert_firings
               WHERE watch_id = :w AND window_end > :s AND window_end <= :e ORDER BY window_end, id"""
                ),
                {"w": watch_id, "s": start, "e": stop},
            ).mappings()
        ]
        neg_now = round((kpis.share_negative or 0) * kpis.posts)
        neg_prev = round((previous.share_negative or 0) * previous.posts)
        themes = explain(
            "negative",
            posts_of(conn, watch_id, start, stop, "negative"),
            posts_of(conn, watch_id, prev_start, start, "negative"),
            neg_prev or None,
            neg_now,
        )
        rows = []
        if with_rows:
            rows = [
                dict(r)
                for r in conn.execute(
                    text(f"""
                SELECT p.id AS post_id, p.created_at, p.author_id, a.handle AS author_handle, pr.label, pr.score,
                       pr.probabilities->>'negative' AS p_negative, pr.probabilities->>'neutral' AS p_neutral,
                       pr.probabilities->>'positive' AS p_positive, pr.user_prior_count,
                       pr.model_name, pr.model_version, array_to_string(p.modalities, '+') AS modalities, p.text
                FROM post_watches pw JOIN posts p ON p.id = pw.post_id JOIN authors a ON a.id = p.author_id
                {Q.LATEST_PRED.replace("LEFT JOIN", "JOIN")}
                WHERE pw.watch_id = :w AND pw.created_at >= :s AND pw.created_at < :e
                ORDER BY p.created_at, p.id"""),
                    {"w": watch_id, "s": start, "e": stop},
                ).mappings()
            ]
    return ReportData(
        watch_id=w[0],
        watch_name=w[1],
        period=period,
        start=start,
        end=stop,
        prev_start=prev_start,
        kpis=kpis,
        previous=previous,
        series=series,
        share_of_voice=[(n, c) for n, c in sov],
        top_positive=[Q.post_out(r) for r in pos],
        top_negative=[Q.post_out(r) for r in neg],
        top_authors=authors,
        alerts=alerts,
        rows=rows,
        themes=themes,
    )
