"""Audio front end: log-mel spectrogram + prosody per 10 ms frame, and a pooled utterance vector.

16 kHz mono, 25 ms Hann window (400 samples, FFT 512), 10 ms hop, 64 HTK mel bands 0-8 kHz.
Prosody per frame: log energy (RMS, dB), pitch (Hz, autocorrelation over a 40 ms window so
pitches down to 60 Hz fit two periods; 0 when unvoiced), zero-crossing rate, voiced flag.
Utterance vector = mean and std over frames of [log-mel, energy, zcr] plus voiced fraction and
pitch mean/std/median over voiced frames (semitones re 100 Hz, so male/female ranges compare).

numpy + stdlib only (`wave`), per the layout rule that models/ imports no scipy.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
WIN = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
N_MELS = 64
PITCH_WIN = 640  # 40 ms
FMIN_PITCH, FMAX_PITCH = 60.0, 500.0
VOICING_THRESHOLD = 0.45  # normalised autocorrelation peak
OCTAVE_TOLERANCE = 0.9  # accept the shortest-lag peak within 10% of the best
SILENCE_DB = -35.0  # frames this far below the loudest are never voiced
AUDIO_FRONTEND_VERSION = "logmel64-prosody@1/16k/25ms/10ms"
FRAME_FEATURES = ("log_mel[64]", "log_energy_db", "pitch_hz", "zcr", "voiced")


def read_wav(src: str | Path | bytes) -> tuple[np.ndarray, int]:
    """PCM WAV (8/16/32-bit int) -> float32 mono in [-1, 1], sample rate."""
    f = io.BytesIO(src) if isinstance(src, bytes | bytearray) else open(src, "rb")  # noqa: SIM115
    with f, wave.open(f, "rb") as w:
        sr, ch, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
        raw = w.readframes(n)
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    else:
        raise ValueError(f"unsupported WAV sample width {width} bytes")
    if ch > 1:
        x = x.reshape(-1, ch).mean(1)
    return x, sr


def resample(x: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Linear-interpolation resampling (a fallback: the project's audio is already 16 kHz)."""
    if sr == target or len(x) == 0:
        return x.astype(np.float32)
    n = int(round(len(x) * target / sr))
    return np.interp(np.arange(n) * (sr / target), np.arange(len(x)), x).astype(np.float32)


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int = N_MELS,
    n_fft: int = N_FFT,
    sr: int = SAMPLE_RATE,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Triangular HTK mel filters [n_mels, n_fft//2 + 1]."""
    fmax = fmax or sr / 2
    pts = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((n_mels, len(freqs)), dtype=np.float32)
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        up = (freqs - lo) / max(c - lo, 1e-9)
        down = (hi - freqs) / max(hi - c, 1e-9)
        fb[m] = np.clip(np.minimum(up, down), 0, None)
    return fb


def frame_signal(x: np.ndarray, win: int, hop: int = HOP) -> np.ndarray:
    """Centre-aligned frames [T, win]: frame t covers samples around t*hop (zero-padded ends)."""
    pad = win // 2
    xp = np.pad(x.astype(np.float32), (pad, pad + win))
    t = max(1, 1 + len(x) // hop)
    idx = np.arange(win)[None, :] + hop * np.arange(t)[:, None]
    return xp[idx]


class AudioFrontend:
    """Stateless feature extractor; `version` keys the feature cache."""

    version = AUDIO_FRONTEND_VERSION
    sample_rate = SAMPLE_RATE
    frame_dim = N_MELS + 4
    dim = 2 * (N_MELS + 2) + 4

    def __init__(self) -> None:
        self._fb = mel_filterbank()
        self._win = np.hanning(WIN + 1)[:-1].astype(np.float32)  # periodic Hann
        self._pwin = np.hanning(PITCH_WIN + 1)[:-1].astype(np.float32)
        # autocorrelation of the window itself, to unbias the frame autocorrelation
        wac = np.fft.irfft(np.abs(np.fft.rfft(self._pwin, 2 * PITCH_WIN)) ** 2)[:PITCH_WIN]
        self._wac = (wac / wac[0]).astype(np.float32)

    def load(self, src: str | Path | bytes) -> np.ndarray:
        x, sr = read_wav(src)
        return resample(x, sr)

    def log_mel(self, x: np.ndarray) -> np.ndarray:
        """[T, 64] natural-log mel power (floor 1e-10)."""
        frames = frame_signal(x, WIN) * self._win
        power = np.abs(np.fft.rfft(frames, N_FFT)) ** 2
        return np.log(np.maximum(power @ self._fb.T, 1e-10)).astype(np.float32)

    def prosody(self, x: np.ndarray) -> np.ndarray:
        """[T, 4]: log energy (dB), pitch (Hz, 0 unvoiced), zero-crossing rate, voiced (0/1)."""
        fr = frame_signal(x, WIN)
        rms = np.sqrt(np.mean(fr**2, axis=1) + 1e-12)
        energy_db = 20 * np.log10(rms + 1e-10)
        signs = np.signbit(fr)
        zcr = np.mean(signs[:, 1:] != signs[:, :-1], axis=1)
        pf = frame_signal(x, PITCH_WIN)
        pf = (pf - pf.mean(1, keepdims=True)) * self._pwin
        ac = np.fft.irfft(np.abs(np.fft.rfft(pf, 2 * PITCH_WIN)) ** 2)[:, :PITCH_WIN]
        ac = ac / np.maximum(ac[:, :1], 1e-12) / np.maximum(self._wac, 1e-3)
        lo, hi = int(SAMPLE_RATE / FMAX_PITCH), int(SAMPLE_RATE / FMIN_PITCH)
        seg = ac[:, lo : hi + 1]
        # the first local maximum close to the best one: multiples of the period score about as
        # high (and the window unbiasing inflates long lags), so the shortest lag wins
        is_peak = np.zeros_like(seg, dtype=bool)
        is_peak[:, 1:-1] = (seg[:, 1:-1] >= seg[:, :-2]) & (seg[:, 1:-1] >= seg[:, 2:])
        best = np.where(is_peak, seg, -np.inf).max(1, keepdims=True)
        cand = is_peak & (seg >= OCTAVE_TOLERANCE * best)
        k = np.where(cand.any(1), cand.argmax(1), seg.argmax(1))
        peak = seg[np.arange(len(seg)), k]
        # parabolic interpolation around the peak for sub-sample lag precision
        km, kp = np.clip(k - 1, 0, seg.shape[1] - 1), np.clip(k + 1, 0, seg.shape[1] - 1)
        a, b, c = seg[np.arange(len(seg)), km], peak, seg[np.arange(len(seg)), kp]
        denom = a - 2 * b + c
        shift = np.where(np.abs(denom) > 1e-9, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
        lag = lo + k + np.clip(shift, -1, 1)
        loud = energy_db > (energy_db.max() + SILENCE_DB)
        voiced = (peak > VOICING_THRESHOLD) & loud & (rms > 1e-4)
        pitch = np.where(voiced, SAMPLE_RATE / lag, 0.0)
        return np.stack([energy_db, pitch, zcr, voiced.astype(np.float32)], 1).astype(np.float32)

    def frames(self, x: np.ndarray) -> np.ndarray:
        """Per-frame feature sequence [T, 68] = [log-mel 64, energy dB, pitch Hz, zcr, voiced]."""
        return np.concatenate([self.log_mel(x), self.prosody(x)], 1)

    @staticmethod
    def pool(frames: np.ndarray) -> np.ndarray:
        """Utterance vector [2*66 + 4]: mean/std of log-mel, energy, zcr; voiced fraction; pitch stats."""
        energy, zcr = frames[:, N_MELS : N_MELS + 1], frames[:, N_MELS + 2 : N_MELS + 3]
        base = np.concatenate([frames[:, :N_MELS], energy, zcr], 1)
        voiced = frames[:, N_MELS + 3] > 0.5
        st = 12 * np.log2(np.maximum(frames[voiced, N_MELS + 1], 1.0) / 100.0) if voiced.any() else np.zeros(1)
        extra = np.array([voiced.mean(), st.mean(), st.std(), np.median(st)], dtype=np.float32)
        return np.concatenate([base.mean(0), base.std(0), extra]).astype(np.float32)

    def utterance_vector(self, src: str | Path | bytes) -> np.ndarray:
        return self.pool(self.frames(self.load(src)))
