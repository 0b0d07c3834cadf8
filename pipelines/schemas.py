"""Versioned wire contracts of the stream (docs/architecture.md, "Kafka topics").

`Post` is what ingest puts on `posts.raw`; `ScoredPost` what the scorer puts on `posts.scored`.
Both carry `schema_version`; readers reject versions they do not know with a clear reason.
Unknown fields are rejected too: a typo in a connector must not silently lose data.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

POST_SCHEMA_VERSION: Literal[1] = 1
SCORED_SCHEMA_VERSION: Literal[1] = 1

_ID = re.compile(r"^[a-z0-9_.-]+:[^\s]{1,256}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=False)


class Author(_Strict):
    id: str = Field(..., min_length=1, max_length=300, description="platform:native_author_id")
    handle: str | None = Field(None, max_length=300)


class Media(_Strict):
    kind: Literal["image", "audio", "video"]
    uri: str = Field(..., min_length=1, max_length=4096)
    sha256: str | None = None
    bytes: int | None = Field(None, ge=0)
    mime: str | None = Field(None, max_length=100)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.match(v):
            raise ValueError("sha256 must be 64 lowercase hex characters")
        return v


class Post(_Strict):
    schema_version: Literal[1] = POST_SCHEMA_VERSION
    id: str = Field(..., description="platform:native_id, e.g. twitter:5675882788")
    platform: str = Field(..., min_length=1, max_length=40)
    author: Author
    text: str = Field("", max_length=10_000)
    lang: str | None = Field(None, max_length=16)
    created_at: datetime
    thread_id: str | None = Field(None, max_length=300)
    reply_to: str | None = Field(None, max_length=300)
    media: list[Media] = Field(default_factory=list, max_length=16)
    # Filled by ingest: ids of the watches this post matched, and when it entered the system.
    # Bounded so that a post's scored record always fits in one Kafka request.
    watches: list[int] = Field(default_factory=list, max_length=1000)
    ingested_at: datetime | None = None
    extra: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=64)

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("id must look like 'platform:native_id' (lowercase platform, no spaces)")
        return v

    @field_validator("created_at", "ingested_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("timestamps must carry a timezone (ISO 8601 with offset or Z)")
        return v.astimezone(UTC) if v is not None else None

    @model_validator(mode="after")
    def _has_content(self) -> Post:
        if not self.text.strip() and not self.media:
            raise ValueError("a post needs text or at least one media item")
        if not self.id.startswith(self.platform.lower() + ":"):
            raise ValueError(f"id {self.id!r} must start with its platform '{self.platform.lower()}:'")
        return self

    @property
    def modalities(self) -> set[str]:
        kinds = {m.kind for m in self.media}
        return ({"text"} if self.text.strip() else set()) | kinds


class ScoredPost(_Strict):
    schema_version: Literal[1] = SCORED_SCHEMA_VERSION
    post_id: str
    author_id: str
    created_at: datetime
    watches: list[int] = Field(default_factory=list)
    model_name: str
    model_version: str
    label: str
    probabilities: dict[str, float]
    score: float = Field(..., ge=-1.0, le=1.0, description="P(positive) - P(negative)")
    emotion: str | None = None
    modality_weights: dict[str, float] = Field(default_factory=dict)
    user_prior_count: int = Field(0, ge=0, description="author's earlier posts behind the eta term")
    timings_ms: dict[str, float] = Field(default_factory=dict)
    ingested_at: datetime | None = None
    stored_at: datetime | None = None
    # Speech (schema 1, optional: older readers and records without them stay valid)
    transcript: str | None = Field(None, description="what was said in the post's audio (or video track)")
    transcript_language: str | None = Field(None, description="language Whisper detected (or was told)")
    transcript_status: str | None = Field(None, description="ok | no speech | truncated | timeout | unavailable: ...")
    dominant_view: str | None = Field(None, description="the view that drove the score: words, voice, frames, image")
    # Complaint reason (schema 1, optional): negative posts only, "Can't Tell" when the head abstains
    reason: str | None = Field(None, description="complaint reason of a negative post (pipelines.reasons)")
    reason_probability: float | None = Field(None, ge=0.0, le=1.0, description="the reason head's top probability")
