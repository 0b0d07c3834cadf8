"""Production head: shapes, masks, the eta term, gradients, determinism, modality dropout."""

from __future__ import annotations

import torch

from models.production import EtaFusionHead


def _batch(b: int = 6, seed: int = 0) -> tuple[dict, dict, dict, dict]:
    g = torch.Generator().manual_seed(seed)
    x = {"text": torch.randn(b, 384, generator=g), "image": torch.randn(b, 1280, generator=g)}
    u = {k: torch.randn(v.shape, generator=g) for k, v in x.items()}
    n = {"text": torch.tensor([0.0, 1, 2, 0, 5, 1]), "image": torch.tensor([0.0, 0, 1, 1, 0, 2])}
    m = {
        "text": torch.ones(b, dtype=torch.bool),
        "image": torch.tensor([True, False, True, False, True, True]),
    }
    return x, u, n, m


def _head(**kw) -> EtaFusionHead:
    torch.manual_seed(0)
    return EtaFusionHead(hidden=32, **kw).eval()


def test_shapes_and_weights() -> None:
    out = _head()(*_batch())
    assert out.logits.shape == (6, 3)
    w = out.modality_weights
    assert set(w) == {"text", "image"} and w["text"].shape == (6,)
    total = w["text"] + w["image"]
    assert torch.allclose(total, torch.ones(6), atol=1e-6)
    assert (w["image"][[1, 3]] == 0).all() and (w["text"][[1, 3]] == 1).all()


def test_absent_view_features_do_not_matter() -> None:
    head = _head()
    x, u, n, m = _batch()
    ref = head(x, u, n, m).logits
    x2 = {k: v.clone() for k, v in x.items()}
    u2 = {k: v.clone() for k, v in u.items()}
    x2["image"][~m["image"]] = 1e3 * torch.randn(int((~m["image"]).sum()), 1280)
    u2["image"][~m["image"]] = -5.0
    assert torch.allclose(head(x2, u2, n, m).logits, ref, atol=1e-6)
    # a view missing from the dicts altogether = absent for the whole batch
    only_text = head({"text": x["text"]}, {"text": u["text"]}, {"text": n["text"]}, {"text": m["text"]})
    m_none = dict(m, image=torch.zeros(6, dtype=torch.bool))
    assert torch.allclose(only_text.logits, head(x, u, n, m_none).logits, atol=1e-6)


def test_eta_term_only_with_history() -> None:
    head = _head(eta_init=0.5)
    x, u, n, m = _batch()
    ref = head(x, u, n, m).logits
    # a different history (not a uniform shift: the extractor's LayerNorm ignores those)
    u2 = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(9)) for k, v in u.items()}
    out = head(x, u2, n, m).logits
    no_history = (n["text"] == 0) & ((n["image"] == 0) | ~m["image"])
    assert torch.allclose(out[no_history], ref[no_history], atol=1e-6)
    assert not torch.allclose(out[~no_history], ref[~no_history], atol=1e-4)
    # eta = 0 (fixed) turns user fusion off entirely
    off = _head(eta_init=0.0, learn_eta=False)
    assert torch.allclose(off(x, u2, n, m).logits, off(x, u, n, m).logits, atol=1e-6)


def test_gradients_flow_everywhere() -> None:
    head = EtaFusionHead(hidden=32).train()
    head.modality_dropout = 0.0
    x, u, n, m = _batch()
    loss = torch.nn.functional.cross_entropy(head(x, u, n, m).logits, torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert head.eta_raw.grad.abs().sum() > 0


def test_deterministic_with_seed() -> None:
    a, b = _head(), _head()
    x, u, n, m = _batch()
    assert torch.equal(a(x, u, n, m).logits, b(x, u, n, m).logits)
    a.train()
    b.train()
    torch.manual_seed(7)
    la = a(x, u, n, m).logits
    torch.manual_seed(7)
    lb = b(x, u, n, m).logits
    assert torch.equal(la, lb)


def test_modality_dropout_never_drops_every_view() -> None:
    head = EtaFusionHead(hidden=16, modality_dropout=0.99).train()
    x, u, n, m = _batch()
    for s in range(20):
        torch.manual_seed(s)
        w = head(x, u, n, m).modality_weights
        assert torch.allclose(w["text"] + w["image"], torch.ones(6), atol=1e-6)


def test_no_view_present_gives_finite_output() -> None:
    head = _head()
    x, u, n, m = _batch()
    none = {k: torch.zeros(6, dtype=torch.bool) for k in m}
    out = head(x, u, n, none)
    assert torch.isfinite(out.logits).all()
    assert all((w == 0).all() for w in out.modality_weights.values())
    assert head.score(out.logits).shape == (6,)


def test_test_rows_keep_their_authors_earlier_posts() -> None:
    """Evaluating on test rows alone must not change their eta term: an author's running mean reads
    their posts in every split, so those posts are kept (and nobody else's)."""
    from pipelines.datasets.base import Record
    from pipelines.sentiment_features import with_their_authors

    def rec(uid: str, split: str, author: str, dataset: str = "airline") -> Record:
        return Record(uid, "text", "neutral", split, author, float(len(uid)), dataset=dataset)

    records = [
        rec("a1", "train", "ann"),
        rec("b1", "train", "bob"),
        rec("a2", "val", "ann"),
        rec("a3", "test", "ann"),
        rec("c1", "test", "cat"),
        rec("x1", "train", "ann", dataset="meld"),  # another data set's "ann" is someone else
    ]
    kept = with_their_authors(records, ("test",))
    assert [r.uid for r in kept] == ["a1", "a2", "a3", "c1"]
