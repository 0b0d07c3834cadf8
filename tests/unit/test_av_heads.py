"""Tri-modal heads in the stream: routing, and features identical to the ones the heads trained on.

Real checkpoints (models/checkpoints), real encoders, real EmoDB / MVSA-Single media; the
reference features come from the training loaders' own functions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.registry import DEFAULT_CHECKPOINTS_DIR
from pipelines.av_decode import decode_audio
from pipelines.av_heads import AV_PREFIX, AVHead, AVInput, heads_for, load_av_heads
from pipelines.datasets.trimodal import Standardizer, load_standardizers
from tests.conftest import dataset_path

EMODB, MVSA = "amsgfn-emodb", "amsgfn-mvsa-single"


@pytest.fixture(scope="module")
def heads() -> dict[str, AVHead]:
    return {h.name: h for h in load_av_heads([EMODB, MVSA])}


def test_routing_by_the_modalities_a_post_brings():
    emodb, mvsa = AVHead(EMODB), AVHead(MVSA)  # no encoders needed to route
    both = [emodb, mvsa]
    wave = np.zeros(16000, np.float32)
    frame = Image.new("RGB", (64, 64))
    assert heads_for(both, None) == []  # text-only and image posts: no tri-modal head
    assert heads_for(both, AVInput("hallo", audio=wave)) == [emodb]  # audio post
    assert heads_for(both, AVInput("", audio=wave, frames=[frame])) == [emodb, mvsa]  # video with sound
    assert heads_for(both, AVInput("x", frames=[frame])) == [mvsa]  # silent video
    assert heads_for([emodb], AVInput("x", frames=[frame])) == []
    assert emodb.model_name == AV_PREFIX + EMODB and emodb.version.startswith("amsgfn-1+")


@pytest.mark.parametrize("name, reason", [("amsgfn-mosi-audio", "openSMILE"), ("no-such-head", "no tri-modal")])
def test_unservable_checkpoints_are_refused(name, reason):
    with pytest.raises((ValueError, FileNotFoundError), match=reason):
        AVHead(name)


def test_standardizer_is_the_training_split_statistics():
    """standardizer.json == Standardizer.fit over the EmoDB training speakers' frames."""
    from pipelines.datasets import emodb

    clips = [c for c in emodb.load_clips(dataset_path("emodb").parent) if c.split == "train"]
    assert len(clips) == 385
    seqs = [emodb.clip_frames(c.path) for c in clips]
    lengths = np.asarray([len(s) for s in seqs])
    frames = np.zeros((len(seqs), lengths.max(), seqs[0].shape[1]), np.float32)
    for i, s in enumerate(seqs):
        frames[i, : len(s)] = s
    ref = Standardizer.fit(frames, lengths)
    st = load_standardizers(DEFAULT_CHECKPOINTS_DIR / EMODB)["audio"]
    np.testing.assert_allclose(st.mean, ref.mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(st.std, ref.std, rtol=1e-5, atol=1e-5)


def test_emodb_stream_features_equal_training_features(heads):
    from pipelines.datasets import emodb

    h = heads[EMODB]
    clip = emodb.load_clips(dataset_path("emodb").parent)[0]
    x = AVInput(clip.text, audio=decode_audio(clip.path.read_bytes()))
    batch = h.batch([x])
    frames = emodb.clip_frames(clip.path)
    ref_audio = h.stats["audio"].apply(frames[None], np.asarray([len(frames)]))[0]
    assert int(batch.audio_mask.sum()) == len(frames) == 101  # 1.00 s at 10 ms hops
    np.testing.assert_allclose(batch.audio[0, : len(frames)].numpy(), ref_audio, atol=1e-5)
    states, lengths = emodb.sentence_states([clip.text])
    assert int(batch.text_mask.sum()) == int(lengths[0])
    np.testing.assert_allclose(batch.text[0, : lengths[0]].numpy(), states[0, : lengths[0]], atol=1e-4)
    assert batch.present.tolist() == [[True, True, False]]


def test_mvsa_stream_features_equal_training_cache(heads, tmp_path):
    from models.image_encoder import ImageEncoder
    from models.text_encoder import TextEncoder
    from pipelines.datasets import mvsa
    from pipelines.datasets.mvsa_trimodal import CACHE_LAYERS, MAX_TOKENS
    from pipelines.state_cache import cached_image_maps, cached_text_states

    h = heads[MVSA]
    rec = next(r for r in mvsa.load_single(dataset_path("mvsa-single").parent) if r.image is not None)
    with Image.open(rec.image) as im:
        batch = h.batch([AVInput(rec.text, frames=[im.convert("RGB")])])
    st = cached_text_states(
        TextEncoder(max_length=MAX_TOKENS), [rec.text], tmp_path, layers=CACHE_LAYERS, max_tokens=MAX_TOKENS
    )
    ref_text = torch.cat([st.cls[0, -1:], st.tokens[:, -1]]).float()  # [CLS] + words, last layer
    assert int(batch.text_mask.sum()) == len(ref_text)
    torch.testing.assert_close(batch.text[0, : len(ref_text)], ref_text, atol=2e-3, rtol=0)
    fmap = cached_image_maps(ImageEncoder(), [rec.image], tmp_path)
    ref_vis = fmap.flatten(2).transpose(1, 2)[0].float()
    assert int(batch.vision_mask.sum()) == 49
    torch.testing.assert_close(batch.vision[0, :49], ref_vis, atol=1e-3, rtol=0)
    assert batch.present.tolist() == [[True, False, True]]


def test_predictions_carry_modality_weights(heads):
    from pipelines.datasets import emodb

    clip = emodb.load_clips(dataset_path("emodb").parent)[5]
    wave = decode_audio(clip.path.read_bytes())
    with_text, audio_only = heads[EMODB].predict([AVInput(clip.text, audio=wave), AVInput("", audio=wave)])
    for p in (with_text, audio_only):
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert set(p.probabilities) == set(emodb.EMOTIONS) and p.emotion in emodb.EMOTIONS
        assert p.label in ("negative", "neutral", "positive") and -1 <= p.score <= 1
        assert set(p.modality_weights) == {"text", "audio"}
        assert sum(p.modality_weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert audio_only.modality_weights == {"text": 0.0, "audio": pytest.approx(1.0)}
    frame = Image.open(next((dataset_path("mvsa-single") / "images").glob("*.jpg"))).convert("RGB")
    (v,) = heads[MVSA].predict([AVInput("what a day", frames=[frame, frame])])
    assert set(v.modality_weights) == {"text", "video"} and v.emotion is None
    assert sum(v.modality_weights.values()) == pytest.approx(1.0, abs=1e-5)


def test_stream_path_reproduces_the_checkpoint_test_accuracy(heads):
    """EmoDB test speakers through ffmpeg + the stream features + the head == the card's test accuracy.

    If any stream feature differed from training (decoding, frontend, z-scoring, text states), the
    accuracy the training run recorded would not come back.
    """
    from pipelines.datasets import emodb

    h = heads[EMODB]
    test = [c for c in emodb.load_clips(dataset_path("emodb").parent) if c.split == "test"]
    preds = []
    for i in range(0, len(test), 32):
        chunk = test[i : i + 32]
        preds += h.predict([AVInput(c.text, audio=decode_audio(c.path.read_bytes())) for c in chunk])
    acc = np.mean([p.emotion == c.emotion for p, c in zip(preds, test, strict=True)])
    assert len(test) == h.card["data"]["splits"]["test"] == 107
    assert acc == pytest.approx(h.card["metrics"]["test"]["accuracy"], abs=1e-9)
