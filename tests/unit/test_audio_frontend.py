"""Audio front end: shapes, pitch on synthetic tones, and real EmoDB clips."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from models.audio_frontend import N_MELS, SAMPLE_RATE, AudioFrontend, read_wav
from tests.conftest import dataset_path


def _wav_bytes(x: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("f0", [90.0, 150.0, 220.0, 410.0])
@pytest.mark.parametrize("shape", ["sine", "saw"])
def test_pitch_of_synthetic_tone(f0: float, shape: str) -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    x = np.sin(2 * np.pi * f0 * t) if shape == "sine" else 2 * ((f0 * t) % 1.0) - 1
    fe = AudioFrontend()
    pros = fe.prosody((0.3 * x).astype(np.float32))
    voiced = pros[:, 3] > 0
    assert voiced.mean() > 0.9
    assert abs(np.median(pros[voiced, 1]) - f0) / f0 < 0.02


def test_silence_and_noise_are_unvoiced() -> None:
    fe = AudioFrontend()
    rng = np.random.default_rng(0)
    assert fe.prosody(np.zeros(8000, np.float32))[:, 3].sum() == 0
    noise = fe.prosody((0.1 * rng.standard_normal(16000)).astype(np.float32))
    assert noise[:, 3].mean() < 0.2
    assert noise[:, 2].mean() > 0.3  # white noise crosses zero about every other sample


def test_frame_counts_and_pooled_vector() -> None:
    fe = AudioFrontend()
    x = (0.2 * np.sin(2 * np.pi * 200 * np.arange(16000) / SAMPLE_RATE)).astype(np.float32)
    fr = fe.frames(x)
    assert fr.shape == (101, N_MELS + 4)  # 1 s at a 10 ms hop, centred frames
    v = fe.pool(fr)
    assert v.shape == (fe.dim,) and np.isfinite(v).all()
    # the 200 Hz tone lands in the mel band around 200 Hz
    peak_band = int(fr[:, :N_MELS].mean(0).argmax())
    assert 2 <= peak_band <= 12


def test_wav_roundtrip_and_resample() -> None:
    x = (0.5 * np.sin(2 * np.pi * 300 * np.arange(8000) / 8000)).astype(np.float32)
    blob = _wav_bytes(x, 8000)
    y, sr = read_wav(blob)
    assert sr == 8000 and np.allclose(x, y, atol=1e-4)
    fe = AudioFrontend()
    z = fe.load(blob)
    assert len(z) == 16000
    pros = fe.prosody(z)
    assert abs(np.median(pros[pros[:, 3] > 0, 1]) - 300) < 6


def test_real_emodb_clips() -> None:
    import csv

    base = dataset_path("emodb")
    rows = list(csv.DictReader((base / "labels_from_filename.csv").open(encoding="utf-8")))
    fe = AudioFrontend()
    pitch = {"male": [], "female": []}
    for r in [r for r in rows if r["emotion"] == "neutral"][:24]:
        fr = fe.frames(fe.load(base / r["file"]))
        assert fr.shape[1] == N_MELS + 4 and np.isfinite(fr).all()
        voiced = fr[:, -1] > 0
        assert 0.1 < voiced.mean() < 0.95  # speech has voiced and unvoiced/silent frames
        pitch[r["gender"]].append(np.median(fr[voiced, N_MELS + 1]))
        v = fe.utterance_vector(base / r["file"])
        assert v.shape == (fe.dim,) and np.isfinite(v).all()
    assert pitch["male"] and pitch["female"]
    assert np.median(pitch["female"]) > 1.2 * np.median(pitch["male"])  # voices differ as they should
