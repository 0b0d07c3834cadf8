"""EmoDB (Berlin Emotional Speech) as tri-modal samples: audio frames + the spoken sentence, no video.

Data: `emodb/wav16k/*.wav` (535 clips, 16 kHz mono; upstream cut/padded every clip to 2.00 s) and
`emodb/labels_from_filename.csv` (speaker, gender, sentence id, German sentence, emotion).

- Labels: 7 emotions, `EMOTIONS` order (the CSV's names; fear is "anxiety_fear").
- Speaker-independent split (10 speakers; fixed, documented): test = speakers 03 (male) and
  08 (female), 107 clips; validation = speaker 09 (female), 43 clips; training = the other
  seven (10, 11, 12, 13, 14, 15, 16), 385 clips.
- `audio`: per-frame features of `models.audio_frontend` (log-mel + prosody), cached per
  frontend version under `<cache_dir>/trimodal/`.
- `text`: the German sentence through the frozen MiniLM ([CLS] + word-token states of the last
  layer). MiniLM is English-trained, and each of the 10 sentences is spoken in every emotion by
  design, so the text carries no label information: it is there to exercise the text path, and
  any model that relied on it could do no better than the class prior.
- `text` with `text_source="transcript"`: what Whisper heard in each clip instead (a JSONL of
  `voxpop asr bench`, one {"clip", "hyp"} per clip): the text view the stream gives an audio post.
  A clip Whisper heard nothing in has no text view (masked). `text_source="none"`: no text view at
  all (audio alone).
- `vision`: absent.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.datasets.trimodal import TriModalSplit, missing_view

NAME = "emodb"
EMOTIONS: tuple[str, ...] = ("anger", "boredom", "disgust", "anxiety_fear", "happiness", "sadness", "neutral")
TEST_SPEAKERS: tuple[str, ...] = ("03", "08")
VAL_SPEAKERS: tuple[str, ...] = ("09",)
SPLIT_RULE = (
    "speaker-independent: test speakers 03 (m) + 08 (f), validation speaker 09 (f), training the other 7 speakers"
)
FRONTEND_DESCRIPTION = "models.audio_frontend frames every 10 ms: log-mel 64 + energy dB, pitch Hz, zcr, voiced (68-d)"


@dataclass(frozen=True)
class EmoClip:
    path: Path
    speaker: str
    gender: str
    text_id: str
    text: str
    emotion: str

    @property
    def split(self) -> str:
        if self.speaker in TEST_SPEAKERS:
            return "test"
        return "val" if self.speaker in VAL_SPEAKERS else "train"


def load_clips(data_dir: Path) -> list[EmoClip]:
    """All clips in CSV order."""
    base = Path(data_dir) / NAME
    with (base / "labels_from_filename.csv").open(encoding="utf-8", newline="") as f:
        return [
            EmoClip(base / r["file"], r["speaker_id"], r["gender"], r["text_id"], r["text_de"], r["emotion"])
            for r in csv.DictReader(f)
        ]


def frontend_version() -> str:
    from models.audio_frontend import AUDIO_FRONTEND_VERSION

    return AUDIO_FRONTEND_VERSION


def clip_frames(path: Path, frontend: Any = None) -> np.ndarray:
    """Per-frame features [T, 68] (log-mel 64, energy dB, pitch Hz, zcr, voiced) of one WAV file."""
    from models.audio_frontend import AudioFrontend

    fe = frontend or AudioFrontend()
    return np.asarray(fe.frames(fe.load(path)), np.float32)


def audio_frames(clips: list[EmoClip], cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Padded frames [N, T, D] and lengths [N] for the clips (cached by frontend version + files)."""
    version = frontend_version()
    h = hashlib.sha256(version.encode())
    for c in clips:
        h.update(c.path.name.encode() + b"\0" + hashlib.sha256(c.path.read_bytes()).digest())
    path = Path(cache_dir) / "trimodal" / f"emodb-frames-{h.hexdigest()[:24]}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["frames"], z["lengths"]
    from tqdm.auto import tqdm

    from models.audio_frontend import AudioFrontend

    fe = AudioFrontend()
    seqs = [clip_frames(c.path, fe) for c in tqdm(clips, desc="emodb frames", unit="clip")]
    lengths = np.asarray([len(s) for s in seqs], np.int64)
    frames = np.zeros((len(seqs), int(lengths.max()), seqs[0].shape[1]), np.float32)
    for i, s in enumerate(seqs):
        frames[i, : len(s)] = s
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with tmp.open("wb") as f:
        np.savez(f, frames=frames, lengths=lengths)
    tmp.replace(path)
    return frames, lengths


