"""SemEval 2013-2016: cleaned, de-duplicated, held-out splits fixed, TweetEval val kept clean."""

from __future__ import annotations

from collections import Counter

import pytest

from pipelines.datasets import semeval
from pipelines.datasets.tweeteval import load_heldout
from tests.conftest import dataset_path


@pytest.mark.data
def test_splits_are_clean_and_disjoint() -> None:
    data = dataset_path("semeval-twitter").parent
    recs = semeval.load(data)
    by = Counter(r.split for r in recs)
    assert by["test"] > 1900 and by["val"] > 1800 and by["train"] > 40_000
    assert len({r.uid for r in recs}) == len(recs)
    keys = {s: {semeval.tweeteval_key(r.text) for r in recs if r.split == s} for s in ("train", "val", "test")}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["val"]
    assert not any("\\u2019" in r.text or r.text.startswith('"') and r.text.endswith('"') for r in recs)
    if (data / "tweeteval").exists():
        held = load_heldout(data)
        assert len(held) == 2000 and {r.split for r in held} == {"test"}
        tv = {semeval.tweeteval_key(r.text) for r in held}
        assert not tv & (keys["train"] | keys["val"] | keys["test"])
