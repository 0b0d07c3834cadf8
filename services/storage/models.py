"""PostgreSQL schema (SQLAlchemy 2 declarative). Alembic migrations in `migrations/` create it.

Post ids are the wire ids (`platform:native_id`), so every sink can upsert idempotently by id.
Predictions are keyed by (post, model name, model version): a re-score by a new model version
adds a row; a re-delivery of the same post to the same model changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    platform: Mapped[str] = mapped_column(String(40))
    handle: Mapped[str | None] = mapped_column(String(300))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    post_count: Mapped[int] = mapped_column(Integer, default=0)


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    platform: Mapped[str] = mapped_column(String(40))
    author_id: Mapped[str] = mapped_column(ForeignKey("authors.id"), index=True)
    text: Mapped[str] = mapped_column(Text, default="")
    lang: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    thread_id: Mapped[str | None] = mapped_column(String(300), index=True)
    reply_to: Mapped[str | None] = mapped_column(String(300))
    modalities: Mapped[list[str]] = mapped_column(ARRAY(String(10)), default=list)
    extra: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    ingested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Media(Base):
    __tablename__ = "media"

    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    mime: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="ok", doc="ok | skipped:<reason>")


class Prediction(Base):
    __tablename__ = "predictions"

    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(80), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(80), primary_key=True)
    label: Mapped[str] = mapped_column(String(30), index=True)
    probabilities: Mapped[dict[str, float]] = mapped_column(JSONB)
    score: Mapped[float] = mapped_column(Float)
    emotion: Mapped[str | None] = mapped_column(String(30))
    modality_weights: Mapped[dict[str, float]] = mapped_column(JSONB, default=dict)
    user_prior_count: Mapped[int] = mapped_column(Integer, default=0)
    timings_ms: Mapped[dict[str, float]] = mapped_column(JSONB, default=dict)
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Negative posts only (pipelines.reasons, migration 0007); "Can't Tell" when the head abstains.
    reason: Mapped[str | None] = mapped_column(String(40), doc="complaint reason of a negative post")
    reason_probability: Mapped[float | None] = mapped_column(Float, doc="the reason head's top probability")


class Transcript(Base):
    """What was said in a post's audio (an audio item or a video's track): Whisper's words and timings."""

    __tablename__ = "transcripts"

    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True)
    media_idx: Mapped[int] = mapped_column(Integer, default=0, doc="the media item the audio came from")
    model: Mapped[str | None] = mapped_column(String(60), doc="e.g. whisper-base-int8")
    language: Mapped[str | None] = mapped_column(String(16))
    language_probability: Mapped[float | None] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text, default="")
    segments: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, doc="[{start, end, text}] seconds")
    audio_s: Mapped[float | None] = mapped_column(Float)
    speech_s: Mapped[float | None] = mapped_column(Float, doc="left after voice-activity trimming")
    asr_ms: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(80), doc="ok | no speech | truncated | timeout | unavailable: ...")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Watch(Base):
    """A brand or topic people follow: a post matches on any keyword, handle or hashtag."""

    __tablename__ = "watches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(10), default="brand", doc="brand | topic")
    keywords: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    handles: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    hashtags: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    languages: Mapped[list[str]] = mapped_column(ARRAY(String(16)), default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PostWatch(Base):
    __tablename__ = "post_watches"

    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True)
    watch_id: Mapped[int] = mapped_column(ForeignKey("watches.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_post_watches_watch_time", "watch_id", "created_at"),)
