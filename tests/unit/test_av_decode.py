"""Decoding audio and video posts with the packaged ffmpeg, on real media.

- an EmoDB clip decodes to exactly the samples the EmoDB heads were trained on (16 kHz mono, 1.00 s);
- a video the test builds from real MVSA images + real EmoDB speech decodes to N frames sampled
  uniformly (frame k shows the image on screen at the k-th segment centre) plus its audio track;
- broken media fail with a clear `DecodeError`, never anything else.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from models.audio_frontend import AudioFrontend
from pipelines.av_decode import SAMPLE_RATE, DecodeError, decode_audio, decode_video, encode_video, sample_times
from tests.conftest import dataset_path


def emodb_clip(i: int = 0) -> Path:
    return sorted((dataset_path("emodb") / "wav16k").glob("*.wav"))[i]


def mvsa_images(n: int) -> list[Path]:
    root = dataset_path("mvsa-single")
    with (root / "manifest_clmlf_split.csv").open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["image"]]
    return [root / r["image"] for r in rows[:n]]


def build_video(tmp: Path, n_images: int = 4, seconds_per_image: float = 0.5) -> tuple[Path, list[Path], Path]:
    """An mp4 of real MVSA images (each shown `seconds_per_image`) with an EmoDB clip as its audio."""
    images, wav = mvsa_images(n_images), emodb_clip(3)
    return encode_video(images, wav, tmp / "post.mp4", seconds_per_frame=seconds_per_image), images, wav


def test_emodb_clip_decodes_to_the_training_samples():
    clip = emodb_clip()
    x = decode_audio(clip.read_bytes())
    ref = AudioFrontend().load(clip)  # what the EmoDB training loader reads
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == len(ref) == SAMPLE_RATE  # the shared copy's clips are all 1.00 s long
    np.testing.assert_array_equal(x, ref)


def test_audio_is_resampled_to_16k_mono(tmp_path):
    """A 44.1 kHz stereo Ogg of the same speech comes out 16 kHz mono with the same length."""
    from pipelines.av_decode import _run

    clip = emodb_clip(1)
    ogg = tmp_path / "speech.ogg"
    res = _run(["-y", "-i", str(clip), "-ac", "2", "-ar", "44100", "-c:a", "libvorbis", str(ogg)], 30)
    assert res.returncode == 0, res.stderr[-500:]
    x = decode_audio(ogg.read_bytes())
    assert abs(len(x) - SAMPLE_RATE) < SAMPLE_RATE // 20
    ref = AudioFrontend().load(clip)
    n = min(len(x), len(ref))
    assert np.corrcoef(x[:n], ref[:n])[0, 1] > 0.9  # the same speech (lossy codec, resampled twice)


def test_video_frames_are_sampled_uniformly_with_audio_track(tmp_path):
    video, images, wav = build_video(tmp_path)
    out = decode_video(video.read_bytes(), n_frames=4)
    assert len(out.frames) == 4 and all(f.mode == "RGB" for f in out.frames)
    assert abs(out.duration_s - 2.0) < 0.15  # 4 images x 0.5 s (the 1 s speech track is shorter)
    assert out.times_s == pytest.approx(sample_times(out.duration_s, 4))

    # frame k is taken at the centre of segment k, i.e. while image k is on screen
    def small(im: Image.Image) -> np.ndarray:
        return np.asarray(ImageOps.fit(im.convert("L"), (32, 32)), np.float32)

    refs = [small(Image.open(p)) for p in images]
    for k, frame in enumerate(out.frames):
        dist = [np.abs(small(frame) - r).mean() for r in refs]
        assert int(np.argmin(dist)) == k, dist
    # the audio track: the 1 s EmoDB clip at 16 kHz (AAC adds a little priming/padding)
    assert out.audio is not None and out.audio.dtype == np.float32
    assert abs(len(out.audio) - SAMPLE_RATE) < SAMPLE_RATE // 10
    ref = AudioFrontend().load(wav)
    n = min(len(ref), len(out.audio))
    lag = int(np.argmax(np.correlate(out.audio[:n], ref[:4000], "valid")[:3000]))
    assert np.corrcoef(out.audio[lag : lag + n - 3000], ref[: n - 3000])[0, 1] > 0.9


def test_more_frames_than_images_and_no_audio_track(tmp_path):
    images = mvsa_images(2)
    video = encode_video(images, None, tmp_path / "silent.mp4", seconds_per_frame=1.0)
    out = decode_video(video.read_bytes(), n_frames=8)
    assert len(out.frames) == 8 and out.audio is None


def test_broken_media_raise_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="not a media file"):
        decode_audio(b"hello, this is plain text and not audio at all\n" * 20)
    with pytest.raises(DecodeError):
        decode_audio(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    with pytest.raises(DecodeError, match="no video stream"):
        decode_video(emodb_clip().read_bytes())
    images = mvsa_images(1)
    silent = encode_video(images, None, tmp_path / "silent.mp4")
    with pytest.raises(DecodeError, match="no audio stream"):
        decode_audio(silent.read_bytes())
    with pytest.raises(DecodeError):
        decode_video(silent.read_bytes()[: len(silent.read_bytes()) // 3])  # truncated mp4
