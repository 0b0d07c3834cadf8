"""The inference engine's batching: length buckets must not change any post's embedding."""

from __future__ import annotations

import pytest
import torch

from models.production import EtaFusionHead
from pipelines.scoring import InferenceEngine

TEXTS = ["ok", "", "   ", "the flight was delayed for three hours and nobody told us anything at all",
         "thanks!", "@united lost my bag again, second time this month #fail", "a b c d e f g h i j k l m n o p",
         "great crew", "meh", "why is the wifi never working on these planes", "x" * 400, "fine"]


@pytest.fixture(scope="module")
def engines() -> tuple[InferenceEngine, InferenceEngine]:
    head = EtaFusionHead({"text": 384}, hidden=16)
    plain = InferenceEngine(head, bucket_size=0)
    return plain, InferenceEngine(head, text_encoder=plain.frozen_text, bucket_size=4)


def test_buckets_cover_every_row_once_sorted_by_length(engines) -> None:
    _, bucketed = engines
    parts = bucketed.tokenize(TEXTS)
    rows = torch.cat([idx for idx, _ in parts]).tolist()
    assert sorted(rows) == list(range(len(TEXTS)))
    widths = [b["input_ids"].shape[1] for _, b in parts]
    assert widths == sorted(widths) and len(parts) == 3
    for _, b in parts:  # padded exactly to the longest row of the bucket, mask matches the ids
        assert (b["attention_mask"].sum(1).max() == b["input_ids"].shape[1]).item()
        assert ((b["input_ids"] != 0) == b["attention_mask"].bool()).all()


def test_bucketed_embeddings_equal_unbucketed(engines) -> None:
    plain, bucketed = engines
    a = plain.encode(TEXTS).x["text"]
    b = bucketed.encode(TEXTS, tokens=bucketed.tokenize(TEXTS)).x["text"]
    assert torch.allclose(a, b, atol=1e-5)
    assert not a[1].any() and not a[2].any()  # empty posts have no text view
    assert a[0].norm() > 0.99
