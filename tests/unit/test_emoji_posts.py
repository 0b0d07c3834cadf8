"""Emoji-only posts are scored by their emoji, by every head that reads text as people write it:
the emoji sequences of real airline tweets, alone, get different scores, and those from positive
tweets score above those from negative ones."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import dataset_path


@pytest.mark.data
@pytest.mark.parametrize("name", ["production", "production-v6"])
def test_emoji_only_posts_are_scored_by_their_emoji(name: str) -> None:
    import emoji

    from models.registry import load_head
    from models.text_encoder import head_reading
    from pipelines.datasets.airline import load
    from pipelines.scoring import InferenceEngine

    head = load_head(name)
    if head_reading(head)[1] == "raw":
        pytest.skip(f"{name} reads raw text (emoji become [UNK]); the heads trained with social-v1 read them")
    posts: dict[str, list[str]] = {}
    for r in load(dataset_path("airline-tweets").parent):
        only = "".join(e["emoji"] for e in emoji.emoji_list(r.text))
        if only and r.label != "neutral":
            posts.setdefault(r.label, []).append(only)
    assert len(posts["positive"]) > 30 and len(posts["negative"]) > 30
    engine = InferenceEngine(head)

    def scores(texts: list[str]) -> np.ndarray:
        p = engine.predict(engine.encode(texts), {}, {}).probs
        return (p[:, head.labels.index("positive")] - p[:, head.labels.index("negative")]).numpy()

    score = {label: scores(texts) for label, texts in posts.items()}
    everything = np.concatenate(list(score.values()))
    assert len(np.unique(everything.round(3))) > 0.3 * len(set(posts["positive"] + posts["negative"]))
    assert score["positive"].mean() > score["negative"].mean() + 0.3
    for e, sign in (("😍😍😍", 1), ("👍", 1), ("😡", -1), ("💔😭", -1)):
        assert sign * float(scores([e])[0]) > 0, e
