"""Shared tri-modal pieces: batch convention, masked blocks, contrastive losses, MMSA loader."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from models.trimodal import (
    CrossModalAttention,
    MaskedMultiheadAttention,
    PositionalEmbedding,
    TransformerEncoder,
    TriModalBatch,
    info_nce,
    last_valid,
    masked_mean,
    nt_xent,
    task_loss,
)
from pipelines.datasets.mmsa import load_mmsa, load_mmsa_split, make_synthetic_mmsa, read_pickle
from pipelines.datasets.trimodal import (
    TriModalDataset,
    collate_trimodal,
    lengths_from_nonzero,
    standardize,
)


def test_masked_mean_and_last_valid() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [0.0], [0.0]], [[7.0], [8.0], [9.0]]])
    m = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    assert masked_mean(x, m).squeeze(-1).tolist() == [2.0, 5.0, 0.0]
    assert last_valid(x, m).squeeze(-1).tolist() == [3.0, 5.0, 0.0]


def test_attention_ignores_padding_and_handles_empty_rows() -> None:
    torch.manual_seed(0)
    att = MaskedMultiheadAttention(8, 2).eval()
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, True, False, False], [False] * 5])
    out = att(q, k, mask)
    k2 = k.clone()
    k2[0, 3:] = 1e3  # garbage in padded positions must not matter
    assert torch.allclose(out, att(q, k2, mask))
    assert torch.all(out[1] == 0) and torch.isfinite(out).all()


def test_encoder_and_cross_attention_masks() -> None:
    torch.manual_seed(0)
    enc = TransformerEncoder(16, 4, 2, dropout=0.0).eval()
    x = torch.randn(1, 6, 16)
    m = torch.tensor([[True] * 4 + [False] * 2])
    y1 = enc(x, m)
    x2 = x.clone()
    x2[:, 4:] = 5.0
    assert torch.allclose(y1, enc(x2, m), atol=1e-6)
    assert torch.allclose(y1[:, :4], enc(x[:, :4], m[:, :4]), atol=1e-5)  # padding-length invariant
    assert torch.all(y1[:, 4:] == 0)
    cma = CrossModalAttention(16, 4, dropout=0.0, residual=False).eval()
    ctx = torch.randn(1, 3, 16)
    out = cma(x, m, ctx, torch.zeros(1, 3, dtype=torch.bool))
    assert torch.all(out == 0)  # a missing context contributes exactly nothing


def test_positional_embedding_shapes() -> None:
    pe = PositionalEmbedding(8, max_len=4)
    assert pe(torch.zeros(2, 3, 8)).shape == (2, 3, 8)
    assert pe(torch.zeros(2, 10, 8)).shape == (2, 10, 8)  # falls back to sinusoidal beyond max_len


def test_info_nce_properties() -> None:
    torch.manual_seed(0)
    a = torch.randn(8, 16)
    aligned = info_nce(a, a.clone(), tau=0.1)
    shuffled = info_nce(a, a[torch.randperm(8)], tau=0.1)
    assert aligned < 0.05 < shuffled
    # uniform logits -> log(N)
    z = torch.ones(4, 3)
    assert info_nce(z, z, tau=1.0).item() == pytest.approx(np.log(4), rel=1e-5)
    valid = torch.tensor([True, True, False, False, False, False, False, False])
    assert info_nce(a, a, valid=valid).item() < 0.05
    assert info_nce(a[:1], a[:1]).item() == 0.0
    assert nt_xent(a, a.clone(), tau=0.1) < nt_xent(a, a[torch.randperm(8)], tau=0.1)


def test_task_loss() -> None:
    p, y = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])
    assert task_loss(p, y, 1).item() == pytest.approx(1.5)
    assert task_loss(p, y, 1, "mse").item() == pytest.approx(2.5)
    logits = torch.tensor([[10.0, -10.0]])
    assert task_loss(logits, torch.tensor([0]), 2).item() < 1e-4


def test_batch_normalized_zeroes_missing_views() -> None:
    b = TriModalBatch(
        torch.ones(2, 3, 4),
        torch.ones(2, 3, dtype=torch.bool),
        torch.ones(2, 2, 5),
        torch.ones(2, 2, dtype=torch.bool),
        torch.ones(2, 1, 6),
        torch.zeros(2, 1, dtype=torch.bool),
        torch.tensor([[True, False, True], [True, True, True]]),
    )
    n = b.normalized()
    assert torch.all(n.audio[0] == 0) and not n.audio_mask[0].any() and n.audio_mask[1].all()
    assert torch.all(n.vision == 0)
    assert n.to("cpu").batch_size == 2


def test_lengths_from_nonzero() -> None:
    x = np.zeros((3, 4, 2), np.float32)
    x[0, :2] = 1
    x[1, 3] = -1
    assert lengths_from_nonzero(x).tolist() == [2, 4, 0]


def test_mmsa_roundtrip(tmp_path) -> None:
    path = make_synthetic_mmsa(tmp_path / "tiny.pkl", n=(10, 4, 6), dims=(12, 5, 7), lengths=(6, 9, 8))
    raw = read_pickle(path)
    assert set(raw["train"]) >= {
        "text",
        "text_bert",
        "audio",
        "vision",
        "audio_lengths",
        "vision_lengths",
        "regression_labels",
        "id",
        "raw_text",
    }
    splits = load_mmsa(path)
    tr = splits["train"]
    assert len(tr) == 10 and len(splits["valid"]) == 4 and len(splits["test"]) == 6
    assert tr.dims == (12, 5, 7)
    assert tr.audio_lengths.tolist() == list(raw["train"]["audio_lengths"])
    assert tr.text_lengths.tolist() == raw["train"]["text_bert"][:, 1].sum(1).astype(int).tolist()
    np.testing.assert_allclose(tr.labels, raw["train"]["regression_labels"])
    assert tr.ids == list(raw["train"]["id"]) and tr.raw_text == list(raw["train"]["raw_text"])
    assert len(load_mmsa_split(path, "val")) == 4
    batch, y = collate_trimodal(tr, [0, 3, 5])
    assert batch.text.shape[0] == 3 and batch.text.shape[1] == int(tr.text_lengths[[0, 3, 5]].max())
    assert batch.audio_mask.sum(1).tolist() == tr.audio_lengths[[0, 3, 5]].tolist()
    assert batch.present.all() and y.shape == (3,)
    ds = TriModalDataset(tr)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=ds.collate)
    assert sum(b.batch_size for b, _ in loader) == 10


def test_mmsa_without_lengths_and_with_inf(tmp_path) -> None:
    path = make_synthetic_mmsa(tmp_path / "t.pkl", n=(4, 2, 2), dims=(8, 3, 4), lengths=(5, 6, 6), with_text_bert=False)
    data = read_pickle(path)
    for s in data.values():
        s.pop("audio_lengths")
        s.pop("vision_lengths")
        s["audio"][0, 0, 0] = -np.inf
    with open(path, "wb") as f:
        pickle.dump(data, f)
    tr = load_mmsa(path)["train"]
    assert np.isfinite(tr.audio).all()
    assert tr.vision_lengths.tolist() == lengths_from_nonzero(data["train"]["vision"]).tolist()
    assert tr.text_lengths.tolist() == lengths_from_nonzero(data["train"]["text"]).tolist()


def test_standardize_and_missing_view(tmp_path) -> None:
    path = make_synthetic_mmsa(tmp_path / "t.pkl", n=(20, 4, 4), dims=(8, 3, 4))
    sp = load_mmsa(path)
    tr, (va,), stats = standardize(sp["train"], [sp["valid"]])
    mask = np.arange(tr.audio.shape[1])[None] < tr.audio_lengths[:, None]
    assert np.abs(tr.audio[mask].mean(0)).max() < 1e-4
    assert np.all(tr.audio[~mask] == 0)
    dropped = va.drop_view("vision")
    b, _ = collate_trimodal(dropped, [0, 1])
    assert b.present[:, 2].sum() == 0 and b.present[:, :2].all()
    assert len(tr.subset([1, 2])) == 2


def test_mmsa_text_bert_ids_through_minilm(tmp_path) -> None:
    path = make_synthetic_mmsa(tmp_path / "ids.pkl", n=(3, 2, 2), dims=(8, 3, 4), lengths=(6, 5, 5))
    data = read_pickle(path)
    for s in data.values():
        s.pop("text")  # only BERT token ids, as in MMSA's *_bert pickles without features
    with open(path, "wb") as f:
        pickle.dump(data, f)
    tr = load_mmsa(path)["train"]
    assert tr.text.shape[0] == 3 and tr.text.shape[2] == 384
    assert tr.text_lengths.tolist() == data["train"]["text_bert"][:, 1].sum(1).astype(int).tolist()
    i = 0
    assert np.all(tr.text[i, tr.text_lengths[i] :] == 0) and np.abs(tr.text[i, 0]).sum() > 0
