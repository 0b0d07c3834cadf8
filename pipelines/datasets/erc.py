"""Emotion recognition in conversation (ERC): IEMOCAP and MELD as dialogues, for SMOM.

Three sources, one shape (`ErcDataset` of `Dialogue`s in time order):
- `load_cosmic_iemocap` / `load_cosmic_meld`: the COSMIC text pickles under `<data>/erc/`
  (speakers, labels, sentences and the standard train/valid/test dialogue ids). IEMOCAP
  speakers become the 10 actors (session + M/F); COSMIC MELD only has a per-dialogue 9-dim
  one-hot, so its speakers are local to one dialogue.
- `load_meld_csv`: the MELD CSVs under `<data>/meld/`, whose speaker NAMES recur across
  dialogues (Joey, Rachel, ...): the data the per-user (eta) term of SMOM needs.
- `load_dialoguernn_features`: the DialogueRNN/MM-DFN `*_features_raw.pkl` format (videoIDs,
  videoSpeakers, videoLabels, videoText, videoAudio, videoVisual, videoSentence, trainVid,
  testVid), which carries pre-extracted text/audio/visual vectors. It has no dev split, so 10% of
  the training dialogues are held out (seeded) for validation.

Dialogues are listed in time order (train, then valid, then test; within a split by dialogue
id), which is the order the causal per-speaker running means are built in.
"""

from __future__ import annotations

import csv
import pickle
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IEMOCAP_LABELS: tuple[str, ...] = ("hap", "sad", "neu", "ang", "exc", "fru")
MELD_EMOTIONS: tuple[str, ...] = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
MELD_SENTIMENTS: tuple[str, ...] = ("neutral", "positive", "negative")
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class Dialogue:
    """One conversation: parallel per-utterance lists, plus optional pre-extracted view features."""

    id: str
    split: str  # train | val | test
    texts: list[str]
    speakers: list[str]  # speaker ids, global where the source has them
    labels: list[int]
    features: dict[str, np.ndarray] = field(default_factory=dict)  # view -> [N, dim]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ErcDataset:
    name: str
    label_names: tuple[str, ...]
    dialogues: list[Dialogue]  # time order

    def split(self, split: str) -> list[Dialogue]:
        return [d for d in self.dialogues if d.split == split]

    def counts(self) -> dict[str, tuple[int, int]]:
        """split -> (dialogues, utterances)."""
        return {s: (len(ds), sum(len(d) for d in ds)) for s in SPLITS if (ds := self.split(s))}


def _load_pickle(path: Path) -> Any:
    with Path(path).open("rb") as f:
        return pickle.load(f, encoding="latin1")


def fix_cp1252(text: str) -> str:
    """COSMIC MELD sentences are cp1252 bytes decoded as latin-1 (e.g. '\\x92' for a right quote)."""
    if any("\x80" <= ch <= "\x9f" for ch in text):
        try:
            return text.encode("latin-1").decode("cp1252")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return text
    return text


def _iemocap_actor(dialogue_id: str, speaker: str) -> str:
    """IEMOCAP has 10 actors: one M and one F per session; 'Ses01F_impro01' + 'M' -> 'Ses01M'."""
    m = re.match(r"(Ses\d\d)", dialogue_id)
    return f"{m.group(1)}{speaker}" if m and speaker in ("M", "F") else f"{dialogue_id}:{speaker}"


def _speaker_id(dialogue_id: str, spk: Any) -> str:
    """Speaker as a string: a name as is, a one-hot/score vector as a per-dialogue party index."""
    if isinstance(spk, str):
        return _iemocap_actor(dialogue_id, spk)
    arr = np.asarray(spk).reshape(-1)
    return f"{dialogue_id}:p{int(arr.argmax())}"


def _ordered(dialogues: list[Dialogue]) -> list[Dialogue]:
    rank = {s: i for i, s in enumerate(SPLITS)}

    def key(d: Dialogue) -> tuple[int, int, str]:
        tail = d.id.rsplit(":", 1)[-1]
        return rank[d.split], int(tail) if tail.isdigit() else 0, d.id

    return sorted(dialogues, key=key)


def load_cosmic_iemocap(data_dir: Path) -> ErcDataset:
    """COSMIC IEMOCAP: [speakers, labels, sentences, train ids, test ids, valid ids] (108/31/12)."""
    speakers, labels, sentences, train, test, valid = _load_pickle(Path(data_dir) / "erc/iemocap/iemocap.pkl")
    split_of = {**{v: "train" for v in train}, **{v: "val" for v in valid}, **{v: "test" for v in test}}
    dialogues = [
        Dialogue(
            id=str(vid),
            split=split_of[vid],
            texts=[str(t) for t in sentences[vid]],
            speakers=[_iemocap_actor(vid, s) for s in speakers[vid]],
            labels=[int(x) for x in labels[vid]],
        )
        for vid in sorted(split_of)
    ]
    return ErcDataset("iemocap", IEMOCAP_LABELS, _ordered(dialogues))


