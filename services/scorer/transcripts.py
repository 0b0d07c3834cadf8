"""Speech recognition beside the scorer: audio posts wait for their words, text posts never do.

Design (and why): transcription runs on a small pool of worker threads (`asr_workers`, one
Whisper model shared by them; CTranslate2 releases the GIL). The polling thread decodes a post's
audio, hands it to the pool and goes on polling: the post is held back here, *not* in the batch,
until its transcript is ready or `asr_timeout_s` has passed, then it joins the next batch like any
other post (scored once, with the transcript as its text view, or without one, status "timeout").
Text-only posts polled after it are scored in the batches that follow at once, so a slow
transcription delays nothing but its own post. Offsets stay safe through
`services.scorer.offsets.OffsetLedger`: no commit passes a post that still waits.

Why not a child process with a hard kill: a second copy of the model and the audio crossing a pipe
for each post, to guard against a hang CTranslate2 has not shown; the time limit is kept on both
sides instead: the polling thread stops waiting at the deadline, and the worker stops decoding at
the next segment after it (`pipelines.asr.Transcriber.transcribe`). Why not text-first scoring
with the transcript as a later row: `posts.scored` carries one record per post (trend windows
count each post once), and that record must already be scored on the words.

Back-pressure: at most `asr_max_pending` posts wait here (abandoned, still-running jobs count);
at the limit the polling thread stops polling until one is done. Nothing is dropped.

The model loads lazily, on the first audio post, inside a worker thread (the polling thread never
waits for it); a missing extra is reported once, naming the package, and those posts are scored
without transcripts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.asr import ASRUnavailable, Transcriber, Transcript

log = logging.getLogger("voxpop.scorer.transcripts")


@dataclass
class Waiting:
    """One post whose audio is being transcribed."""

    item: Any  # services.scorer.worker.Item
    future: Future[Transcript]
    submitted: float
    deadline: float


@dataclass
class Outcome:
    item: Any
    transcript: Transcript | None
    status: str  # the transcript's status, "timeout", or why there is none
    waited_ms: float


class TranscriptQueue:
    """Bounded, deadline-aware transcription of posts' audio (see the module docstring)."""

    def __init__(
        self,
        factory: Callable[[], Transcriber],
        workers: int = 1,
        timeout_s: float = 30.0,
        max_pending: int = 8,
        max_seconds: float = 60.0,
    ) -> None:
        self._factory = factory
        self._model: Transcriber | None = None
        self._error: str | None = None
        self._load_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr")
        self.timeout_s, self.max_pending, self.max_seconds = timeout_s, max_pending, max_seconds
        self.waiting: list[Waiting] = []
        self._abandoned: list[Future[Transcript]] = []  # timed out here, still running there

    def model(self) -> Transcriber:
        """The shared model, loaded on first use (raises ASRUnavailable with the reason)."""
        with self._load_lock:
            if self._model is None:
                if self._error is not None:
                    raise ASRUnavailable(self._error)
                try:
                    self._model = self._factory()
                except ASRUnavailable as e:
                    self._error = str(e)
                    log.warning("speech recognition unavailable, audio posts are scored without transcripts: %s", e)
                    raise
            return self._model

    def _run(self, audio: np.ndarray, deadline: float) -> Transcript:
        return self.model().transcribe(audio, deadline=deadline, max_seconds=self.max_seconds)

    def __len__(self) -> int:
        return len(self.waiting)

    def full(self) -> bool:
        self._abandoned = [f for f in self._abandoned if not f.done()]
        return len(self.waiting) + len(self._abandoned) >= self.max_pending

    def submit(self, item: Any, audio: np.ndarray) -> Waiting:
        now = time.monotonic()
        w = Waiting(item, self.pool.submit(self._run, audio, now + self.timeout_s), now, now + self.timeout_s)
        self.waiting.append(w)
        return w

    def _outcome(self, w: Waiting, now: float) -> Outcome:
        waited = (now - w.submitted) * 1000
        if not w.future.done():
            self._abandoned.append(w.future)
            return Outcome(w.item, None, "timeout", waited)
        try:
            t = w.future.result()
        except ASRUnavailable as e:
            return Outcome(w.item, None, f"unavailable: {e}", waited)
        except Exception as e:  # a bad audio must not take the scorer down: the post goes on without words
            log.warning("transcription failed: %s: %s", type(e).__name__, e)
            return Outcome(w.item, None, f"failed: {type(e).__name__}: {e}", waited)
        return Outcome(w.item, t, t.status, waited)

    def due(self) -> list[Outcome]:
        """Posts whose transcript is ready or whose time is up (removed from the queue)."""
        now = time.monotonic()
        out: list[Waiting] = []
        keep: list[Waiting] = []
        for w in self.waiting:
            (out if w.future.done() or now >= w.deadline else keep).append(w)
        self.waiting = keep
        return [self._outcome(w, now) for w in out]

    def settle(self, items: list[Any]) -> list[Outcome]:
        """Wait (up to each deadline) for these items' transcripts: the synchronous path for retries."""
        mine = [w for w in self.waiting if any(w.item is it for it in items)]
        self.waiting = [w for w in self.waiting if w not in mine]
        for w in mine:
            wait([w.future], timeout=max(0.0, w.deadline - time.monotonic()))
        now = time.monotonic()
        return [self._outcome(w, now) for w in mine]

    def wait_any(self, timeout: float) -> None:
        """Sleep until some transcription finishes (or `timeout`)."""
        futures = [w.future for w in self.waiting] + self._abandoned
        if futures:
            wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        else:
            time.sleep(timeout)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
