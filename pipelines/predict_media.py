"""`voxpop predict FILE.wav|.mp3|.mp4|...`: one audio or video file scored as the stream would score it.

The same steps as the scorer: the packaged ffmpeg decodes it (a video: sampled frames + its audio
track; a file with no video stream is heard as audio), Whisper transcribes the audio, the
transcript (after any caption given) is the text view of the production head and of the
tri-modal heads, which also get the voice (audio frames) and, for a video, the frames; the view
that drove the score is named by `pipelines.views.dominant_view`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.registry import load_head
from pipelines.asr import Transcriber
from pipelines.av_decode import decode_audio, decode_video, probe
from pipelines.av_heads import AVInput, heads_for, load_av_heads
from pipelines.scoring import InferenceEngine, sentiment_score
from pipelines.views import dominant_view

TABLE_SUFFIXES = {".csv", ".jsonl", ".ndjson"}


def is_media(path: Path) -> bool:
    return path.suffix.lower() not in TABLE_SUFFIXES


def predict_media(
    path: Path,
    transcriber: Transcriber,
    model: str = "production",
    av_models: tuple[str, ...] = (),
    checkpoints_dir: Path | None = None,
    caption: str = "",
    device: str = "cpu",
    max_seconds: float = 60.0,
    video_frames: int = 8,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    data = Path(path).read_bytes()
    t0 = time.perf_counter()
    info = probe(Path(path), timeout_s)
    frames, kind = [], "audio"
    if info.has_video:
        video = decode_video(data, video_frames, timeout_s, max_seconds)
        frames, audio, kind = video.frames, video.audio, "video"
    else:
        audio = decode_audio(data, timeout_s, max_seconds)
    t_dec = time.perf_counter()
    tr = transcriber.transcribe(audio, max_seconds=max_seconds) if audio is not None else None
    said = tr.text if tr is not None and tr.has_text else ""
    text = f"{caption}\n{said}" if caption.strip() and said else (said or caption)

    head = load_head(model, device=device)
    engine = InferenceEngine(head, device=device)
    enc = engine.encode([text], [None])
    dims = {v: head.feature_dims[v] for v in head.views}
    out = engine.predict(enc, {v: torch.zeros(1, d) for v, d in dims.items()}, {v: torch.zeros(1) for v in dims})
    p = out.probs[0]
    weights = {v: round(float(w[0]), 4) for v, w in out.modality_weights.items()}
    av_rows: list[dict[str, Any]] = []
    if av_models:
        heads = load_av_heads(list(av_models), checkpoints_dir, device)
        x = AVInput(text=text, audio=audio, frames=frames)
        for h in heads_for(heads, x):
            (pred,) = h.predict([x])
            av_rows.append(
                {
                    "model": h.model_name,
                    "label": pred.label,
                    "emotion": pred.emotion,
                    "score": round(pred.score, 4),
                    "modality_weights": {k: round(v, 4) for k, v in pred.modality_weights.items()},
                }
            )
    return {
        "file": str(path),
        "kind": kind,
        "transcript": tr.text if tr is not None else None,
        "language": tr.language if tr is not None else None,
        "language_probability": tr.language_probability if tr is not None else None,
        "transcript_status": tr.status if tr is not None else "no audio track",
        "label": head.labels[int(p.argmax())],
        "score": round(float(sentiment_score(head.labels, out.probs)[0]), 4),
        "dominant_view": dominant_view(weights, [r["modality_weights"] for r in av_rows]),
        "model": f"{head.name}@{head.version}",
        "probabilities": {lab: round(float(p[j]), 4) for j, lab in enumerate(head.labels)},
        "modality_weights": weights,
        "trimodal": av_rows,
        "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in (tr.segments if tr else [])],
        "frames": len(frames),
        "audio_s": round(float(np.asarray(audio).size) / 16000, 2) if audio is not None else 0.0,
        "seconds": {
            "decode": round(t_dec - t0, 3),
            "asr": tr.seconds if tr else 0.0,
            "total": round(time.perf_counter() - t0, 3),
        },
    }