def sentence_states(texts: list[str], device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """MiniLM last-layer states ([CLS] + tokens + [SEP]) [N, L, 384] and lengths, for few texts."""
    from models.text_encoder import TextEncoder

    st = TextEncoder(device=device).states(texts)
    mask = st.attention_mask.cpu().numpy().astype(bool)
    x = st.hidden_states[-1].float().cpu().numpy() * mask[..., None]
    return x.astype(np.float32), mask.sum(1).astype(np.int64)


TEXT_SOURCES = ("sentence", "transcript", "none")


def read_transcripts(path: Path) -> dict[str, str]:
    """clip id -> what was heard, from a `voxpop asr bench` run file (JSON lines with clip, hyp)."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            out[r["clip"]] = r["hyp"]
    return out


def _texts(clips: list[EmoClip], text_source: str, transcripts: Path | None) -> list[str]:
    if text_source == "sentence":
        return [c.text for c in clips]
    if text_source == "none":
        return ["" for _ in clips]
    if text_source != "transcript":
        raise ValueError(f"text_source must be one of {TEXT_SOURCES}, got {text_source!r}")
    if transcripts is None:
        raise ValueError("text_source=transcript needs --set transcripts=<voxpop asr bench run .jsonl>")
    heard = read_transcripts(transcripts)
    missing = [c.path.stem for c in clips if c.path.stem not in heard]
    if missing:
        raise ValueError(f"{transcripts} has no transcript for {len(missing)} clips (e.g. {missing[:3]})")
    return [heard[c.path.stem] for c in clips]


def load_emodb_trimodal(
    data_dir: Path, cache_dir: Path, device: str = "cpu", text_source: str = "sentence", transcripts: Path | None = None
) -> dict[str, TriModalSplit]:
    """{"train", "val", "test"} speaker-independent tri-modal splits."""
    clips = load_clips(data_dir)
    frames, flen = audio_frames(clips, cache_dir)
    texts = _texts(clips, text_source, transcripts)
    sentences = sorted({t for t in texts if t.strip()})
    n = len(clips)
    if sentences:
        s_states, s_len = sentence_states(sentences, device)
        which = np.asarray([sentences.index(t) if t.strip() else 0 for t in texts])
        text, tlen = s_states[which], s_len[which]
        tlen[[i for i, t in enumerate(texts) if not t.strip()]] = 0  # nothing heard: no text view
        text[tlen == 0] = 0.0
    else:
        text, tlen = missing_view(n, 384)
    vision, vlen = missing_view(n, 1)
    full = TriModalSplit(
        text=text,
        text_lengths=tlen,
        audio=frames,
        audio_lengths=flen,
        vision=vision,
        vision_lengths=vlen,
        labels=np.asarray([EMOTIONS.index(c.emotion) for c in clips], np.int64),
        ids=[c.path.stem for c in clips],
        raw_text=texts,
        groups=[c.speaker for c in clips],
        meta={"source": NAME, "frontend": frontend_version(), "text_source": text_source},
    )
    return {s: full.subset([i for i, c in enumerate(clips) if c.split == s]) for s in ("train", "val", "test")}
