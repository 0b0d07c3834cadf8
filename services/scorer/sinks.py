"""PostgreSQL sink of the scorer: one transaction per batch, idempotent by post id.

Authors are upserted, posts/media/predictions/watch matches inserted with ON CONFLICT DO
NOTHING, and an author's post count grows only by the posts that were new in this batch, so a
re-delivered batch changes nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import to_json
from sqlalchemy import Engine, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import insert

from pipelines.asr import Transcript
from pipelines.schemas import Post
from services.storage import models as m


@dataclass
class PredictionRow:
    post: Post
    model_name: str
    model_version: str
    label: str
    probabilities: dict[str, float]
    score: float
    emotion: str | None
    modality_weights: dict[str, float]
    user_prior_count: int
    timings_ms: dict[str, float]
    media_status: list[str]
    reason: str | None = None  # negative posts: the reason head's answer (pipelines.reasons)
    reason_probability: float | None = None


@dataclass
class TranscriptRow:
    post_id: str
    media_idx: int
    transcript: Transcript | None  # None: no transcript (status says why)
    status: str


MEDIA_STATUS_CHARS = 20  # media.status is VARCHAR(20): the full reason goes with the DLQ record


# Each table gets ONE statement per batch whose text never changes: the rows travel as column
# arrays and `unnest` turns them back into rows on the server. Against SQLAlchemy's executemany /
# insertmanyvalues this saves the per-row statements, the per-batch SQL text for the driver to
# parse, and uses the C array dumpers of psycopg (the sink's time: docs/performance.md).
# JSON columns travel as text and are cast server-side.
_UPSERT_AUTHORS = text("""
INSERT INTO authors (id, platform, handle, first_seen, last_seen, post_count)
SELECT u.id, u.platform, u.handle, u.first_seen, u.last_seen, 0
FROM unnest(CAST(:id AS text[]), CAST(:platform AS text[]), CAST(:handle AS text[]),
            CAST(:first_seen AS timestamptz[]), CAST(:last_seen AS timestamptz[]))
     AS u(id, platform, handle, first_seen, last_seen)
ON CONFLICT (id) DO UPDATE SET
    handle = coalesce(EXCLUDED.handle, authors.handle),
    first_seen = least(authors.first_seen, EXCLUDED.first_seen),
    last_seen = greatest(authors.last_seen, EXCLUDED.last_seen)
""")
_INSERT_POSTS = text("""
INSERT INTO posts (id, platform, author_id, text, lang, created_at, thread_id, reply_to, modalities, extra,
                   ingested_at, stored_at)
SELECT u.id, u.platform, u.author_id, u.text, u.lang, u.created_at, u.thread_id, u.reply_to,
       string_to_array(u.modalities, ','), CAST(u.extra AS jsonb), u.ingested_at, :stored_at
FROM unnest(CAST(:id AS text[]), CAST(:platform AS text[]), CAST(:author_id AS text[]), CAST(:text AS text[]),
            CAST(:lang AS text[]), CAST(:created_at AS timestamptz[]), CAST(:thread_id AS text[]),
            CAST(:reply_to AS text[]), CAST(:modalities AS text[]), CAST(:extra AS text[]),
            CAST(:ingested_at AS timestamptz[]))
     AS u(id, platform, author_id, text, lang, created_at, thread_id, reply_to, modalities, extra, ingested_at)
ON CONFLICT DO NOTHING
RETURNING id
""")
_INSERT_PREDICTIONS = text("""
INSERT INTO predictions (post_id, model_name, model_version, label, probabilities, score, emotion,
                         modality_weights, user_prior_count, timings_ms, reason, reason_probability, scored_at)
SELECT u.post_id, u.model_name, u.model_version, u.label, CAST(u.probabilities AS jsonb), u.score, u.emotion,
       CAST(u.modality_weights AS jsonb), u.user_prior_count, CAST(u.timings_ms AS jsonb), u.reason,
       u.reason_probability, :scored_at
