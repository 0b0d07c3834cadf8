"""The ingest ledger: every accepted post, in PostgreSQL, before ingest says "accepted".

Why: the broker is not the system of record. An in-memory broker that restarts (the embedded
Tansu) or a Kafka cluster that loses an unreplicated partition forgets posts that were never
scored, and a dedup marker that outlives them would refuse the re-ingest. Here a post id is a
duplicate only once its post is durably in this table, and the reconciler
(`services.ingest.reconcile`) re-publishes ledger posts that the broker lost before they were
scored. The payload is the exact JSON put on `posts.raw`, so a re-publish is byte-identical.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

_ACCEPT = text("""
INSERT INTO ingest_ledger (post_id, payload, accepted_at)
SELECT u.post_id, u.payload, now()
FROM unnest(CAST(:post_id AS text[]), CAST(:payload AS text[])) AS u(post_id, payload)
ON CONFLICT (post_id) DO NOTHING
RETURNING post_id
""")
_PUBLISHED = text("""
UPDATE ingest_ledger SET kafka_partition = u.p, kafka_offset = u.o, published_at = now()
FROM unnest(CAST(:post_id AS text[]), CAST(:p AS int[]), CAST(:o AS bigint[])) AS u(post_id, p, o)
WHERE ingest_ledger.post_id = u.post_id
""")


def accept(db: Engine, posts: dict[str, str]) -> set[str]:
    """Record `post_id -> payload`; returns the ids that were new (the others are duplicates)."""
    if not posts:
        return set()
    with db.begin() as conn:
        return set(conn.execute(_ACCEPT, {"post_id": list(posts), "payload": list(posts.values())}).scalars())


def mark_published(db: Engine | Connection, where: dict[str, tuple[int, int]]) -> None:
    """Record where each post landed on `posts.raw` (partition, offset), so a loss can be detected."""
    if not where:
        return
    params: dict[str, Any] = {
        "post_id": list(where),
        "p": [p for p, _ in where.values()],
        "o": [o for _, o in where.values()],
    }
    if isinstance(db, Connection):
        db.execute(_PUBLISHED, params)
    else:
        with db.begin() as conn:
            conn.execute(_PUBLISHED, params)


def prune(db: Engine, before: datetime) -> int:
    """Forget posts accepted before `before` (the dedup window) that have been stored."""
    with db.begin() as conn:
        return conn.execute(
            text("DELETE FROM ingest_ledger l USING posts p WHERE l.post_id = p.id AND l.accepted_at < :t"),
            {"t": before},
        ).rowcount