def load_cosmic_meld(data_dir: Path, label: str = "emotion") -> ErcDataset:
    """COSMIC MELD: [speakers (9-dim one-hot), emotions, sentiments, sentences, train, test, valid]."""
    speakers, emotions, sentiments, sentences, train, test, valid = _load_pickle(Path(data_dir) / "erc/meld/meld.pkl")
    labels = emotions if label == "emotion" else sentiments
    split_of = {**{v: "train" for v in train}, **{v: "val" for v in valid}, **{v: "test" for v in test}}
    dialogues = [
        Dialogue(
            id=f"{split_of[vid]}:{vid}",
            split=split_of[vid],
            texts=[fix_cp1252(str(t)) for t in sentences[vid]],
            speakers=[_speaker_id(f"meld{vid}", s) for s in speakers[vid]],
            labels=[int(x) for x in labels[vid]],
        )
        for vid in sorted(split_of)
    ]
    names = MELD_EMOTIONS if label == "emotion" else MELD_SENTIMENTS
    return ErcDataset(f"meld-{label}", names, _ordered(dialogues))


def _fix_csv_text(text: str) -> str:
    """Undo the UTF-8-read-as-cp1252 mojibake a few MELD CSV rows carry ('â€™' for a right quote)."""
    if "\u00e2" in text or "\u00c3" in text:
        try:
            return text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return text
    return text


def load_meld_csv(data_dir: Path, label: str = "emotion") -> ErcDataset:
    """MELD from the CSVs, with named speakers ('meld:Joey') shared across dialogues and splits."""
    if label not in ("emotion", "sentiment"):
        raise ValueError(f"label must be 'emotion' or 'sentiment', not {label!r}")
    names = MELD_EMOTIONS if label == "emotion" else MELD_SENTIMENTS
    column = "Emotion" if label == "emotion" else "Sentiment"
    base = Path(data_dir) / "meld"
    dialogues: list[Dialogue] = []
    for fname, split in (("train_sent_emo.csv", "train"), ("dev_sent_emo.csv", "val"), ("test_sent_emo.csv", "test")):
        rows: dict[int, list[tuple[int, dict[str, str]]]] = {}
        with (base / fname).open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                rows.setdefault(int(row["Dialogue_ID"]), []).append((int(row["Utterance_ID"]), row))
        for did in sorted(rows):
            utts = [r for _, r in sorted(rows[did], key=lambda x: x[0])]
            dialogues.append(
                Dialogue(
                    id=f"{split}:{did}",
                    split=split,
                    texts=[_fix_csv_text(r["Utterance"]) for r in utts],
                    speakers=[f"meld:{r['Speaker'].strip()}" for r in utts],
                    labels=[names.index(r[column].strip().lower()) for r in utts],
                )
            )
    return ErcDataset(f"meld-{label}", names, _ordered(dialogues))


DIALOGUERNN_FIELDS: tuple[str, ...] = (
    "videoIDs",
    "videoSpeakers",
    "videoLabels",
    "videoText",
    "videoAudio",
    "videoVisual",
    "videoSentence",
    "trainVid",
    "testVid",
)


def holdout(ids: Sequence[str], fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Seeded split of training dialogue ids into (train, val); val gets round(fraction * n), at least 1."""
    ids = sorted(ids, key=str)
    n_val = max(1, round(fraction * len(ids))) if len(ids) > 1 else 0
    shuffled = ids[:]
    random.Random(seed).shuffle(shuffled)
    val = set(shuffled[:n_val])
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def load_dialoguernn_features(
    path: Path,
    name: str = "iemocap",
    label_names: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> ErcDataset:
    """A DialogueRNN-style `*_features_raw.pkl`: a 9-tuple (trailing extras ignored) or a dict.

    Views: text/audio/visual arrays per dialogue ([N, dim] each). trainVid has no dev split, so
    `val_fraction` of it is held out with `seed`.
    """
    obj = _load_pickle(Path(path))
    if isinstance(obj, dict):
        parts = {k: obj[k] for k in DIALOGUERNN_FIELDS}
    else:
        if len(obj) < len(DIALOGUERNN_FIELDS):
            raise ValueError(f"{path}: expected at least {len(DIALOGUERNN_FIELDS)} items, got {len(obj)}")
        parts = dict(zip(DIALOGUERNN_FIELDS, obj[: len(DIALOGUERNN_FIELDS)], strict=True))
    train_ids, val_ids = holdout(list(parts["trainVid"]), val_fraction, seed)
    split_of = {
        **{v: "train" for v in train_ids},
        **{v: "val" for v in val_ids},
        **{v: "test" for v in parts["testVid"]},
    }
    dialogues = []
    n_cls = 0
    for vid in sorted(split_of, key=str):
        labels = [int(x) for x in parts["videoLabels"][vid]]
        n_cls = max([n_cls, *(x + 1 for x in labels)])
        feats = {
            view: np.asarray(parts[key][vid], dtype=np.float32)
            for view, key in (("text", "videoText"), ("audio", "videoAudio"), ("visual", "videoVisual"))
        }
        dialogues.append(
            Dialogue(
                id=str(vid),
                split=split_of[vid],
                texts=[fix_cp1252(str(t)) for t in parts["videoSentence"][vid]],
                speakers=[_speaker_id(str(vid), s) for s in parts["videoSpeakers"][vid]],
                labels=labels,
                features=feats,
            )
        )
    names = tuple(label_names) if label_names is not None else tuple(str(i) for i in range(n_cls))
    return ErcDataset(name, names, _ordered(dialogues))


def load(name: str, data_dir: Path) -> ErcDataset:
    """By recipe dataset name: meld-emotion / meld-sentiment (CSV, named speakers), iemocap (COSMIC)."""
    if name in ("meld-emotion", "meld-sentiment"):
        return load_meld_csv(data_dir, name.split("-", 1)[1])
    if name == "iemocap":
        return load_cosmic_iemocap(data_dir)
    raise KeyError(f"unknown ERC data set {name!r}; known: meld-emotion, meld-sentiment, iemocap")
