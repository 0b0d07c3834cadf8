"""The scorer: a consumer group on `posts.raw` that turns posts into stored, published scores.

Per micro-batch (max size, max wait): validate, tokenise and load media within limits (on the
polling thread, while the model runs the previous batch) -> encode once ->
per-user state from Redis -> head -> one PostgreSQL transaction -> Redis state -> `posts.scored`
-> commit offsets. Offsets move only after every sink succeeded (at-least-once in, idempotent
sinks out). Infrastructure errors are retried without committing; a record that keeps failing
on its own goes to the DLQ after `scorer_max_attempts`, so a poison record never stalls a
partition. SIGTERM finishes the batch in hand, commits and exits.

Audio and video: the polling thread decodes them (packaged ffmpeg, time-limited; undecodable
media -> DLQ with the reason, the post is still scored). Posts that have them also go through every
configured tri-modal head that covers them (`scorer_av_models`, `pipelines.av_heads`), one batched
call per head; those predictions are extra rows ("av:<checkpoint>") in the same transaction, with
the head's per-modality weights, and are not published on `posts.scored` (one record per post
there, so trend windows count each post once). Text-only posts never touch that path.

Speech: an audio post's audio (or a video's track) is transcribed beside the stream
(`services.scorer.transcripts`: why there, and how a slow transcription stalls nothing); the post
joins a batch once its transcript is ready or its time is up. The transcript is its text view for
the production head and the tri-modal heads, is stored with the post (`transcripts` table) and
travels on `posts.scored` with the view that dominated (`dominant_view`: words, voice, frames or
image). Offsets commit through `OffsetLedger`, never past a post that still waits.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import numpy as np
import redis
import sqlalchemy.exc
import torch
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from pydantic import ValidationError

from models.registry import ScoringHead, load_head
from pipelines.allocator import keep_freed_memory, release_free_memory
from pipelines.asr import Transcriber, Transcript, asr_available
from pipelines.av_heads import AVHead, AVInput, heads_for, load_av_heads
from pipelines.reasons import ReasonClassifier
from pipelines.retry import delay_after, exponential
from pipelines.schemas import Media, Post, ScoredPost
from pipelines.scoring import Encoded, InferenceEngine, Scored, TokenIds, sentiment_score
from pipelines.views import dominant_view
from services.config import Settings, freeze_startup_heap
from services.ingest.gate import validation_reason
from services.scorer.media import MediaError, MediaPolicy, load_audio, load_image, load_video
from services.scorer.membership import GroupMembership
from services.scorer.offsets import OffsetLedger
from services.scorer.sinks import PredictionRow, TranscriptRow, stored_predictions, write_batch
from services.scorer.transcripts import Outcome, TranscriptQueue
from services.scorer.user_state import UserStateStore, ViewState
from services.storage.db import engine_for
from services.storage.redis_keys import KEYS, SCORER_BATCHES_CHANNEL
from services.storage.redis_stats import observe
from services.stream.kafka import (
    BROKER_AWAY_ERRORS,
    REBALANCE_ERRORS,
    RECORD_TOO_LARGE_ERRORS,
    DeadLetter,
    make_producer,
)

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("voxpop.scorer")

INFRA_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
    KafkaError,
)
INFRA_BACKOFF = exponential(0.5, 30.0)  # a batch that met an outage waits, then is tried again (never dropped)


@dataclass
class Item:
    rec: ConsumerRecord
    post: Post
    image: Image.Image | None = None
    media_status: list[str] = field(default_factory=list)
    av: AVInput | None = None  # decoded audio / video frames, for the tri-modal heads
    tokens: TokenIds | None = None  # the text, tokenised (unpadded) on the polling thread
    asr_pending: bool = False  # its audio is being transcribed (services.scorer.transcripts)
    asr_media: int = 0  # index of the media item the audio came from
    asr_truncated: bool = False  # the audio decoded was cut at media_max_seconds
    transcript: Transcript | None = None
    asr_status: str | None = None  # the transcript's status, or why there is none
    asr_waited_ms: float = 0.0

    @property
    def text_view(self) -> str:
        """What the text models read: the post's own text and, when there is one, what was said."""
        said = self.transcript.text if self.transcript is not None and self.transcript.has_text else ""
        own = self.post.text
        return f"{own}\n{said}" if own.strip() and said else (said or own)


@dataclass
class Prepared:
    """Polled records made ready off the model's thread: parsed, validated, media loaded."""

    records: list[ConsumerRecord]
    items: list[Item]
    prepare_ms: float = 0.0

    @classmethod
    def merge(cls, parts: list[Prepared]) -> Prepared:
        """One batch from several polls, in (partition, offset) order; a post polled twice is scored once."""
        records = sorted((r for p in parts for r in p.records), key=lambda r: (r.partition, r.offset))
        items = sorted((it for p in parts for it in p.items), key=lambda it: (it.rec.partition, it.rec.offset))
        return cls(records, once_per_post(items), sum(p.prepare_ms for p in parts))


