"""Sentiment data: loaders, causal running means, time-ordered airline split."""

from __future__ import annotations

import numpy as np

from pipelines.datasets.base import SENTIMENT_LABELS
from pipelines.sentiment_features import running_means
from tests.conftest import dataset_path


def test_running_means_are_causal() -> None:
    feats = np.array([[1.0, 0], [3, 0], [0, 2], [5, 0], [7, 7]], dtype=np.float32)
    present = np.array([True, True, True, False, True])
    authors = ["a", "a", "b", "a", "a"]
    order = np.array([0.0, 1, 2, 3, 4])
    u, n = running_means(feats, present, authors, order)
    assert n.tolist() == [0, 1, 0, 2, 2]  # the post without the view is not counted
    assert np.allclose(u[0], 0) and np.allclose(u[1], [1, 0]) and np.allclose(u[3], [2, 0])
    assert np.allclose(u[4], [2, 0])
    # shuffled input order, same time order -> same answer per row
    perm = np.array([4, 2, 0, 3, 1])
    u2, n2 = running_means(feats[perm], present[perm], [authors[i] for i in perm], order[perm])
    assert np.allclose(u2, u[perm]) and np.allclose(n2, n[perm])


def test_airline_split_is_by_time() -> None:
    from pipelines.datasets import airline

    recs = airline.load(dataset_path("airline-tweets").parent)
    assert len({r.uid for r in recs}) == len(recs)
    last = {s: max(r.order for r in recs if r.split == s) for s in ("train", "val")}
    first = {s: min(r.order for r in recs if r.split == s) for s in ("val", "test")}
    assert last["train"] <= first["val"] and last["val"] <= first["test"]
    assert {r.label for r in recs} == set(SENTIMENT_LABELS)
    n = len(recs)
    assert abs(sum(r.split == "train" for r in recs) - 0.8 * n) < 2


def test_other_loaders() -> None:
    from pipelines.datasets import meld, mvsa, tweeteval

    data = dataset_path("meld").parent
    m = meld.load(data)
    assert len(m) == 9989 + 1109 + 2610 and {r.label for r in m} == set(SENTIMENT_LABELS)
    assert not any("\u00e2\u20ac" in r.text for r in m)  # mojibake repaired
    s = mvsa.load_single(dataset_path("mvsa-single").parent)
    assert [sum(r.split == k for r in s) for k in ("train", "val", "test")] == [3611, 450, 450]
    assert all(r.image is not None for r in s)
    mm = mvsa.load_multiple(dataset_path("mvsa-multiple-text").parent)
    assert [sum(r.split == k for r in mm) for k in ("train", "val", "test")] == [13624, 1700, 1700]
    t = tweeteval.load(dataset_path("tweeteval").parent)
    assert len(t) == 2000 and {r.split for r in t} == {"train", "val", "test"}


def test_tweeteval_emotion_is_train_only_with_distant_labels() -> None:
    from pipelines.datasets import tweeteval

    base = dataset_path("tweeteval") / "emotion"
    recs = tweeteval.load_emotion_as_sentiment(base.parent.parent)
    n_files = sum(len((base / f"{p}_labels.txt").read_text().split()) for p in ("train", "val"))
    assert len(recs) == n_files and {r.split for r in recs} == {"train"}
    assert {r.label for r in recs} == {"negative", "positive"}  # no neutral class in the emotion task
    # anger (0) -> negative, joy (1) -> positive, in file order
    labels = (base / "train_labels.txt").read_text().split()
    first = {y: next(i for i, v in enumerate(labels) if v == y) for y in ("0", "1")}
    assert recs[first["0"]].label == "negative" and recs[first["1"]].label == "positive"