FROM unnest(CAST(:post_id AS text[]), CAST(:model_name AS text[]), CAST(:model_version AS text[]),
            CAST(:label AS text[]), CAST(:probabilities AS text[]), CAST(:score AS float8[]),
            CAST(:emotion AS text[]), CAST(:modality_weights AS text[]), CAST(:user_prior_count AS int[]),
            CAST(:timings_ms AS text[]), CAST(:reason AS text[]), CAST(:reason_probability AS float8[]))
     AS u(post_id, model_name, model_version, label, probabilities, score, emotion, modality_weights,
          user_prior_count, timings_ms, reason, reason_probability)
ON CONFLICT DO NOTHING
""")
_INSERT_MATCHES = text("""
INSERT INTO post_watches (post_id, watch_id, created_at)
SELECT * FROM unnest(CAST(:post_id AS text[]), CAST(:watch_id AS int[]), CAST(:created_at AS timestamptz[]))
ON CONFLICT DO NOTHING
""")
_UPSERT_AUTHOR_STATES = text("""
INSERT INTO author_states (author_id, view, n, mean, updated_at)
SELECT u.author_id, u.view, u.n, u.mean, :now
FROM unnest(CAST(:author_id AS text[]), CAST(:view AS text[]), CAST(:n AS int[]), CAST(:mean AS bytea[]))
     AS u(author_id, view, n, mean)
ON CONFLICT (author_id, view) DO UPDATE SET n = EXCLUDED.n, mean = EXCLUDED.mean, updated_at = EXCLUDED.updated_at
""")
_INSERT_MEDIA = insert(m.Media).on_conflict_do_nothing()  # rare (posts with media): executemany is fine
_INSERT_TRANSCRIPTS = insert(m.Transcript).on_conflict_do_nothing()
_BUMP_POST_COUNTS = text(
    "UPDATE authors SET post_count = authors.post_count + c.n FROM "
    "(SELECT unnest(CAST(:ids AS text[])) AS id, unnest(CAST(:ns AS int[])) AS n) AS c WHERE authors.id = c.id"
).bindparams(bindparam("ids"), bindparam("ns"))


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Row dicts -> one list per column (what `unnest` takes)."""
    return {k: [r[k] for r in rows] for k in rows[0]}


def _json(v: Any) -> str:
    """Compact JSON for a jsonb column; pydantic-core's encoder is ~8x json.dumps on these small dicts."""
    return to_json(v).decode()


