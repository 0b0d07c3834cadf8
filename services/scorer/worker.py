"""The scorer: a consumer group on `posts.raw` that turns posts into stored, published scores.

Per micro-batch (max size, max wait): validate -> load media within limits -> encode once ->
per-user state from Redis -> head -> one PostgreSQL transaction -> Redis state -> `posts.scored`
-> commit offsets. Offsets move only after every sink succeeded (at-least-once in, idempotent
sinks out). Infrastructure errors are retried without committing; a record that keeps failing
on its own goes to the DLQ after `scorer_max_attempts`, so a poison record never stalls a
partition. SIGTERM finishes the batch in hand, commits and exits.

Audio and video: the prefetch thread decodes them (packaged ffmpeg, time-limited; undecodable
media -> DLQ with the reason, the post is still scored). Posts that have them also go through every
configured tri-modal head that covers them (`scorer_av_models`, `pipelines.av_heads`), one batched
call per head; those predictions are extra rows ("av:<checkpoint>") in the same transaction, with
the head's per-modality weights, and are not published on `posts.scored` (one record per post
there, so trend windows count each post once). Text-only posts never touch that path.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import redis
import sqlalchemy.exc
import torch
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from models.registry import ScoringHead, load_head
from pipelines.av_heads import AVHead, AVInput, heads_for, load_av_heads
from pipelines.schemas import Media, Post, ScoredPost
from pipelines.scoring import Encoded, InferenceEngine, sentiment_score
from services.config import Settings
from services.ingest.gate import validation_reason
from services.scorer.media import MediaError, MediaPolicy, load_audio, load_image, load_video
from services.scorer.sinks import PredictionRow, stored_predictions, write_batch
from services.scorer.user_state import UserStateStore
from services.storage.db import engine_for
from services.storage.redis_keys import KEYS, SCORER_BATCHES_CHANNEL
from services.storage.redis_stats import observe
from services.stream.kafka import DeadLetter, make_consumer, make_producer

log = logging.getLogger(__name__)

INFRA_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, redis.ConnectionError,
                redis.TimeoutError, KafkaError)


@dataclass
class Item:
    rec: ConsumerRecord
    post: Post
    image: object | None = None
    media_status: list[str] = field(default_factory=list)
    av: AVInput | None = None  # decoded audio / video frames, for the tri-modal heads


@dataclass
class Prepared:
    """A polled batch made ready for inference off the hot thread: parsed, media loaded, tokenised."""

    records: list[ConsumerRecord]
    items: list[Item]
    tokens: list | None = None
    prepare_ms: float = 0.0
    encoded: Encoded | None = None  # the encoders' output, when the prefetch thread ran them
    encode_ms: float = 0.0


@dataclass
class ScorerStats:
    batches: int = 0
    scored: int = 0
    dlq: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class Scorer:
    def __init__(self, settings: Settings, database_url: str, rds: redis.Redis, producer: KafkaProducer,
                 head: ScoringHead | None = None, engine: InferenceEngine | None = None) -> None:
        self.s = settings
        if settings.scorer_threads:
            torch.set_num_threads(settings.scorer_threads)
        self.head = head or load_head(settings.scorer_model, device=settings.scorer_device)
        self.engine = engine or InferenceEngine(self.head, settings.scorer_precision, settings.scorer_device,
                                                bucket_size=settings.scorer_bucket_size)
        self.db = engine_for(database_url)
        self.redis, self.producer = rds, producer
        self.dlq = DeadLetter(producer, settings.topic_dlq)
        self.state = UserStateStore(rds, {v: self.head.feature_dims[v] for v in self.head.views})
        roots = tuple(Path(p) for p in settings.media_allowed_roots) or (Path(settings.data_dir),)
        self.media_policy = MediaPolicy(settings.media_max_bytes, settings.media_timeout_s, roots,
                                        decode_timeout_s=settings.media_decode_timeout_s,
                                        max_seconds=settings.media_max_seconds, video_frames=settings.video_frames)
        # The tri-modal heads share the production encoders when those run in plain fp32.
        self.av_heads: list[AVHead] = load_av_heads(
            settings.scorer_av_models, settings.checkpoints_dir, settings.scorer_device,
            text_encoder=self.engine.frozen_text if settings.scorer_precision == "fp32" else None,
            image_encoder=self.engine.image) if settings.scorer_av_models else []
        self.stats = ScorerStats()
        self.stopping = threading.Event()

    # ---- one batch -------------------------------------------------------------------------
    def _parse(self, records: list[ConsumerRecord]) -> list[Item]:
        items, seen = [], set()
        for rec in records:
            try:
                post = Post.model_validate_json(rec.value)
            except (ValidationError, ValueError) as e:
                self._to_dlq(rec, f"invalid post: {validation_reason(e)}", "scorer-validate", 1)
                continue
            if post.id not in seen:  # the same post twice in one batch is scored once
                seen.add(post.id)
                items.append(Item(rec=rec, post=post))
        return items

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
                elif md.kind in ("audio", "video") and self.av_heads:
                    it.media_status.append(self._load_av(it, md))
                else:
                    it.media_status.append("ok" if md.kind == "image" and it.image is not None
                                           else f"skipped: no {md.kind} view in {self.head.name}")

    def _load_av(self, it: Item, md: Media) -> str:
        """Decode one audio/video item (ffmpeg child, time-limited) and precompute audio frames.

        Only the first audio source and the first video of a post are used; an undecodable item
        sends the record to the DLQ with the reason and the post is still scored without it.
        """
        av = it.av or AVInput(text=it.post.text)
        if (md.kind == "audio" and av.audio is not None) or (md.kind == "video" and av.frames):
            return "skipped:duplicate"
        try:
            if md.kind == "audio":
                av.audio = load_audio(md.uri, self.media_policy, md.sha256)
            else:
                video = load_video(md.uri, self.media_policy, md.sha256)
                av.frames = video.frames
                if av.audio is None:
                    av.audio = video.audio
        except MediaError as e:
            self._to_dlq(it.rec, f"media {md.uri}: {e}", "scorer-media", 1)
            return "skipped:undecodable"
        if av.audio is not None:  # numpy-only feature work belongs on this (prefetch) thread
            for h in self.av_heads:
                key = h.features.audio_key
                if key and key not in av.audio_features and h.covers(True, False):
                    av.audio_features[key] = h.audio_features(av.audio)
        it.av = av
        return "ok"

    def prepare(self, records: list[ConsumerRecord], encode: bool = False) -> Prepared:
        """Parse, load media and tokenise: all CPU/I-O work that needs no per-user state, done ahead.

        With `encode`, the frozen encoders run here too (they depend on nothing but the post), so
        the prefetch thread encodes batch k+1 while the main thread stores batch k. An encoder
        error leaves `encoded` empty: the main thread then encodes under its retry/isolation rules.
        """
        t0 = time.perf_counter()
        items = self._parse(records)
        self._load_media(items)
        tokens = self.engine.tokenize([it.post.text for it in items]) if items else None
        prep = Prepared(records, items, tokens, (time.perf_counter() - t0) * 1000)
        if encode and items:
            t1 = time.perf_counter()
            try:
                prep.encoded = self.engine.encode([it.post.text for it in items], [it.image for it in items],
                                                  tokens=tokens)
                prep.encode_ms = (time.perf_counter() - t1) * 1000
            except Exception as e:  # noqa: BLE001 - the main thread redoes it and isolates the culprit
                log.warning("encoding ahead failed, the batch is encoded again on the main thread: %s", e)
        return prep

    def process(self, records: list[ConsumerRecord] | Prepared) -> int:
        """Score and store one batch; raises on failure (nothing committed then)."""
        t0 = time.perf_counter()
        prep = records if isinstance(records, Prepared) else self.prepare(records)
        items = prep.items
        if not items:
            return 0
        now = datetime.now(UTC)
        t_media = time.perf_counter()
        enc = prep.encoded
        if enc is None:
            enc = self.engine.encode([it.post.text for it in items], [it.image for it in items], tokens=prep.tokens)
        t_enc = time.perf_counter()
        encode_ms = prep.encode_ms if prep.encoded is not None else (t_enc - t_media) * 1000

        # Per-user state: causal, in stream order, each post folded in once.
        by_author: dict[str, list[str]] = defaultdict(list)
        for it in items:
            by_author[it.post.author.id].append(it.post.id)
        states, applied = self.state.load(list(by_author), by_author)
        # numpy views and Python lists once per batch: per-element tensor indexing cost more than
        # the head itself
        views = self.head.views
        u_np = {v: np.zeros((len(items), self.head.feature_dims[v]), np.float32) for v in views}
        n_np = {v: np.zeros(len(items), np.float32) for v in views}
        x_np = {v: enc.x[v].numpy() for v in views}
        present = {v: enc.mask[v].tolist() for v in views}
        changed, folded = {}, defaultdict(list)
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
        scored = self.engine.predict(enc, u, n)
        t_head = time.perf_counter()

        labels = list(self.head.labels)
        scores = sentiment_score(labels, scored.probs).tolist()
        probs = scored.probs.tolist()
        weights = {v: w.tolist() for v, w in scored.modality_weights.items()}
        prior = n_np["text"].astype(int).tolist() if "text" in n_np else [0] * len(items)
        timings = {"prepare": prep.prepare_ms, "encode": encode_ms, "head": (t_head - t_enc) * 1000,
                   "batch": float(len(items))}
        rows = []
        for i, it in enumerate(items):
            p = probs[i]
            t = dict(timings)
            if it.post.ingested_at:
                t["queue"] = (now - it.post.ingested_at).total_seconds() * 1000
            rows.append(PredictionRow(
                post=it.post, model_name=self.head.name, model_version=self.head.version,
                label=labels[max(range(len(p)), key=p.__getitem__)], probabilities=dict(zip(labels, p, strict=True)),
                score=scores[i], emotion=None, modality_weights={v: w[i] for v, w in weights.items()},
                user_prior_count=prior[i], timings_ms=t, media_status=it.media_status))
        extra = self._score_av(items)  # [] unless the batch has audio/video posts
        t_av = time.perf_counter()
        new_ids, stored_at = write_batch(self.db, rows, extra)
        t_db = time.perf_counter()

        # Redis: user state + thread context + counters, after the database holds the batch.
        self.state.save(changed, folded)
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

        # Re-delivered posts publish what was stored the first time, not a recomputation.
        old = stored_predictions(self.db, [r.post.id for r in rows if r.post.id not in new_ids],
                                 self.head.name, self.head.version)
        for r in rows:
            prev = old.get(r.post.id)
            if prev is not None:
                r.label, r.probabilities, r.score = prev.label, prev.probabilities, prev.score
                r.modality_weights, r.user_prior_count = prev.modality_weights, prev.user_prior_count
            r.timings_ms["db"] = (t_db - t_av) * 1000
            sp = ScoredPost(
                post_id=r.post.id, author_id=r.post.author.id, created_at=r.post.created_at,
                watches=r.post.watches, model_name=r.model_name, model_version=r.model_version,
                label=r.label, probabilities=r.probabilities, score=r.score, emotion=r.emotion,
                modality_weights=r.modality_weights, user_prior_count=r.user_prior_count,
                timings_ms=r.timings_ms, ingested_at=r.post.ingested_at, stored_at=stored_at)
            self.producer.send(self.s.topic_scored, key=r.post.author.id.encode(),
                               value=sp.model_dump_json().encode())
        self.producer.flush()
        self.stats.scored += len(items)
        return len(items)

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
                rows.append(PredictionRow(
                    post=it.post, model_name=h.model_name, model_version=h.version, label=p.label,
                    probabilities=p.probabilities, score=p.score, emotion=p.emotion,
                    modality_weights=p.modality_weights, user_prior_count=0,
                    timings_ms={"head": ms, "batch": float(len(chosen))}, media_status=it.media_status))
        return rows

    # ---- failure handling ------------------------------------------------------------------
    def _to_dlq(self, rec: ConsumerRecord, error: str, stage: str, attempts: int) -> None:
        self.dlq.send(key=rec.key, value=rec.value, error=error, stage=stage, source_topic=rec.topic,
                      partition=rec.partition, offset=rec.offset, attempts=attempts)
        self.stats.dlq += 1

    def process_safely(self, prep: Prepared) -> None:
        """Retry infrastructure errors until they pass; isolate records that fail on their own."""
        attempt, backoff = 0, 0.5
        records = prep.records
        while True:
            try:
                self.process(prep if attempt == 0 else records)
                return
            except INFRA_ERRORS as e:
                log.warning("infrastructure error, retrying batch in %.1fs: %s", backoff, e)
                if self.stopping.wait(backoff):
                    raise
                backoff = min(backoff * 2, 30)
            except Exception as e:  # a data problem: find the record(s) behind it
                attempt += 1
                if attempt < self.s.scorer_max_attempts:
                    log.warning("batch failed (attempt %d): %s", attempt, e)
                    continue
                log.warning("batch keeps failing (%s); scoring its %d records one by one", e, len(records))
                for rec in records:
                    self._process_one(rec)
                return

    def _process_one(self, rec: ConsumerRecord) -> None:
        err: Exception | None = None
        for _ in range(self.s.scorer_max_attempts):
            try:
                self.process([rec])
                return
            except INFRA_ERRORS:
                raise
            except Exception as e:
                err = e
        self._to_dlq(rec, f"scoring failed: {type(err).__name__}: {err}", "scorer", self.s.scorer_max_attempts)
        self.producer.flush()

    # ---- the loop --------------------------------------------------------------------------
    def _collect(self, consumer: KafkaConsumer) -> list[ConsumerRecord]:
        """One micro-batch: up to max_batch records, waiting at most max_wait after the first."""
        batch: list[ConsumerRecord] = []
        deadline = None
        while len(batch) < self.s.scorer_max_batch and not self.stopping.is_set():
            timeout = 200 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            polled = consumer.poll(timeout_ms=timeout, max_records=self.s.scorer_max_batch - len(batch))
            for recs in polled.values():
                batch.extend(recs)
            if batch and deadline is None:
                deadline = time.monotonic() + self.s.scorer_max_wait_ms / 1000
            if not batch or (deadline is not None and time.monotonic() >= deadline):
                break
        batch.sort(key=lambda r: (r.partition, r.offset))
        return batch

    def run(self, consumer: KafkaConsumer, max_records: int | None = None, idle_exit_s: float | None = None
            ) -> ScorerStats:
        """Score until stopped (SIGTERM), `max_records` done, or idle for `idle_exit_s`.

        A prefetch thread owns the consumer: it polls and prepares batch k+1 (parse, media,
        tokenise) while this thread runs batch k through the model and the sinks, and it commits
        the offsets this thread hands back once a batch is fully stored. It stays exactly one
        batch ahead: it polls again only once this thread has taken the batch it prepared, so a
        post never queues behind more than the batch in hand (with two batches buffered, p50
        latency at half load was ~3 batch times).
        """
        ready: queue.Queue[Prepared | None] = queue.Queue(maxsize=1)
        taken = threading.Event()  # the last prepared batch was picked up: time to poll the next
        taken.set()
        commits: queue.Queue[dict[TopicPartition, OffsetAndMetadata]] = queue.Queue()
        done = threading.Event()
        last_data = [time.monotonic()]
        errors: list[BaseException] = []

        def apply_commits() -> None:
            while True:
                try:
                    offsets = commits.get_nowait()
                except queue.Empty:
                    return
                try:
                    consumer.commit(offsets)
                except CommitFailedError as e:  # partitions moved: the new owner redoes them, idempotently
                    log.warning("offset commit refused after a rebalance: %s", e)

        def prefetch() -> None:
            try:
                while not done.is_set():
                    apply_commits()
                    if not taken.wait(0.2):
                        continue
                    batch = self._collect(consumer)
                    if not batch:
                        if idle_exit_s is not None and time.monotonic() - last_data[0] > idle_exit_s:
                            break
                        continue
                    last_data[0] = time.monotonic()
                    prep = self.prepare(batch, encode=self.s.scorer_encode_ahead)
                    taken.clear()
                    while not done.is_set():
                        try:
                            ready.put(prep, timeout=0.2)
                            break
                        except queue.Full:
                            apply_commits()
            except BaseException as e:  # surface to the main thread
                errors.append(e)
            finally:
                # The end-of-stream marker must never block: if the main thread has stopped reading
                # (SIGTERM) a full queue would strand the last commits below.
                while not done.is_set():
                    try:
                        ready.put(None, timeout=0.2)
                        break
                    except queue.Full:
                        apply_commits()
                done.wait()
                apply_commits()

        thread = threading.Thread(target=prefetch, name="scorer-prefetch", daemon=True)
        thread.start()
        try:
            while not self.stopping.is_set():
                try:
                    prep = ready.get(timeout=0.2)
                    taken.set()
                except queue.Empty:
                    continue
                if prep is None:
                    break
                self.process_safely(prep)
                commits.put(_next_offsets(prep.records))
                self.stats.batches += 1
                self.stats.batch_sizes.append(len(prep.records))
                if max_records is not None and self.stats.scored + self.stats.dlq >= max_records:
                    break
        finally:
            done.set()
            thread.join(timeout=60)
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
    return json.dumps({"posts": len(new_ids), "batch": len(rows), "labels": labels, "watches": watches,
                       "at": now.isoformat()})


def _next_offsets(records: list[ConsumerRecord]) -> dict[TopicPartition, OffsetAndMetadata]:
    """Per partition, the offset after the last record handled: what Kafka calls committed."""
    top: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        top[tp] = max(top.get(tp, -1), r.offset)
    return {tp: OffsetAndMetadata(off + 1, "", -1) for tp, off in top.items()}


def run_scorer(settings: Settings, database_url: str, redis_url: str, bootstrap: str,
               idle_exit_s: float | None = None) -> ScorerStats:
    """Entry point of `voxpop score`: SIGTERM/SIGINT drain the batch in hand, commit and exit."""
    rds = redis.Redis.from_url(redis_url)
    producer = make_producer(bootstrap)
    scorer = Scorer(settings, database_url, rds, producer)
    consumer = make_consumer(bootstrap, settings.scorer_group, [settings.topic_raw],
                             max_poll_records=settings.scorer_max_batch)

    def stop(signum, _frame):
        log.info("signal %d: finishing the batch in hand, then exiting", signum)
        scorer.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("scorer up: model %s %s, views %s, precision %s, batch %d / %d ms", scorer.head.name,
             scorer.head.version, scorer.head.views, settings.scorer_precision, settings.scorer_max_batch,
             settings.scorer_max_wait_ms)
    try:
        return scorer.run(consumer, idle_exit_s=idle_exit_s)
    finally:
        consumer.close(autocommit=False)
        producer.flush()
        producer.close()
