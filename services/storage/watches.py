"""Watched brands/topics in PostgreSQL: create, list, and load as matcher specs for ingest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from pipelines.watch_match import WatchSpec
from services.storage.db import engine_for
from services.storage.models import Watch


class WatchTerms(TypedDict, total=False):
    """What a watch matches on (the keyword arguments of `upsert_watch` besides name and kind)."""

    keywords: Sequence[str]
    handles: Sequence[str]
    hashtags: Sequence[str]
    languages: Sequence[str]


AIRLINES: dict[str, WatchTerms] = {
    "United": {"handles": ["united"], "keywords": ["united airlines"]},
    "American": {"handles": ["AmericanAir"], "keywords": ["american airlines"]},
    "US Airways": {"handles": ["USAirways"], "keywords": ["us airways"]},
    "Southwest": {"handles": ["SouthwestAir"], "keywords": ["southwest airlines"]},
    "JetBlue": {"handles": ["JetBlue"], "keywords": ["jetblue"]},
    "Virgin America": {"handles": ["VirginAmerica"], "keywords": ["virgin america"]},
}


def upsert_watch(
    database_url: str,
    *,
    name: str,
    kind: str = "brand",
    keywords: Sequence[str] = (),
    handles: Sequence[str] = (),
    hashtags: Sequence[str] = (),
    languages: Sequence[str] = (),
) -> int:
    values = {
        "name": name,
        "kind": kind,
        "keywords": list(keywords),
        "handles": list(handles),
        "hashtags": list(hashtags),
        "languages": list(languages),
        "active": True,
    }
    stmt = insert(Watch).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Watch.name], set_={k: stmt.excluded[k] for k in values if k != "name"}
    )
    with engine_for(database_url).begin() as conn:
        return int(conn.execute(stmt.returning(Watch.id)).scalar_one())


def list_watches(database_url: str, active_only: bool = False) -> list[dict[str, Any]]:
    q = select(Watch).order_by(Watch.id)
    if active_only:
        q = q.where(Watch.active.is_(True))
    with engine_for(database_url).connect() as conn:
        return [
            {c: getattr(r, c) for c in ("id", "name", "kind", "keywords", "handles", "hashtags", "languages", "active")}
            for r in conn.execute(q)
        ]


def load_watch_specs(database_url: str) -> list[WatchSpec]:
    return [
        WatchSpec(
            id=w["id"],
            name=w["name"],
            keywords=tuple(w["keywords"]),
            handles=tuple(w["handles"]),
            hashtags=tuple(w["hashtags"]),
            languages=tuple(w["languages"]),
        )
        for w in list_watches(database_url, active_only=True)
    ]


def seed_airline_watches(database_url: str) -> dict[str, int]:
    return {name: upsert_watch(database_url, name=name, **spec) for name, spec in AIRLINES.items()}
