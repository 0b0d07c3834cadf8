"""`voxpop predict` on an audio file and a video file: transcript, language, label, dominant view."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipelines.av_decode import encode_video
from services.cli import app
from tests.conftest import dataset_path
from tests.speech import need_asr, speak

SAID = "I am so happy with this service, the staff were wonderful and kind."


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    need_asr()
    return CliRunner()


def _predict(runner: CliRunner, path, *args: str) -> dict:
    out = path.parent / (path.name + ".json")
    res = runner.invoke(app, ["predict", str(path), "--out", str(out), *args])
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


def test_predict_an_audio_file_prints_what_was_said(runner, tmp_path) -> None:
    rec = _predict(runner, speak(SAID, tmp_path / "voice.wav"))
    assert rec["kind"] == "audio" and rec["language"] == "en" and rec["transcript_status"] == "ok"
    assert {"happy", "wonderful"} <= set(rec["transcript"].lower().replace(",", " ").split())
    assert rec["label"] == "positive" and rec["dominant_view"] in {"words", "voice"}
    assert {r["model"] for r in rec["trimodal"]} == {"av:amsgfn-emodb"}  # speech only: no frames head


def test_predict_a_video_file_hears_its_track_and_sees_its_frames(runner, tmp_path) -> None:
    import csv

    root = dataset_path("mvsa-single")
    with (root / "manifest_clmlf_split.csv").open(encoding="utf-8", newline="") as f:
        images = [root / r["image"] for r in csv.DictReader(f) if r["image"]][40:42]
    video = encode_video(images, speak(SAID, tmp_path / "track.wav"), tmp_path / "v.mp4", seconds_per_frame=2.5)
    rec = _predict(runner, video, "--caption", "our day out")
    assert rec["kind"] == "video" and rec["frames"] >= 2 and rec["language"] == "en"
    assert "wonderful" in rec["transcript"].lower()
    assert {r["model"] for r in rec["trimodal"]} == {"av:amsgfn-emodb", "av:amsgfn-mvsa-single"}
    assert rec["dominant_view"] in {"words", "voice", "frames"} and rec["label"] in {"positive", "neutral"}


def test_predict_a_corrupt_file_says_why(runner, tmp_path) -> None:
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"ID3" + b"\x00garbage" * 100)
    res = runner.invoke(app, ["predict", str(bad)])
    assert res.exit_code == 1 and "not a media file ffmpeg can read" in res.output
