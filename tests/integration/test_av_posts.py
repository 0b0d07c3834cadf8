"""Audio and video posts scored by tri-modal heads in the live stream.

Real parts end to end: ingest gate -> Tansu broker -> scorer subprocess (packaged ffmpeg, real
checkpoints) -> PostgreSQL. The posts:
- an audio post: a real EmoDB clip (its German sentence as text);
- a video post: an mp4 the test builds from 4 real MVSA-Single images and a real EmoDB clip;
- a text-only post (must not touch the tri-modal path) and a post with a broken audio file
  (DLQ with the reason, the post itself still scored by the production head).
"""

from __future__ import annotations

import csv
import hashlib
import json
import signal
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import redis
from sqlalchemy import text

from pipelines.av_decode import encode_video
from pipelines.schemas import Author, Media, Post
from services.api import queries
from services.api.schemas import PostOut
from services.ingest.gate import Incoming, IngestGate
from services.storage.db import engine_for
from services.stream.dlq_reader import read_dead_letters
from services.stream.kafka import make_producer
from tests.conftest import dataset_path
from tests.integration.streamkit import ROOT, child_env, count, fresh_stream, wait_for

pytestmark = pytest.mark.integration
AV_HEADS = ["amsgfn-emodb", "amsgfn-mvsa-single"]


def _media(kind: str, path, mime: str) -> Media:
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


def test_audio_and_video_posts_get_trimodal_heads(stack_endpoints, tmp_path):
    ep = stack_endpoints
    from pipelines.datasets import emodb

    data_dir = dataset_path("emodb").parent
    mvsa_root = dataset_path("mvsa-single")
    clips = emodb.load_clips(data_dir)
    clip, track = clips[10], clips[42]
    with (mvsa_root / "manifest_clmlf_split.csv").open(encoding="utf-8", newline="") as f:
        images = [mvsa_root / r["image"] for r in csv.DictReader(f) if r["image"]][20:24]
    media_dir = tmp_path / "media"
    media_dir.mkdir()
    video = encode_video(images, track.path, media_dir / "clip.mp4", seconds_per_frame=0.5)
    broken = media_dir / "broken.wav"
    broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00garbage" * 64)

    posts = [
        _post("audio-1", "anna", clip.text, [_media("audio", clip.path, "audio/wav")]),
        _post("video-1", "ben", "Look what we filmed today", [_media("video", video, "video/mp4")]),
        _post("text-1", "carl", "Plain text, no media at all, and a fine day", []),
        _post("broken-1", "dora", "this audio will not decode", [_media("audio", broken, "audio/wav")]),
    ]
    s = fresh_stream(ep, scorer_max_batch=16, scorer_max_wait_ms=300, data_dir=data_dir)
    producer = make_producer(ep.kafka_bootstrap)
    gate = IngestGate(s, producer, redis.Redis.from_url(ep.redis_url), engine_for(ep.database_url))
    res = gate.submit([Incoming(raw=p.model_dump_json().encode(), post=p, source="test") for p in posts])
    assert len(res.accepted) == 4, res

    env = child_env(s) | {
        "VOXPOP_SCORER_AV_MODELS": json.dumps(AV_HEADS),
        "VOXPOP_MEDIA_ALLOWED_ROOTS": json.dumps([str(media_dir), str(data_dir)]),
    }
    log = tmp_path / "scorer.log"
    with log.open("ab") as out:
        scorer = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "score"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: count(ep, "SELECT count(*) FROM predictions") >= 4 + 3,
            90,
            "4 production + 3 tri-modal predictions",
            scorer,
            log,
        )
    finally:
        scorer.send_signal(signal.SIGTERM)
        rc = scorer.wait(60)
    assert rc == 0, log.read_text()[-3000:]

    with engine_for(ep.database_url).connect() as conn:
        rows = (
            conn.execute(
                text(
                    "SELECT post_id, model_name, label, emotion, probabilities, modality_weights "
                    "FROM predictions ORDER BY post_id, model_name"
                )
            )
            .mappings()
            .all()
        )
        by_post: dict[str, dict[str, dict]] = {}
        for r in rows:
            by_post.setdefault(r["post_id"], {})[r["model_name"]] = dict(r)
        status = dict(conn.execute(text("SELECT post_id, status FROM media")).all())
        video_out = PostOut.model_validate(queries.post_out(queries.get_post(conn, "test:video-1")))
        audio_out = PostOut.model_validate(queries.post_out(queries.get_post(conn, "test:audio-1")))

    prod = next(iter(by_post["test:text-1"]))  # the production head's name
    # every post has its production prediction; only audio/video posts have tri-modal ones
    assert {p: sorted(m) for p, m in by_post.items()} == {
        "test:audio-1": ["av:amsgfn-emodb", prod],
        "test:video-1": ["av:amsgfn-emodb", "av:amsgfn-mvsa-single", prod],
        "test:text-1": [prod],
        "test:broken-1": [prod],
    }
    audio = by_post["test:audio-1"]["av:amsgfn-emodb"]
    assert set(audio["modality_weights"]) == {"text", "audio"}
    assert sum(audio["modality_weights"].values()) == pytest.approx(1.0, abs=1e-4)
    assert audio["modality_weights"]["audio"] > 0 and audio["emotion"] in emodb.EMOTIONS
    assert set(audio["probabilities"]) == set(emodb.EMOTIONS)
    v_speech = by_post["test:video-1"]["av:amsgfn-emodb"]["modality_weights"]
    v_frames = by_post["test:video-1"]["av:amsgfn-mvsa-single"]["modality_weights"]
    assert set(v_speech) == {"text", "audio"} and v_speech["audio"] > 0  # the video's audio track
    assert set(v_frames) == {"text", "video"} and v_frames["video"] > 0  # its sampled frames
    assert sum(v_frames.values()) == pytest.approx(1.0, abs=1e-4)
    assert status == {"test:audio-1": "ok", "test:video-1": "ok", "test:broken-1": "skipped:undecodable"}

    # the API: the primary prediction stays the production head's; the drill-down names what dominated
    assert video_out.prediction is not None and video_out.prediction.model_name == prod
    assert {a.model_name for a in video_out.av_predictions} == {"av:amsgfn-emodb", "av:amsgfn-mvsa-single"}
    for a in [*video_out.av_predictions, *audio_out.av_predictions]:
        assert a.dominant_modality == max(a.modality_weights, key=a.modality_weights.get)

    letters = [d for d in read_dead_letters(ep.kafka_bootstrap, s.topic_dlq) if d["stage"] == "scorer-media"]
    assert letters and all("broken.wav" in d["error"] for d in letters), letters
    assert count(ep, "SELECT count(*) FROM posts") == 4
    producer.close()