def once_per_post(items: list[Item]) -> list[Item]:
    """The first item of each post: the same post twice in one batch is scored once."""
    seen: set[str] = set()
    out = []
    for it in items:
        if it.post.id not in seen:
            seen.add(it.post.id)
            out.append(it)
    return out


class Intake:
    """Records polled ahead of the model, waiting for it: the batch closes when the model is free.

    The polling thread parses and tokenises what it polls and puts it here, up to `max_batch` records (then it
    stops polling: back-pressure). The model's thread takes everything waiting once it is free and
    either `max_batch` records wait or the oldest has waited `max_wait_s`. A post that arrives while
    batch k runs therefore rides in batch k+1; when batch k+1 was closed ahead, while batch k ran,
    a post arriving just after it closed waited two batches. (On its own this barely moves latency;
    the length buckets of `plan_buckets` do: docs/performance.md.)
    """

    def __init__(self, max_batch: int, max_wait_s: float) -> None:
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._parts: list[Prepared] = []
        self._count = 0
        self._first_at = 0.0
        self._ended = False
        self._cond = threading.Condition()

    def room(self) -> int:
        with self._cond:
            return self.max_batch - self._count

    def put(self, part: Prepared) -> None:
        with self._cond:
            if not self._parts:
                self._first_at = time.monotonic()
            self._parts.append(part)
            self._count += len(part.records)
            self._cond.notify_all()

    def end(self) -> None:
        """No more records will come (the polling thread stopped): what waits is still taken."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def wait_for_room(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._count < self.max_batch, timeout)

    def take(self, timeout: float) -> Prepared | None:
        """The next batch; None if nothing is ready within `timeout` (see `ended`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                if self._parts and (
                    self._count >= self.max_batch or self._ended or now >= self._first_at + self.max_wait_s
                ):
                    parts, self._parts, self._count = self._parts, [], 0
                    self._cond.notify_all()
                    return Prepared.merge(parts)
                if now >= deadline or (self._ended and not self._parts):
                    return None
                until = deadline if not self._parts else min(deadline, self._first_at + self.max_wait_s)
                self._cond.wait(max(0.0, until - now))

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._ended and not self._parts


@dataclass
class ScorerStats:
    batches: int = 0
    scored: int = 0
    dlq: int = 0


class Scorer:
    def __init__(
        self,
        settings: Settings,
        database_url: str,
        rds: redis.Redis,
        producer: KafkaProducer,
        head: ScoringHead | None = None,
        engine: InferenceEngine | None = None,
    ) -> None:
        self.s = settings
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        if settings.scorer_cpus and not set(settings.scorer_cpus) <= usable:
            raise ValueError(
                f"VOXPOP_SCORER_CPUS={settings.scorer_cpus} names cores this process cannot run on; "
                f"usable here: {sorted(usable)} (or leave it empty to let the OS schedule)"
            )
        if settings.scorer_threads:
            torch.set_num_threads(settings.scorer_threads)
        self.head = head or load_head(settings.scorer_model, device=settings.scorer_device)
        self.engine = engine or InferenceEngine(
            self.head,
            settings.scorer_precision,
            settings.scorer_device,
            bucket_call_tokens=settings.scorer_bucket_call_tokens,
            compile=settings.scorer_compile,
            fixed_shapes=settings.scorer_fixed_shapes,
            model_dir=settings.large_encoder_dir,
        )
        self.db = engine_for(database_url)
        self.redis, self.producer = rds, producer
        self.dlq = DeadLetter(producer, settings.topic_dlq)
        self.state = UserStateStore(rds, self.db, {v: self.head.feature_dims[v] for v in self.head.views})
        roots = tuple(Path(p) for p in settings.media_allowed_roots) or (Path(settings.data_dir),)
        self.media_policy = MediaPolicy(
            settings.media_max_bytes,
            settings.media_timeout_s,
            roots,
            max_image_pixels=settings.media_max_image_pixels,
            decode_timeout_s=settings.media_decode_timeout_s,
            max_seconds=settings.media_max_seconds,
            video_frames=settings.video_frames,
        )
        # The tri-modal heads share the production encoders when those run in plain fp32.
        self.av_heads: list[AVHead] = (
            load_av_heads(
                settings.scorer_av_models,
                settings.checkpoints_dir,
                settings.scorer_device,
                text_encoder=self.engine.frozen_text if self.engine.precision == "fp32" else None,
                image_encoder=self.engine.image,
            )
            if settings.scorer_av_models
            else []
        )
        self.asr = transcript_queue(settings)
        self.reasons = reason_classifier(settings, self.engine.frozen_text.version)
        self.ledger = OffsetLedger()
        self.stats = ScorerStats()
        self.stopping = threading.Event()

    # ---- one batch -------------------------------------------------------------------------
    def _parse(self, records: list[ConsumerRecord]) -> list[Item]:
        """Valid posts of `records`; the others go to the DLQ with the reason (once: retries reuse items)."""
        items = []
        for rec in records:
            size = len(rec.value or b"")
            if rec.value is None:
                self._to_dlq(rec, "invalid post: record has no value (a tombstone)", "scorer-validate", 1)
            elif size > self.s.max_record_bytes:  # ingest enforces this too; records can bypass ingest
                self._to_dlq(
                    rec, f"oversized record: {size} bytes > limit {self.s.max_record_bytes}", "scorer-validate", 1
                )
            else:
                try:
                    items.append(Item(rec=rec, post=Post.model_validate_json(rec.value)))
                except (ValidationError, ValueError) as e:
                    self._to_dlq(rec, f"invalid post: {validation_reason(e)}", "scorer-validate", 1)
        return once_per_post(items)  # before media: a repeated post's media is loaded once

    def _load_media(self, items: list[Item]) -> None:
        want_image = "image" in self.head.views
        for it in items:
            for md in it.post.media:
                if md.kind == "image" and want_image and it.image is None:
                    try:
                        it.image = load_image(md.uri, self.media_policy, md.sha256)
                        it.media_status.append("ok")
                    except MediaError as e:
                        it.media_status.append(f"skipped: {e}")
                        self._to_dlq(it.rec, f"media {md.uri}: {e}", "scorer-media", 1)
                elif md.kind in ("audio", "video") and (self.av_heads or self.asr):
                    it.media_status.append(self._load_av(it, md))
                else:
                    it.media_status.append(
                        "ok"
                        if md.kind == "image" and it.image is not None
                        else f"skipped: no {md.kind} view in {self.head.name}"
                    )

    def _load_av(self, it: Item, md: Media) -> str:
        """Decode one audio/video item (ffmpeg child, time-limited) and precompute audio frames.

        Only the first audio source and the first video of a post are used; an undecodable item
        sends the record to the DLQ with the reason and the post is still scored without it.
        """
        av = it.av or AVInput(text=it.post.text)
        if (md.kind == "audio" and av.audio is not None) or (md.kind == "video" and av.frames):
            return "skipped:duplicate"
        status = "ok"
        try:
            if md.kind == "audio":
                av.audio = load_audio(md.uri, self.media_policy, md.sha256)
            else:
                try:
                    video = load_video(md.uri, self.media_policy, md.sha256)
                except MediaError as e:
                    if str(e) != "no video stream" or av.audio is not None:
                        raise
                    # an audio file declared as video: heard as audio, and the DLQ says so
                    av.audio = load_audio(md.uri, self.media_policy, md.sha256)
                    self._to_dlq(
                        it.rec,
                        f"media {md.uri}: declared video but has no video stream; scored as audio",
                        "scorer-media",
                        1,
                    )
                    status = "ok:audio-only"
                else:
                    av.frames = video.frames
                    if av.audio is None:
                        av.audio = video.audio
        except MediaError as e:
            self._to_dlq(it.rec, f"media {md.uri}: {e}", "scorer-media", 1)
            return "skipped:undecodable"
        if self.asr is not None and av.audio is not None and not it.asr_pending and it.transcript is None:
            it.asr_pending, it.asr_media = True, len(it.media_status)
            it.asr_truncated = av.audio.size >= int(self.media_policy.max_seconds * 16000)
            self.asr.submit(it, av.audio)
        if av.audio is not None:  # numpy-only feature work belongs on this (polling) thread
            for h in self.av_heads:
                key = h.features.audio_key
                if key and key not in av.audio_features and h.covers(True, False):
                    av.audio_features[key] = h.audio_features(av.audio)
        it.av = av
        return status

    def prepare(self, records: list[ConsumerRecord], defer: bool = False) -> Prepared:
        """Parse, tokenise, load media: the per-record CPU/I-O work, done on the polling thread.

        With `defer`, posts whose audio is being transcribed are left out (records and items):
        `released()` hands them over when their transcript is ready. Without it (retries), this
        waits for them, up to their deadline.
        """
        t0 = time.perf_counter()
        items = self._parse(records)
        if items:
            for it, ids in zip(items, self.engine.token_ids([it.post.text for it in items]), strict=True):
                it.tokens = ids
        self._load_media(items)
        held = [it for it in items if it.asr_pending]
        if held and self.asr is not None:
            if defer:
                held_recs = {id(it.rec) for it in held}
                return Prepared(
                    [r for r in records if id(r) not in held_recs],
                    [it for it in items if not it.asr_pending],
                    (time.perf_counter() - t0) * 1000,
                )
            self._finish_transcripts(self.asr.settle(held))
        return Prepared(records, items, (time.perf_counter() - t0) * 1000)

    def _finish_transcripts(self, outcomes: list[Outcome]) -> list[Item]:
        """Attach transcripts (or why there is none) and re-tokenise the text view."""
        items = []
        for o in outcomes:
            it: Item = o.item
            it.asr_pending, it.transcript, it.asr_waited_ms = False, o.transcript, o.waited_ms
            it.asr_status = "truncated" if it.asr_truncated and o.status == "ok" else o.status
            if it.transcript is not None and it.transcript.has_text:
                it.tokens = self.engine.token_ids([it.text_view])[0]
                if it.av is not None:
                    it.av.text = it.text_view
            items.append(it)
        return items

    def released(self) -> Prepared | None:
        """Held posts whose transcript is ready or whose time is up, as one part for the intake."""
        if self.asr is None or not len(self.asr):
            return None
        t0 = time.perf_counter()
        items = self._finish_transcripts(self.asr.due())
        if not items:
            return None
        return Prepared([it.rec for it in items], items, (time.perf_counter() - t0) * 1000)

    def process(self, records: list[ConsumerRecord] | Prepared) -> int:
        """Score and store one batch; raises on failure (nothing committed then).

        Safe to call again with the same `Prepared` after a failure: the PostgreSQL transaction
        is all or nothing, and a post stored by an earlier attempt is neither folded nor counted again.
        """
        t0 = time.perf_counter()
        prep = records if isinstance(records, Prepared) else self.prepare(records)
        items = prep.items
        if not items:
            return 0
        now = datetime.now(UTC)
        t_media = time.perf_counter()
        enc = self._encode(items)
        t_enc = time.perf_counter()
        u, n, prior, changed = self._author_state(items, enc)
        scored = self.engine.predict(enc, u, n)
        timings = {
            "prepare": prep.prepare_ms,
            "encode": (t_enc - t_media) * 1000,
            "head": (time.perf_counter() - t_enc) * 1000,
            "batch": float(len(items)),
        }
        rows = self._rows(items, scored, prior, timings, now)
        self._add_reasons(items, rows, enc)
        extra = self._score_av(items)  # [] unless the batch has audio/video posts
        t_db = time.perf_counter()
        spoken = [
            TranscriptRow(it.post.id, it.asr_media, it.transcript, it.asr_status or "ok")
            for it in items
            if it.asr_status is not None
        ]
        new_ids, stored_at = write_batch(
            self.db, rows, extra, transcripts=spoken, author_states=self.state.rows(changed)
        )
        db_ms = (time.perf_counter() - t_db) * 1000
        self._after_store(items, rows, new_ids, changed, now, t0)
        self._publish_scored(items, rows, extra, new_ids, stored_at, db_ms)
        self.stats.scored += len(items)
        return len(items)

    def _encode(self, items: list[Item]) -> Encoded:
        """Text and image features of the batch (pre-computed length buckets when every item has them)."""
        texts = [it.text_view for it in items]
        ids = [it.tokens for it in items if it.tokens]
        tokens = self.engine.buckets(ids) if len(ids) == len(items) else None
        return self.engine.encode(texts, [it.image for it in items], tokens=tokens)

    def _author_state(
        self, items: list[Item], enc: Encoded
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[int], dict[tuple[str, str], ViewState]]:
        """The eta term's inputs: each author's running mean before each post (causal, in stream
        order) and its count; each post not stored before is folded in once. Returns (u, n, the
        text prior counts, the changed states)."""
        by_author: dict[str, list[str]] = defaultdict(list)
        for it in items:
            by_author[it.post.author.id].append(it.post.id)
        states, applied = self.state.load(list(by_author), [it.post.id for it in items])
        # numpy views and Python lists once per batch: per-element tensor indexing cost more than
        # the head itself
        views = self.head.views
        u_np = {v: np.zeros((len(items), self.head.feature_dims[v]), np.float32) for v in views}
        n_np = {v: np.zeros(len(items), np.float32) for v in views}
        x_np = {v: enc.x[v].numpy() for v in views}
        present = {v: enc.mask[v].tolist() for v in views}
        changed: dict[tuple[str, str], ViewState] = {}
        folded: defaultdict[str, list[str]] = defaultdict(list)
        for i, it in enumerate(items):
            a = it.post.author.id
            for v in views:
                st = states[(a, v)]
                u_np[v][i] = st.mean
                n_np[v][i] = st.n
            if it.post.id in applied or it.post.id in folded[a]:
                continue
            for v in views:
                if present[v][i]:
                    states[(a, v)].fold(x_np[v][i])
                    changed[(a, v)] = states[(a, v)]
            folded[a].append(it.post.id)
        u = {v: torch.from_numpy(a) for v, a in u_np.items()}
        n = {v: torch.from_numpy(a) for v, a in n_np.items()}
        prior = n_np["text"].astype(int).tolist() if "text" in n_np else [0] * len(items)
        return u, n, prior, changed

    def _rows(
        self, items: list[Item], scored: Scored, prior: list[int], timings: dict[str, float], now: datetime
    ) -> list[PredictionRow]:
        """One prediction row per post: label, probabilities, score, modality weights, timings."""
        labels = list(self.head.labels)
        scores = sentiment_score(labels, scored.probs).tolist()
        probs = scored.probs.tolist()
        weights = {v: w.tolist() for v, w in scored.modality_weights.items()}
        rows = []
        for i, it in enumerate(items):
            p = probs[i]
            t = dict(timings)
            if it.post.ingested_at:
                t["queue"] = (now - it.post.ingested_at).total_seconds() * 1000
            if it.transcript is not None or it.asr_status:
                t["asr_wait"] = it.asr_waited_ms
                if it.transcript is not None:
                    t["asr"] = it.transcript.seconds * 1000
            rows.append(
                PredictionRow(
                    post=it.post,
                    model_name=self.head.name,
                    model_version=self.head.version,
                    label=labels[max(range(len(p)), key=p.__getitem__)],
                    probabilities=dict(zip(labels, p, strict=True)),
                    score=scores[i],
                    emotion=None,
                    modality_weights={v: w[i] for v, w in weights.items()},
                    user_prior_count=prior[i],
                    timings_ms=t,
                    media_status=it.media_status,
                )
            )
        return rows

    def _after_store(
        self,
        items: list[Item],
        rows: list[PredictionRow],
        new_ids: set[str],
        changed: dict[tuple[str, str], ViewState],
        now: datetime,
        t0: float,
    ) -> None:
        """Redis, once PostgreSQL holds the batch: user-state cache, thread context, counters, live event."""
        self.state.cache(changed)
        pipe = self.redis.pipeline(transaction=False)
        for it in items:
            if it.post.thread_id and it.post.id in new_ids:
                pipe.lpush(KEYS.thread(it.post.thread_id), it.post.id)
                pipe.ltrim(KEYS.thread(it.post.thread_id), 0, self.s.thread_context_k - 1)
                pipe.expire(KEYS.thread(it.post.thread_id), 7 * 24 * 3600)
        pipe.incrby(KEYS.stats("scored"), len(new_ids))
        pipe.incrby(KEYS.stats("scorer_batches"), 1)
        observe(pipe, "scorer_batch_size", len(items))
        observe(pipe, "scorer_batch_ms", (time.perf_counter() - t0) * 1000)
        pipe.publish(SCORER_BATCHES_CHANNEL, batch_summary(rows, new_ids, now))
        pipe.execute()

    def _publish_scored(
        self,
        items: list[Item],
        rows: list[PredictionRow],
        extra: list[PredictionRow],
        new_ids: set[str],
        stored_at: datetime,
        db_ms: float,
    ) -> None:
        """posts.scored, every send acknowledged before the offsets may move. Re-delivered posts
        publish what was stored the first time, not a recomputation."""
        by_id = {it.post.id: it for it in items}
        av_by_post: dict[str, list[PredictionRow]] = defaultdict(list)
        for x in extra:
            av_by_post[x.post.id].append(x)
        old = stored_predictions(
            self.db, [r.post.id for r in rows if r.post.id not in new_ids], self.head.name, self.head.version
        )
        sent = []
        for r in rows:
            prev = old.get(r.post.id)
            if prev is not None:
                r.label, r.probabilities, r.score = prev.label, prev.probabilities, prev.score
                r.modality_weights, r.user_prior_count = prev.modality_weights, prev.user_prior_count
                r.reason, r.reason_probability = prev.reason, prev.reason_probability
            r.timings_ms["db"] = db_ms
            it = by_id[r.post.id]
            tr = it.transcript
            sp = ScoredPost(
                post_id=r.post.id,
                author_id=r.post.author.id,
                created_at=r.post.created_at,
                watches=r.post.watches,
                model_name=r.model_name,
                model_version=r.model_version,
                label=r.label,
                probabilities=r.probabilities,
                score=r.score,
                emotion=r.emotion,
                modality_weights=r.modality_weights,
                user_prior_count=r.user_prior_count,
                timings_ms=r.timings_ms,
                ingested_at=r.post.ingested_at,
                stored_at=stored_at,
                transcript=tr.text if tr is not None else None,
                transcript_language=tr.language if tr else None,
                transcript_status=it.asr_status,
                dominant_view=dominant_view(
                    r.modality_weights, [x.modality_weights for x in av_by_post.get(r.post.id, [])]
                ),
                reason=r.reason,
                reason_probability=r.reason_probability,
            )
            sent.append(
                self.producer.send(
                    self.s.topic_scored, key=r.post.author.id.encode(), value=sp.model_dump_json().encode()
                )
            )
        self.producer.flush()
        for f in sent:  # a send the broker refused raises here: the batch is retried, never committed
            f.get(timeout=self.s.kafka_send_timeout_s)

    def _add_reasons(self, items: list[Item], rows: list[PredictionRow], enc: Encoded) -> None:
        """Complaint reasons of the batch's negative posts with text: one call of the reason head.

        The head was trained on the frozen encoder's sentence embeddings: when the production head
        reads those (any precision of the same encoder), the batch's features are reused; a head
        with its own text adapter reads tuned ones, so the negatives are encoded once more, frozen.
        """
        if self.reasons is None:
            return
        t0 = time.perf_counter()
        neg = [i for i, r in enumerate(rows) if r.label == "negative" and bool(enc.mask["text"][i])]
        if not neg:
            return
        if self.engine.text.version == self.reasons.encoder:
            x = enc.x["text"][neg]
        else:
            x = self.engine.frozen_text.encode([items[i].text_view for i in neg])
        for i, (reason, p) in zip(neg, self.reasons.classify(x), strict=True):
            rows[i].reason, rows[i].reason_probability = reason, p
        ms = (time.perf_counter() - t0) * 1000
        for r in rows:
            r.timings_ms["reasons"] = ms

    def _score_av(self, items: list[Item]) -> list[PredictionRow]:
        """Tri-modal predictions for the posts with decoded audio/video: one batched call per head."""
        rows: list[PredictionRow] = []
        for h in self.av_heads:
            chosen = [it for it in items if h in heads_for(self.av_heads, it.av)]
            if not chosen:
                continue
            t0 = time.perf_counter()
            preds = h.predict([it.av for it in chosen if it.av is not None])
            ms = (time.perf_counter() - t0) * 1000
            for it, p in zip(chosen, preds, strict=True):
                rows.append(
                    PredictionRow(
                        post=it.post,
                        model_name=h.model_name,
                        model_version=h.version,
                        label=p.label,
                        probabilities=p.probabilities,
                        score=p.score,
                        emotion=p.emotion,
                        modality_weights=p.modality_weights,
                        user_prior_count=0,
                        timings_ms={"head": ms, "batch": float(len(chosen))},
                        media_status=it.media_status,
                    )
                )
        return rows

    # ---- failure handling ------------------------------------------------------------------
    def _to_dlq(self, rec: ConsumerRecord, error: str, stage: str, attempts: int) -> None:
        self.dlq.send(
            key=rec.key,
            value=rec.value,
            error=error,
            stage=stage,
            source_topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            attempts=attempts,
        )
        self.stats.dlq += 1

    def process_safely(self, prep: Prepared) -> None:
        """Retry infrastructure errors until they pass; isolate records that fail on their own.

        Every attempt reuses `prep` (parsed once), so a bad record goes to the DLQ once, not once
        per attempt. A record the broker will never take (too large) is a data error, not an outage.
        """
        attempt, outages = 0, 0
        while True:
            try:
                self.process(prep)
                return
            except RECORD_TOO_LARGE_ERRORS as e:
                log.warning(
                    "batch holds a record too large to publish (%s); scoring its %d posts one by one",
                    e,
                    len(prep.items),
                )
                self._one_by_one(prep)
                return
            except INFRA_ERRORS as e:
                outages += 1
                wait = delay_after(INFRA_BACKOFF, outages)
                log.warning("infrastructure error, retrying batch in %.1fs: %s", wait, e)
                if self.stopping.wait(wait):
                    raise
            except Exception as e:  # a data problem: find the record(s) behind it
                attempt += 1
                if attempt < self.s.scorer_max_attempts:
                    log.warning("batch failed (attempt %d): %s", attempt, e)
                    continue
                log.warning("batch keeps failing (%s); scoring its %d posts one by one", e, len(prep.items))
                self._one_by_one(prep)
                return

    def _one_by_one(self, prep: Prepared) -> None:
        for it in prep.items:
            self._process_one(Prepared([it.rec], [it]))

    def _process_one(self, one: Prepared) -> None:
        err: Exception | None = None
        for _ in range(self.s.scorer_max_attempts):
            try:
                self.process(one)
                return
            except RECORD_TOO_LARGE_ERRORS as e:
                err = e
                break
            except INFRA_ERRORS:
                raise
            except Exception as e:
                err = e
        self._to_dlq(
            one.records[0], f"scoring failed: {type(err).__name__}: {err}", "scorer", self.s.scorer_max_attempts
        )
        self.producer.flush()

    # ---- the loop --------------------------------------------------------------------------
    def run(
        self, group: GroupMembership | KafkaConsumer, max_records: int | None = None, idle_exit_s: float | None = None
    ) -> ScorerStats:
        """Score until stopped (SIGTERM), `max_records` done, or idle for `idle_exit_s`.

        A polling thread owns the consumer: it polls, parses and loads media into the `Intake`
        while this thread runs the batch in hand through the model and the sinks, and it commits
        the offsets this thread hands back once a batch is fully stored (never a record that was
        only polled).
        """
        member = group if isinstance(group, GroupMembership) else None
        consumer = group.consumer if isinstance(group, GroupMembership) else group
        intake = Intake(self.s.scorer_max_batch, self.s.scorer_max_wait_ms / 1000)
        commits: queue.Queue[list[ConsumerRecord]] = queue.Queue()
        done = threading.Event()
        errors: list[BaseException] = []

        def apply_commits() -> None:
            while True:
                try:
                    self.ledger.done(commits.get_nowait())
                except queue.Empty:
                    break
            offsets = self.ledger.committable()
            if not offsets:
                return
            try:
                consumer.commit(offsets)
            except REBALANCE_ERRORS as e:  # partitions moved: the new owner redoes them, idempotently
                log.warning("offset commit refused during a rebalance (%s): %s", type(e).__name__, e)
            except BROKER_AWAY_ERRORS as e:  # the records are stored; a restart redoes them, idempotently
                log.warning("offset commit failed, the broker is away (%s): %s", type(e).__name__, e)

        def poll() -> None:
            nonlocal consumer
            last_data = time.monotonic()
            away = 0  # polls in a row that found the broker away
            try:
                while not done.is_set():
                    apply_commits()
                    if member is not None and member.check():
                        consumer = member.consumer
                    ready = self.released()  # posts whose transcript came (or whose time is up)
                    if ready is not None:
                        intake.put(ready)
                    holding = self.asr is not None and len(self.asr) > 0
                    room = intake.room()
                    if room <= 0:
                        intake.wait_for_room(0.05 if holding else 0.2)
                        continue
                    if self.asr is not None and self.asr.full():  # back-pressure: nothing is dropped
                        self.asr.wait_any(0.05)
                        continue
                    try:
                        polled = consumer.poll(timeout_ms=50 if holding else 200, max_records=room)
                    except BROKER_AWAY_ERRORS as e:  # a broker restart is an outage to wait out, not an exit
                        away += 1
                        wait = delay_after(INFRA_BACKOFF, away)
                        log.warning("broker away (%s: %s); polling again in %.1f s", type(e).__name__, e, wait)
                        done.wait(wait)
                        continue
                    if away:
                        log.info("broker back after %d failed polls", away)
                        away = 0
                    records = [r for recs in polled.values() for r in recs]
                    if records:
                        last_data = time.monotonic()
                        self.ledger.polled(records)
                        prep = self.prepare(records, defer=True)
                        if prep.records:
                            intake.put(prep)
                    elif idle_exit_s is not None and time.monotonic() - last_data > idle_exit_s and not holding:
                        break
            except BaseException as e:  # surface to the main thread
                errors.append(e)
            finally:
                intake.end()
                done.wait()
                apply_commits()

        trimmer = _Trimmer(self.s.scorer_trim_interval_s)
        thread = threading.Thread(target=poll, name="scorer-poll", daemon=True)
        thread.start()
        if self.s.scorer_cpus:  # this (model) thread only: the polling and Kafka threads stay free to move
            os.sched_setaffinity(0, self.s.scorer_cpus)
            log.info("model thread pinned to cores %s", self.s.scorer_cpus)
        try:
            while not self.stopping.is_set():
                prep = intake.take(timeout=0.2)
                if prep is None:
                    if intake.ended:
                        break
                    trimmer.maybe()  # an idle scorer gives its last batches' memory back too
                    continue
                self.process_safely(prep)
                commits.put(prep.records)
                self.stats.batches += 1
                trimmer.maybe()
                if max_records is not None and self.stats.scored + self.stats.dlq >= max_records:
                    break
        finally:
            done.set()
            thread.join(timeout=60)
            if self.asr is not None:
                self.asr.close()
        if errors:
            raise errors[0]
        return self.stats


def batch_summary(rows: list[PredictionRow], new_ids: set[str], now: datetime) -> str:
    """The per-batch live event for the dashboard: new posts per label and per watch."""
    labels: dict[str, int] = defaultdict(int)
    watches: dict[int, int] = defaultdict(int)
    for r in rows:
        if r.post.id in new_ids:
            labels[r.label] += 1
            for w in r.post.watches:
                watches[w] += 1
    return json.dumps(
        {"posts": len(new_ids), "batch": len(rows), "labels": labels, "watches": watches, "at": now.isoformat()}
    )


def reason_classifier(settings: Settings, frozen_encoder: str) -> ReasonClassifier | None:
    """The complaint-reason head, or None (off, not trained here, or trained on another encoder)."""
    if not settings.scorer_reason_model:
        return None
    where = Path(settings.checkpoints_dir) / settings.scorer_reason_model
    head = ReasonClassifier.load(where)
    if head is None:
        log.warning("no reason head at %s (train it: voxpop reasons train); negative posts get no reason", where)
    elif head.encoder != frozen_encoder:
        log.warning(
            "reason head %s was trained on %s, the scorer encodes with %s; negative posts get no reason",
            where,
            head.encoder,
            frozen_encoder,
        )
        return None
    return head


def transcript_queue(settings: Settings) -> TranscriptQueue | None:
    """The scorer's speech recognition, or None (off, or the extra is missing and not required)."""
    if settings.asr_model == "off":
        return None

    def load() -> Transcriber:
        return Transcriber(
            settings.asr_model,
            cache_dir=settings.asr_cache_dir,
            device=settings.asr_device or settings.scorer_device,
            compute_type=settings.asr_compute_type,
            threads=settings.asr_threads,
            workers=settings.asr_workers,
            beam_size=settings.asr_beam_size,
            vad=settings.asr_vad,
            language=settings.asr_language,
        )

    q = TranscriptQueue(
        load, settings.asr_workers, settings.asr_timeout_s, settings.asr_max_pending, settings.asr_max_seconds
    )
    if settings.asr_required:
        q.model()  # raises ASRUnavailable naming the package: the scorer does not start
    elif (why := asr_available()) is not None:
        log.warning("%s; audio posts will be scored without transcripts", why)
        return None
    return q


class LogAssignments(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python ships no type hints
    """Logs each rebalance: which partitions this scorer lost and which it now owns (the whole set)."""

    def __init__(self, ledger: OffsetLedger | None = None) -> None:
        self.ledger = ledger

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("partitions revoked: %s", _partition_list(revoked))
        if self.ledger is not None:
            self.ledger.forget(revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", _partition_list(assigned))


class _Trimmer:
    """Releases free heap pages after a batch, at most every ``interval_s`` (0: never)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s, self.last = interval_s, time.monotonic()

    def maybe(self) -> None:
        if self.interval_s > 0 and time.monotonic() - self.last >= self.interval_s:
            release_free_memory()
            self.last = time.monotonic()


def _partition_list(tps: Iterable[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}:{tp.partition}" for tp in sorted(tps)) or "-"


def run_scorer(
    settings: Settings, database_url: str, redis_url: str, bootstrap: str, idle_exit_s: float | None = None
) -> ScorerStats:
    """Entry point of `voxpop score`: SIGTERM/SIGINT drain the batch in hand, commit and exit."""
    keep_freed_memory()  # batch activations reused, not faulted in per forward (pipelines/allocator.py)
    rds = redis.Redis.from_url(redis_url)
    producer = make_producer(bootstrap)
    scorer = Scorer(settings, database_url, rds, producer)
    freeze_startup_heap()  # the models and modules: out of the collector's walks (latency tail)
    group = GroupMembership(
        scorer.db,
        bootstrap,
        settings.scorer_group,
        [settings.topic_raw],
        join_timeout_s=settings.scorer_join_timeout_s,
        epoch_check_s=settings.scorer_epoch_check_s,
        leave_group=settings.kafka_leave_group_on_close,
        listener=LogAssignments(scorer.ledger),
        max_poll_records=settings.scorer_max_batch,
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the batch in hand, then exiting", signum)
        scorer.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "scorer up: model %s %s, views %s, text encoder %s, precision %s%s, batch %d / %d ms",
        scorer.head.name,
        scorer.head.version,
        scorer.head.views,
        scorer.engine.text.version,
        scorer.engine.precision,
        " compiled" if scorer.engine.compiled else "",
        settings.scorer_max_batch,
        settings.scorer_max_wait_ms,
    )
    try:
        return scorer.run(group, idle_exit_s=idle_exit_s)
    finally:
        group.close()
        producer.flush()
        producer.close()
