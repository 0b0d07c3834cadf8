"""`voxpop asr bench`: word error rate of Whisper on EmoDB's real German speech, and its speed here.

Each (model size, condition) transcribes all 535 EmoDB clips and appends one JSON line per clip to
`<out>/runs/<size>-<condition>.jsonl`, so an interrupted run resumes where it stopped. Conditions:
"forced-de" (language given), "detected" (Whisper identifies it), both with voice-activity
trimming as the scorer runs it, and "forced-de-novad" (no trimming). The reference of each clip
is its sentence from `labels_from_filename.csv`; both sides go through `pipelines.wer.normalise`.

Speed: transcription seconds per audio second, on the 1-s clips themselves and on longer real
speech made by concatenating consecutive EmoDB clips (10 s, 30 s, 60 s), one Whisper thread.

A size whose wheels cannot be assembled or loaded is recorded with the exact reason.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.asr import ASRUnavailable, Transcriber, assemble
from pipelines.wer import normalise, wer

CONDITIONS: dict[str, dict[str, Any]] = {
    "forced-de": {"language": "de", "vad": True},
    "detected": {"language": None, "vad": True},
    "forced-de-novad": {"language": "de", "vad": False},
}
SPEED_SECONDS = (10, 30, 60)


def cpu_name() -> str:
    """lscpu's model name (what the numbers were measured on)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def _read_wav(path: Path) -> np.ndarray:
    from models.audio_frontend import read_wav, resample

    return np.asarray(resample(*read_wav(path)), np.float32)


def _done(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            out[r["clip"]] = r
    return out


def run_condition(tr: Transcriber, clips: list, cond: str, path: Path, log: Callable[[str], None]) -> list[dict]:
    """Transcribe every clip not yet in `path` (resumable), returning all rows."""
    done = _done(path)
    opts = CONDITIONS[cond]
    tr.vad = opts["vad"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for i, c in enumerate(clips):
            if c.path.stem in done:
                continue
            t = tr.transcribe(_read_wav(c.path), language=opts["language"])
            row = {
                "clip": c.path.stem,
                "speaker": c.speaker,
                "emotion": c.emotion,
                "ref": c.text,
                "hyp": t.text,
                "language": t.language,
                "language_probability": t.language_probability,
                "audio_s": t.audio_s,
                "speech_s": t.speech_s,
                "seconds": t.seconds,
                "status": t.status,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            done[row["clip"]] = row
            if (i + 1) % 25 == 0:
                log(f"{tr.size} {cond}: {i + 1}/{len(clips)}")
    return [done[c.path.stem] for c in clips if c.path.stem in done]


def summarise(rows: list[dict]) -> dict[str, Any]:
    a = wer([(r["ref"], r["hyp"]) for r in rows])
    audio = sum(r["audio_s"] for r in rows)
    secs = sum(r["seconds"] for r in rows)
    langs: dict[str, int] = {}
    for r in rows:
        langs[r["language"]] = langs.get(r["language"], 0) + 1
    # words the model did say that are in the reference at their aligned place: precision of what it heard
    return {
        "clips": len(rows),
        "ref_words": a.ref_words,
        "hyp_words": a.hyp_words,
        "wer": a.errors / max(a.ref_words, 1),
        "substitutions": a.substitutions,
        "deletions": a.deletions,
        "insertions": a.insertions,
        "hit_precision": a.hits / max(a.hyp_words, 1),
        "empty": sum(1 for r in rows if not normalise(r["hyp"])),
        "language_de": langs.get("de", 0) / max(len(rows), 1),
        "languages": dict(sorted(langs.items(), key=lambda kv: -kv[1])[:6]),
        "audio_s": round(audio, 2),
        "seconds": round(secs, 2),
        "seconds_per_audio_s": secs / max(audio, 1e-9),
        "seconds_per_clip": secs / max(len(rows), 1),
    }


def speed(tr: Transcriber, clips: list, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Seconds per audio second on longer real speech: consecutive EmoDB clips joined end to end."""
    tr.vad = True
    out = []
    for seconds in SPEED_SECONDS:
        wave = np.concatenate([_read_wav(c.path) for c in clips[:seconds]])  # clips are 1.00 s each
        t = tr.transcribe(wave, language="de")
        out.append(
            {
                "audio_s": t.audio_s,
                "speech_s": t.speech_s,
                "seconds": t.seconds,
                "seconds_per_audio_s": t.seconds / t.audio_s,
                "words": len(normalise(t.text)),
            }
        )
        log(f"{tr.size} speed {seconds}s: {t.seconds:.1f}s")
    return out


def run(
    data_dir: Path,
    out_dir: Path,
    cache_dir: Path,
    sizes: tuple[str, ...] = ("base", "small"),
    conditions: tuple[str, ...] = ("forced-de", "detected"),
    limit: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every size x condition (resuming), write `<out>/asr-results.json`, return it."""
    from pipelines.datasets import emodb

    clips = emodb.load_clips(data_dir)[:limit]
    result: dict[str, Any] = {
        "machine": cpu_name(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "clips": len(clips),
        "threads": 1,
        "beam_size": 1,
        "sizes": {},
    }
    for size in sizes:
        entry: dict[str, Any] = {}
        try:
            t0 = time.perf_counter()
            model_dir = assemble(size, cache_dir)
            tr = Transcriber(size, model_dir=model_dir, threads=1)
            entry["load_seconds"] = round(time.perf_counter() - t0, 2)
            entry["compute_type"] = tr.compute_type
        except ASRUnavailable as e:
            entry["error"] = str(e)
            result["sizes"][size] = entry
            log(f"{size}: {e}")
            continue
        entry["conditions"] = {}
        for cond in conditions:
            rows = run_condition(tr, clips, cond, out_dir / "runs" / f"{size}-{cond}.jsonl", log)
            entry["conditions"][cond] = summarise(rows)
            log(f"{size} {cond}: WER {entry['conditions'][cond]['wer']:.3f}")
        entry["speed"] = speed(tr, clips, log)
        result["sizes"][size] = entry
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "asr-results.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return result
