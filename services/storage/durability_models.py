"""Tables that make the stream's guarantees independent of the broker's and Redis's memory.

* `ingest_ledger`: every accepted post, written before ingest acknowledges it. It is the dedup
  record (a post id is a duplicate only once it is durably here) and what the reconciler
  re-publishes when the broker lost a post that was never scored (`services.ingest.reconcile`).
* `author_states`: the eta term's per-author running means, written in the scorer's batch
  transaction together with the posts they fold in, so Redis is a cache that can be rebuilt.
* `consumer_group_epochs`: which generation of a consumer group the scorers use; bumped when a
  group stops converging (`services.scorer.membership`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from services.storage.models import Base


class IngestLedger(Base):
    __tablename__ = "ingest_ledger"

    post_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    payload: Mapped[str] = mapped_column(Text, doc="the Post JSON exactly as put on posts.raw")
    accepted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
    kafka_partition: Mapped[int | None] = mapped_column(Integer)
    kafka_offset: Mapped[int | None] = mapped_column(BigInteger)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    republished: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_reason: Mapped[str | None] = mapped_column(Text, doc="why the reconciler last re-published it")


class AuthorState(Base):
    __tablename__ = "author_states"

    author_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    view: Mapped[str] = mapped_column(String(20), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, doc="posts folded into the mean")
    mean: Mapped[bytes] = mapped_column(LargeBinary, doc="float32 little-endian vector")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ConsumerGroupEpoch(Base):
    __tablename__ = "consumer_group_epochs"

    base_group: Mapped[str] = mapped_column(String(200), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    reason: Mapped[str | None] = mapped_column(Text)
