"""Decode audio and video posts with the ffmpeg binary packaged in the `imageio-ffmpeg` wheel.

Why a packaged binary run as a subprocess: no system ffmpeg is needed on any machine (the wheel
carries a static build), every container format ffmpeg knows works (wav, mp3, ogg, m4a, mp4,
webm, ...), and a hostile or broken file can only hurt a child process that is killed after
`timeout_s`, never the scorer.

- Audio: the first audio stream, down-mixed to mono and resampled to 16 kHz signed 16-bit PCM,
  then scaled by 1/32768 exactly like `models.audio_frontend.read_wav` reads the training WAVs,
  so an EmoDB clip decodes to the very samples the EmoDB heads were trained on.
- Video: `n_frames` frames sampled uniformly over the duration (times (i + 0.5) * duration / n,
  i.e. the centre of n equal segments, so a short clip never yields n copies of its first frame),
  each written as a lossless PNG at its native size so the image encoder's own preprocessing
  (resize short side 256, centre-crop 224) runs on it unchanged; plus the audio track as above
  (None when the video has none).

Every failure (no such stream, undecodable bytes, a timeout, an empty result) raises
`DecodeError` with a one-line reason; the scorer turns it into a DLQ record.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE_RATE = 16000
DEFAULT_FRAMES = 8
_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")


class DecodeError(ValueError):
    """Why a media file could not be decoded (one line, safe to store with the post)."""


@dataclass
class DecodedVideo:
    frames: list[Image.Image]  # RGB, native size, in time order
    audio: np.ndarray | None  # float32 mono 16 kHz, or None without an audio track
    duration_s: float
    times_s: list[float]  # when each frame was taken


def ffmpeg_exe() -> str:
    """Path of the static ffmpeg inside the imageio-ffmpeg wheel."""
    try:
        import imageio_ffmpeg
    except ImportError as e:  # the dependency is declared in pyproject; say so if it is missing
        raise DecodeError("imageio-ffmpeg is not installed: pip install 'imageio-ffmpeg>=0.5,<1'") from e
    return imageio_ffmpeg.get_ffmpeg_exe()


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", *args], capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise DecodeError(f"ffmpeg took longer than {timeout_s:g}s") from None


def _reason(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


@dataclass
class Probe:
    duration_s: float | None
    has_audio: bool
    has_video: bool


def probe(path: Path, timeout_s: float) -> Probe:
    """Streams and duration from `ffmpeg -i` (it exits non-zero without an output; that is expected)."""
    err = _run(["-i", str(path)], timeout_s).stderr.decode("utf-8", "replace")
    if "Invalid data found" in err or "Stream #" not in err:
        raise DecodeError(f"not a media file ffmpeg can read: {_reason(err.encode())}")
    m = _DURATION.search(err)
    duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else None
    streams = [ln for ln in err.splitlines() if "Stream #" in ln]
    # cover art in an mp3 is a "Video" stream too: it is attached_pic, not a moving picture
    video = any(": Video:" in ln and "attached pic" not in ln for ln in streams)
    return Probe(duration, any(": Audio:" in ln for ln in streams), video)


def _decode_audio_file(path: Path, timeout_s: float, max_seconds: float) -> np.ndarray:
    out = _run(
        [
            "-t",
            f"{max_seconds:g}",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-vn",
            "-ac",
            "1",
            "-ar",
            str(SAMPLE_RATE),
            "-f",
            "s16le",
            "-acodec",
            "pcm_s16le",
            "pipe:1",
        ],
        timeout_s,
    )
    if out.returncode != 0:
        raise DecodeError(f"undecodable audio: {_reason(out.stderr)}")
    x = np.frombuffer(out.stdout, "<i2").astype(np.float32) / 32768.0
    if x.size < SAMPLE_RATE // 10:
        raise DecodeError(f"audio too short ({x.size} samples at {SAMPLE_RATE} Hz, need 0.1 s)")
    return x


def _with_file(data: bytes, suffix: str = ".bin"):
    tmp = tempfile.TemporaryDirectory(prefix="voxpop-media-")
    path = Path(tmp.name) / f"in{suffix}"
    path.write_bytes(data)
    return tmp, path


def decode_audio(data: bytes, timeout_s: float = 20.0, max_seconds: float = 60.0) -> np.ndarray:
    """Any audio (or the audio track of a video) -> float32 mono 16 kHz in [-1, 1], at most max_seconds."""
    tmp, path = _with_file(data)
    with tmp:
        if not probe(path, timeout_s).has_audio:
            raise DecodeError("no audio stream")
        return _decode_audio_file(path, timeout_s, max_seconds)


def sample_times(duration_s: float, n: int) -> list[float]:
    """Centres of n equal segments of [0, duration)."""
    return [(i + 0.5) * duration_s / n for i in range(n)]


def decode_video(
    data: bytes, n_frames: int = DEFAULT_FRAMES, timeout_s: float = 20.0, max_seconds: float = 60.0
) -> DecodedVideo:
    """A video -> n_frames uniformly sampled RGB frames (fewer if the clip has fewer) + its audio track."""
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    tmp, path = _with_file(data)
    with tmp:
        info = probe(path, timeout_s)
        if not info.has_video:
            raise DecodeError("no video stream")
        duration = min(info.duration_s or max_seconds, max_seconds)
        times = sample_times(duration, n_frames)
        # one pass: the k-th frame kept is the first one at or after the k-th segment centre
        step = duration / n_frames
        out_dir = Path(tmp.name) / "frames"
        out_dir.mkdir()
        res = _run(
            [
                "-t",
                f"{duration:.3f}",
                "-i",
                str(path),
                "-map",
                "0:v:0",
                "-an",
                "-vf",
                f"select=gte(t\\,{step / 2:.6f}+selected_n*{step:.6f})",
                "-fps_mode",
                "vfr",
                "-frames:v",
                str(n_frames),
                "-f",
                "image2",
                str(out_dir / "f%04d.png"),
            ],
            timeout_s,
        )
        if res.returncode != 0:
            raise DecodeError(f"undecodable video: {_reason(res.stderr)}")
        frames = []
        for p in sorted(out_dir.glob("f*.png")):
            with Image.open(p) as im:
                frames.append(im.convert("RGB"))
        if not frames:
            raise DecodeError("video has no decodable frames")
        audio = _decode_audio_file(path, timeout_s, max_seconds) if info.has_audio else None
        return DecodedVideo(frames=frames, audio=audio, duration_s=duration, times_s=times[: len(frames)])


def encode_video(
    frames: list[Path],
    audio_wav: Path | None,
    out: Path,
    seconds_per_frame: float = 0.5,
    size: int = 256,
    timeout_s: float = 60.0,
) -> Path:
    """Build an H.264 mp4 from still images (+ a WAV as its audio track): test fixtures and demos.

    Every image is scaled to cover `size` x `size` and centre-cropped (one frame size for the codec).
    """
    if not frames:
        raise ValueError("need at least one frame")
    lst = out.with_suffix(".txt")
    # concat demuxer: each image shown for seconds_per_frame; the last repeated so its duration counts
    body = "".join(f"file '{Path(f).resolve()}'\nduration {seconds_per_frame}\n" for f in frames)
    lst.write_text(body + f"file '{Path(frames[-1]).resolve()}'\n", encoding="utf-8")
    args = ["-y", "-f", "concat", "-safe", "0", "-i", str(lst)]
    if audio_wav is not None:
        args += ["-i", str(audio_wav), "-c:a", "aac", "-b:a", "96k"]
    fit = f"scale={size}:{size}:force_original_aspect_ratio=increase,crop={size}:{size},setsar=1"
    args += ["-t", f"{len(frames) * seconds_per_frame:.3f}"]  # the repeated last entry only closes the list
    args += [
        "-vf",
        f"{fit},format=yuv420p",
        "-r",
        "25",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-movflags",
        "+faststart",
        str(out),
    ]
    res = _run(args, timeout_s)
    lst.unlink(missing_ok=True)
    if res.returncode != 0:
        raise DecodeError(f"could not build {out.name}: {_reason(res.stderr)}")
    return out
