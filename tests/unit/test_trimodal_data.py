"""Tri-modal data adapters on the real data (skip when the data directory is absent)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from tests.conftest import dataset_path


def test_mosi_audio_splits() -> None:
    from pipelines.datasets.mosi_audio import load_mosi_audio

    base = dataset_path("mosi-audio").parent
    s = load_mosi_audio(base)
    assert len(s["train"]) + len(s["val"]) == 1447 and len(s["test"]) == 752
    assert not set(s["train"].groups) & set(s["val"].groups)  # validation = whole held-out videos
    assert s["train"].audio.shape[1:] == (1, 73) and s["train"].vision.shape[2] == 73
    p = s["test"].present
    assert not p[:, 0].any() and p[:, 1].all() and p[:, 2].all()
    # the context of an utterance holds its own vector at its position in the video
    i = 5
    vid, j = s["test"].ids[i].split(":")
    np.testing.assert_array_equal(s["test"].vision[i, int(j)], s["test"].audio[i, 0])
    assert set(np.unique(s["test"].labels)) == {0, 1}
    no_ctx = load_mosi_audio(base, context=False)
    assert not no_ctx["train"].present[:, 2].any()


def test_emodb_speaker_independent_split() -> None:
    from pipelines.datasets.emodb import EMOTIONS, load_clips

    clips = load_clips(dataset_path("emodb").parent)
    assert len(clips) == 535
    by = Counter(c.split for c in clips)
    assert by == {"train": 385, "val": 43, "test": 107}
    spk = {s: {c.speaker for c in clips if c.split == s} for s in by}
    assert spk["test"] == {"03", "08"} and spk["val"] == {"09"} and len(spk["train"]) == 7
    assert {c.emotion for c in clips} == set(EMOTIONS)
    assert all(c.path.exists() for c in clips[:5])
    # the same sentence is spoken in several emotions: the text carries no label information
    per_text = {t: {c.emotion for c in clips if c.text_id == t} for t in {c.text_id for c in clips}}
    assert all(len(e) >= 5 for e in per_text.values())


def test_mosi_audio_recipe_classification_path(tmp_path) -> None:
    from pipelines.recipes import RecipeContext, get

    base = dataset_path("mosi-audio").parent
    ctx = RecipeContext(
        data_dir=base,
        checkpoints_dir=tmp_path / "ck",
        cache_dir=tmp_path / "cache",
        epochs=1,
        limit=24,
        options={"batch_size": 8},
    )
    rec = get("inpnrln-md", "mosi-audio")
    out = rec.train(ctx)
    assert (out / "card.json").exists()
    m = rec.evaluate(ctx, "val")
    assert {"accuracy", "f1_weighted", "f1_macro", "recall_negative", "recall_positive"} <= set(m)
    assert m["n"] == 24 and m["line"].startswith("Acc ")
