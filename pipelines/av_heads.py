"""Tri-modal heads in the stream: which checkpoint can score which post, and with what features.

A trained tri-modal checkpoint (`models/checkpoints/<model>-<dataset>/`, see
`pipelines.training.trimodal`) can only be served if the stream can rebuild *exactly* the inputs
it was trained on. That depends on the data set it was trained on, so servable data sets are
registered here (`STREAM_FEATURES`), each with the same feature code its training loader used:

- "emodb" (views text + audio): audio = `models.audio_frontend` frames (log-mel 64 + prosody,
  68-d every 10 ms) of the 16 kHz mono waveform, z-scored with the training split's statistics
  (`standardizer.json` next to the weights); text = MiniLM last-layer states of [CLS] + tokens +
  [SEP] (max 128 tokens), as `pipelines.datasets.emodb.sentence_states` computes them.
- "mvsa-single" (views text + vision): vision = EfficientNet-Lite0's 7x7x1280 feature map per
  image, 49 positions in raster order, float16-rounded like the training cache; a video's N sampled
  frames are concatenated in time order (N x 49 positions: every position is still one image
  region as in training, and AMSGFN's pooling alignment accepts any length); text = [CLS] + word
  tokens (no [SEP], max 64 tokens) of the last layer, float16-rounded, as
  `pipelines.datasets.mvsa_trimodal` builds them.

Not servable: "mosi-audio" (73-d openSMILE vectors we cannot compute from raw audio) and "mmsa"
(COVAREP/FACET/BERT features): `load_av_head` refuses them with that reason.

A head *covers* a post when the post brings one of the head's non-text views: audio (an audio
post, or a video's audio track) for "emodb" heads, frames (a video) for "mvsa-single" heads.

Output per post: the class distribution, a sentiment label and score (emotion heads map their
classes to valence: happiness positive; anger, boredom, disgust, fear, sadness negative; neutral
neutral), the top emotion, and per-modality weights: AMSGFN's selection scores s (TeCaFN reports
uniform weights over the present views), or, for heads with no such output (INPNRLN-MD,
GHRNN-CMA, late fusion), an even split over the views the post brought. The vision view is
reported as "video" (it is the video's frames).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.registry import DEFAULT_CHECKPOINTS_DIR
from models.trimodal import VIEWS, TriModalBatch
from pipelines.datasets.trimodal import Standardizer, TriModalSplit, collate_trimodal, load_standardizers

AV_PREFIX = "av:"  # predictions of tri-modal heads are stored as model_name "av:<checkpoint>"
SENTIMENT = ("negative", "neutral", "positive")
EMOTION_VALENCE: dict[str, str] = {
    "happiness": "positive",
    "joy": "positive",
    "excited": "positive",
    "anger": "negative",
    "boredom": "negative",
    "disgust": "negative",
    "anxiety_fear": "negative",
    "fear": "negative",
    "sadness": "negative",
    "frustrated": "negative",
    "neutral": "neutral",
    "surprise": "neutral",
}
VIEW_NAMES = {"text": "text", "audio": "audio", "vision": "video"}  # what the view is, in a post's terms


@dataclass
class AVInput:
    """One post's material for a tri-modal head (decoded media, nothing model-specific)."""

    text: str
    audio: np.ndarray | None = None  # float32 mono 16 kHz
    frames: list[Image.Image] = field(default_factory=list)  # a video's sampled frames
    audio_features: dict[str, np.ndarray] = field(default_factory=dict)  # feature key -> [T, D], precomputed


@dataclass
class AVPrediction:
    probabilities: dict[str, float]
    label: str
    score: float
    emotion: str | None
    modality_weights: dict[str, float]


@dataclass(frozen=True)
class StreamFeatures:
    """How to turn posts into the inputs of heads trained on one data set."""

    views: frozenset[str]  # non-text views the data set has ("audio", "vision")
    text_max_tokens: int
    text_keep_sep: bool  # emodb: [CLS] tokens [SEP]; mvsa: [CLS] + words only
    fp16: bool  # the training cache stored float16: round the same way
    audio_key: str | None = None
    audio: Callable[[np.ndarray], np.ndarray] | None = None  # waveform -> [T, D]


_FRONTEND: list = []


def _emodb_audio(x: np.ndarray) -> np.ndarray:
    """`models.audio_frontend` frames, one frontend per process (filterbank and windows built once)."""
    if not _FRONTEND:
        from models.audio_frontend import AudioFrontend

        _FRONTEND.append(AudioFrontend())
    return np.asarray(_FRONTEND[0].frames(x), np.float32)


