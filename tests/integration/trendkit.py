"""Helpers for trends/alerts integration tests: clean tables, canonical rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, insert, text

from pipelines.schemas import ScoredPost
from pipelines.trends.airline import AIRLINES
from services.storage import db
from services.storage.db import truncate_stream_tables
from services.storage.models import Author, Post, PostWatch, Prediction, Watch

# every trend and alert table (one list: services.storage.db)
TREND_TABLES = (*db.TREND_TABLES, *db.ALERT_TABLES)


def clean_alert_db() -> Engine:
    """The test database, migrated, with every trend/alert table empty."""
    from services.storage.db import engine_for, migrate
    from tests.stack import get_test_endpoints

    ep = get_test_endpoints()
    migrate(ep.database_url)
    eng = engine_for(ep.database_url)
    clean(eng)
    return eng


def clean(engine: Engine) -> None:
    with engine.begin() as c:
        c.execute(text(f"TRUNCATE {', '.join(TREND_TABLES)} RESTART IDENTITY CASCADE"))


def store_canonical(engine: Engine, posts: Iterable[ScoredPost]) -> None:
    """What the scorer stores for each post (posts, predictions, post_watches), airlines as watches."""
    posts = list(posts)
    authors: dict[str, Any] = {}
    for p in posts:
        a = authors.setdefault(
            p.author_id,
            {
                "id": p.author_id,
                "platform": "twitter",
                "handle": None,
                "first_seen": p.created_at,
                "last_seen": p.created_at,
                "post_count": 0,
            },
        )
        a["post_count"] += 1
        a["first_seen"], a["last_seen"] = (
            min(a["first_seen"], p.created_at),
            max(a["last_seen"], p.created_at),
        )
    with engine.begin() as c:
        truncate_stream_tables(c, "watches")
        c.execute(
            insert(Watch),
            [
                {
                    "id": i + 1,
                    "name": a,
                    "kind": "brand",
                    "keywords": [a.lower()],
                    "handles": [],
                    "hashtags": [],
                    "languages": [],
                    "active": True,
                }
                for i, a in enumerate(AIRLINES)
            ],
        )
        c.execute(insert(Author), list(authors.values()))
        c.execute(
            insert(Post),
            [
                {
                    "id": p.post_id,
                    "platform": "twitter",
                    "author_id": p.author_id,
                    "text": "",
                    "lang": "en",
                    "created_at": p.created_at,
                    "thread_id": None,
                    "reply_to": None,
                    "modalities": ["text"],
                    "extra": {},
                }
                for p in posts
            ],
        )
        c.execute(
            insert(Prediction),
            [
                {
                    "post_id": p.post_id,
                    "model_name": p.model_name,
                    "model_version": p.model_version,
                    "label": p.label,
                    "probabilities": p.probabilities,
                    "score": p.score,
                    "modality_weights": {},
                    "user_prior_count": 0,
                    "timings_ms": {},
                }
                for p in posts
            ],
        )
        c.execute(
            insert(PostWatch),
            [{"post_id": p.post_id, "watch_id": w, "created_at": p.created_at} for p in posts for w in set(p.watches)],
        )


def fold_stored(engine: Engine, source: str = "stored", lateness_s: float | None = None) -> int:
    """Fold every stored post into trend windows as the trends worker would (the API's trends read
    the windows, never the predictions): with ``lateness_s``, as a live worker with that lateness
    (the newest windows stay open); without, closing them all. Returns the posts folded."""
    from datetime import timedelta

    from pipelines.trends.processor import TrendConfig, TrendProcessor

    with engine.connect() as c:
        rows = c.execute(
            text(
                """SELECT p.id, p.author_id, p.created_at, pr.model_name, pr.model_version, pr.label,
                          pr.probabilities, pr.score, array_agg(pw.watch_id ORDER BY pw.watch_id) AS watches
                   FROM posts p JOIN predictions pr ON pr.post_id = p.id JOIN post_watches pw ON pw.post_id = p.id
                   WHERE NOT starts_with(pr.model_name, 'av:')
                   GROUP BY p.id, pr.post_id, pr.model_name, pr.model_version ORDER BY p.created_at"""
            )
        ).all()
    posts = [
        ScoredPost(
            post_id=r.id,
            author_id=r.author_id,
            created_at=r.created_at,
            watches=list(r.watches),
            model_name=r.model_name,
            model_version=r.model_version,
            label=r.label,
            probabilities=r.probabilities,
            score=r.score,
        )
        for r in rows
    ]
    proc = TrendProcessor(engine, TrendConfig(source=source, expected_partitions=1, lateness_s=lateness_s or 0.0))
    for i in range(0, len(posts), 1000):
        proc.process([(0, p) for p in posts[i : i + 1000]])
    if posts and lateness_s is None:
        proc.advance(posts[-1].created_at + timedelta(days=2))
    return len(posts)