def write_batch(
    engine: Engine,
    rows: list[PredictionRow],
    extra: list[PredictionRow] | None = None,
    transcripts: list[TranscriptRow] | None = None,
    author_states: list[dict[str, Any]] | None = None,
) -> tuple[set[str], datetime]:
    """Store a batch; returns the ids that were new (not stored before) and the commit time.

    `rows` hold one primary prediction per post; `extra` more predictions of posts among `rows`
    (the tri-modal heads'), which add prediction rows only: posts, media and author counts come
    from `rows` alone, so an extra row never double-counts a post. `transcripts` are stored for
    the posts that are new (a re-delivery keeps the first transcript). `author_states` are the eta
    term's states after folding in this batch's new posts (`UserStateStore.rows`): committed with
    those posts, never without them.
    """
    if not rows:
        return set(), datetime.now().astimezone()
    authors: dict[str, dict[str, Any]] = {}
    for r in rows:
        a = authors.setdefault(
            r.post.author.id,
            {
                "id": r.post.author.id,
                "platform": r.post.platform,
                "handle": r.post.author.handle,
                "first_seen": r.post.created_at,
                "last_seen": r.post.created_at,
            },
        )
        a["first_seen"] = min(a["first_seen"], r.post.created_at)
        a["last_seen"] = max(a["last_seen"], r.post.created_at)
    with engine.begin() as conn:
        now = conn.execute(select(func.now())).scalar_one()
        conn.execute(_UPSERT_AUTHORS, _columns(list(authors.values())))
        posts = _columns(
            [
                {
                    "id": r.post.id,
                    "platform": r.post.platform,
                    "author_id": r.post.author.id,
                    "text": r.post.text,
                    "lang": r.post.lang,
                    "created_at": r.post.created_at,
                    "thread_id": r.post.thread_id,
                    "reply_to": r.post.reply_to,
                    "modalities": ",".join(sorted(r.post.modalities)),
                    "extra": _json(r.post.extra),
                    "ingested_at": r.post.ingested_at,
                }
                for r in rows
            ]
        )
        new_ids = set(conn.execute(_INSERT_POSTS, {**posts, "stored_at": now}).scalars())
        media_rows = [
            {
                "post_id": r.post.id,
                "idx": i,
                "kind": md.kind,
                "uri": md.uri,
                "sha256": md.sha256,
                "bytes": md.bytes,
                "mime": md.mime,
                "status": (r.media_status[i] if i < len(r.media_status) else "ok")[:MEDIA_STATUS_CHARS],
            }
            for r in rows
            if r.post.id in new_ids
            for i, md in enumerate(r.post.media)
        ]
        if media_rows:
            conn.execute(_INSERT_MEDIA, media_rows)
        spoken = [_transcript_row(t) for t in transcripts or [] if t.post_id in new_ids]
        if spoken:
            conn.execute(_INSERT_TRANSCRIPTS, spoken)
        conn.execute(
            _INSERT_PREDICTIONS,
            {
                **_columns(
                    [
                        {
                            "post_id": r.post.id,
                            "model_name": r.model_name,
                            "model_version": r.model_version,
                            "label": r.label,
                            "probabilities": _json(r.probabilities),
                            "score": r.score,
                            "emotion": r.emotion,
                            "modality_weights": _json(r.modality_weights),
                            "user_prior_count": r.user_prior_count,
                            "timings_ms": _json(r.timings_ms),
                            "reason": r.reason,
                            "reason_probability": r.reason_probability,
                        }
                        for r in [*rows, *(extra or [])]
                    ]
                ),
                "scored_at": now,
            },
        )
        match_rows = [
            {"post_id": r.post.id, "watch_id": w, "created_at": r.post.created_at} for r in rows for w in r.post.watches
        ]
        if match_rows:
            conn.execute(_INSERT_MATCHES, _columns(match_rows))
        counts = Counter(r.post.author.id for r in rows if r.post.id in new_ids)
        if counts:
            conn.execute(_BUMP_POST_COUNTS, {"ids": list(counts), "ns": list(counts.values())})
        if author_states:
            conn.execute(_UPSERT_AUTHOR_STATES, {**_columns(author_states), "now": now})
    return new_ids, now


def _transcript_row(t: TranscriptRow) -> dict[str, Any]:
    tr = t.transcript
    return {
        "post_id": t.post_id,
        "media_idx": t.media_idx,
        "status": t.status[:80],
        "model": tr.model if tr else None,
        "language": tr.language if tr else None,
        "language_probability": tr.language_probability if tr else None,
        "text": tr.text if tr else "",
        "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in tr.segments] if tr else [],
        "audio_s": tr.audio_s if tr else None,
        "speech_s": tr.speech_s if tr else None,
        "asr_ms": tr.seconds * 1000 if tr else None,
    }


def stored_predictions(engine: Engine, post_ids: list[str], model_name: str, model_version: str) -> dict[str, Any]:
    """Predictions already stored for re-delivered posts (so `posts.scored` repeats them exactly)."""
    if not post_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(m.Prediction).where(
                m.Prediction.post_id.in_(post_ids),
                m.Prediction.model_name == model_name,
                m.Prediction.model_version == model_version,
            )
        ).all()
    return {r.post_id: r for r in rows}