STREAM_FEATURES: dict[str, StreamFeatures] = {
    "emodb": StreamFeatures(
        frozenset({"audio"}),
        text_max_tokens=128,
        text_keep_sep=True,
        fp16=False,
        audio_key="frontend-frames",
        audio=_emodb_audio,
    ),
    "mvsa-single": StreamFeatures(frozenset({"vision"}), text_max_tokens=64, text_keep_sep=False, fp16=True),
}
UNSERVABLE = {
    "mosi-audio": "trained on 73-d openSMILE vectors, which the stream cannot compute from raw audio",
    "mmsa": "trained on MMSA's precomputed BERT/COVAREP/FACET features, not computable from a post",
}


def _round(x: np.ndarray, fp16: bool) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32) if fp16 else x.astype(np.float32)


class AVHead:
    """A trained tri-modal checkpoint wrapped for the stream: covers(), audio_features(), predict()."""

    def __init__(
        self, name: str, checkpoints_dir: Path | None = None, device: str = "cpu", text_encoder=None, image_encoder=None
    ) -> None:
        from pipelines.training.trimodal import load_trimodal

        path = Path(checkpoints_dir or DEFAULT_CHECKPOINTS_DIR) / name
        if not (path / "card.json").exists():
            raise FileNotFoundError(f"no tri-modal checkpoint at {path}")
        self.model, self.card = load_trimodal(path, device)
        dataset = self.card["dataset"]
        if dataset in UNSERVABLE:
            raise ValueError(f"{name} cannot run in the stream: {UNSERVABLE[dataset]}")
        if dataset not in STREAM_FEATURES:
            raise ValueError(f"{name}: no stream feature recipe for data set {dataset!r}")
        if self.card.get("task") != "classification":
            raise ValueError(f"{name}: only classification heads can be served (got {self.card.get('task')})")
        self.name, self.features, self.device = name, STREAM_FEATURES[dataset], torch.device(device)
        self.labels: tuple[str, ...] = tuple(self.card["labels"])
        self.stats: dict[str, Standardizer] = load_standardizers(path)
        missing = [v for v in self.card["data"].get("standardized", []) if v not in self.stats and self._dim(v) > 1]
        if missing:
            raise ValueError(
                f"{name} was trained on z-scored {missing} but {path}/standardizer.json is missing "
                f"(write it with pipelines.training.trimodal.refit_standardizers)"
            )
        digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()[:10]
        self.model_name = AV_PREFIX + name
        self.version = f"{self.card['version']}+{digest}"
        self._text, self._image = text_encoder, image_encoder

    def _dim(self, view: str) -> int:
        return int(self.card["dims"][view])

    # ---- routing ---------------------------------------------------------------------------
    def covers(self, has_audio: bool, has_frames: bool) -> bool:
        v = self.features.views
        return ("audio" in v and has_audio) or ("vision" in v and has_frames)

    @property
    def needs_frames(self) -> bool:
        return "vision" in self.features.views

    # ---- features --------------------------------------------------------------------------
    def audio_features(self, wave: np.ndarray) -> np.ndarray:
        """[T, D] audio frames (CPU, numpy only: safe to run on the polling thread)."""
        if self.features.audio is None:
            raise ValueError(f"{self.name} has no audio view")
        return self.features.audio(wave)

    def _text_encoder(self):
        if self._text is None:
            from models.text_encoder import TextEncoder

            self._text = TextEncoder(device=str(self.device))
        return self._text

    def _image_encoder(self):
        if self._image is None:
            from models.image_encoder import ImageEncoder

            self._image = ImageEncoder(device=str(self.device)).eval()
        return self._image

    @torch.inference_mode()
    def _text_states(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per post [L, 384] last-layer states as the training loader built them ([0, 384] for no text)."""
        out = [np.zeros((0, self._dim("text")), np.float32) for _ in texts]
        idx = [i for i, t in enumerate(texts) if t and t.strip()]
        if not idx:
            return out
        enc = self._text_encoder()
        batch = enc.tokenizer(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=self.features.text_max_tokens,
            return_tensors="pt",
        )
        batch = {k: v.to(enc.device) for k, v in batch.items()}
        last = enc.model(**batch, output_hidden_states=True).hidden_states[-1].float().cpu().numpy()
        lens = batch["attention_mask"].sum(1).tolist()
        for b, i in enumerate(idx):
            n = int(lens[b])
            seq = (
                last[b, :n]
                if self.features.text_keep_sep
                else np.concatenate([last[b, :1], last[b, 1 : max(n - 1, 2)]])
            )
            out[i] = _round(seq, self.features.fp16)
        return out

    @torch.inference_mode()
    def _frame_regions(self, frames: list[Image.Image]) -> np.ndarray:
        enc = self._image_encoder()
        x = torch.stack([enc.preprocess(f) for f in frames])
        fmap = enc.feature_map(x).to(torch.float16).float().cpu()  # [N, 1280, 7, 7] as cached
        return fmap.flatten(2).transpose(1, 2).reshape(-1, fmap.shape[1]).numpy()  # [N*49, 1280]

    def batch(self, inputs: Sequence[AVInput]) -> TriModalBatch:
        """The posts as one TriModalBatch, collated by the training code itself."""
        n = len(inputs)
        texts = self._text_states([x.text for x in inputs])
        seqs: dict[str, list[np.ndarray]] = {"text": texts}
        for view in ("audio", "vision"):
            d = self._dim(view)
            rows = [np.zeros((0, d), np.float32)] * n
            if view in self.features.views:
                for i, x in enumerate(inputs):
                    if view == "audio" and x.audio is not None:
                        a = x.audio_features.get(self.features.audio_key or "") if self.features.audio_key else None
                        rows[i] = a if a is not None else self.audio_features(x.audio)
                    elif view == "vision" and x.frames:
                        rows[i] = self._frame_regions(x.frames)
            seqs[view] = rows
        arrays: dict[str, np.ndarray] = {}
        for view, rows in seqs.items():
            lengths = np.asarray([len(r) for r in rows], np.int64)
            full = np.zeros((n, max(int(lengths.max()), 1), self._dim(view)), np.float32)
            for i, r in enumerate(rows):
                full[i, : len(r)] = r
            if view in self.stats:
                full = self.stats[view].apply(full, lengths)
            arrays[view], arrays[f"{view}_lengths"] = full, lengths
        split = TriModalSplit(
            text=arrays["text"],
            text_lengths=arrays["text_lengths"],
            audio=arrays["audio"],
            audio_lengths=arrays["audio_lengths"],
            vision=arrays["vision"],
            vision_lengths=arrays["vision_lengths"],
            labels=np.zeros(n, np.int64),
            ids=[str(i) for i in range(n)],
        )
        batch, _ = collate_trimodal(split, list(range(n)))
        return batch

    @torch.inference_mode()
    def predict(self, inputs: Sequence[AVInput]) -> list[AVPrediction]:
        if not inputs:
            return []
        batch = self.batch(inputs).to(self.device)
        self.model.eval()
        out = self.model(batch)
        probs = torch.softmax(out.pred.float(), -1).cpu().numpy()
        present = batch.present.cpu().numpy()
        weights = out.extras.get("modality_weights")
        w = (
            weights.float().cpu().numpy()
            if weights is not None
            else present / np.maximum(present.sum(1, keepdims=True), 1)
        )
        trained = ("text", *sorted(self.features.views))
        return [
            self._row(probs[i], {VIEW_NAMES[v]: float(w[i, VIEWS.index(v)]) for v in trained})
            for i in range(len(inputs))
        ]

    def _row(self, p: np.ndarray, weights: dict[str, float]) -> AVPrediction:
        probs = {lab: float(p[j]) for j, lab in enumerate(self.labels)}
        top = self.labels[int(p.argmax())]
        if set(SENTIMENT) <= set(self.labels):
            return AVPrediction(probs, top, probs["positive"] - probs["negative"], None, weights)
        if all(lab in EMOTION_VALENCE for lab in self.labels):
            val = {s: sum(q for lab, q in probs.items() if EMOTION_VALENCE[lab] == s) for s in SENTIMENT}
            label = max(SENTIMENT, key=val.__getitem__)
            score = float(np.clip(val["positive"] - val["negative"], -1, 1))
            return AVPrediction(probs, label, score, top, weights)
        return AVPrediction(probs, top, 0.0, None, weights)


def heads_for(heads: Sequence[AVHead], x: AVInput | None) -> list[AVHead]:
    """Routing: the heads that cover a post's decoded media (none for a post without audio/video)."""
    if x is None:
        return []
    return [h for h in heads if h.covers(x.audio is not None, bool(x.frames))]


def load_av_heads(
    names: Sequence[str],
    checkpoints_dir: Path | None = None,
    device: str = "cpu",
    text_encoder=None,
    image_encoder=None,
) -> list[AVHead]:
    """The configured tri-modal heads, sharing one text encoder and (if any needs frames) one image encoder."""
    heads = [AVHead(name, checkpoints_dir, device, text_encoder, image_encoder) for name in names]
    if heads and text_encoder is None:
        from models.text_encoder import TextEncoder

        text_encoder = TextEncoder(device=device)
    if any(h.needs_frames for h in heads) and image_encoder is None:
        from models.image_encoder import ImageEncoder

        image_encoder = ImageEncoder(device=device).eval()
    for h in heads:
        h._text, h._image = text_encoder, image_encoder
    return heads
