"""Helpers for trends/alerts integration tests: clean tables, canonical rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, insert, text

from pipelines.schemas import ScoredPost
from pipelines.trends.airline import AIRLINES
from services.storage.db import truncate_stream_tables
from services.storage.models import Author, Post, PostWatch, Prediction, Watch

TREND_TABLES = (
    "trend_members",
    "trend_windows",
    "trend_watermarks",
    "trend_progress",
    "alert_firings",
    "alert_outbox",
    "alert_rule_state",
    "alert_episode_windows",
    "alert_rules",
    "alert_groups",
    "silences",
    "notifications",
    "webhook_deliveries",
    "webhook_endpoints",
)


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
