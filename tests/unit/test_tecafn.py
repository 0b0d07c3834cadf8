"""TeCaFN: shapes, masks, the replacement gate, L_tcon / L_bicon / L_ap, training-only replacement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.tecafn import TeCaFN, TeCaFNConfig, bicon_loss, replacement_gate, tcon_loss
from models.trimodal import TriModalBatch

DT, DA, DV = 16, 8, 6


def make_batch(
    b: int = 6, lt: int = 7, la: int = 9, lv: int = 5, seed: int = 0, missing: dict[int, list[int]] | None = None
) -> TriModalBatch:
    g = torch.Generator().manual_seed(seed)
    lens = [torch.randint(2, n + 1, (b,), generator=g) for n in (lt, la, lv)]
    masks = [torch.arange(n)[None] < ln[:, None] for n, ln in zip((lt, la, lv), lens, strict=True)]
    present = torch.ones(b, 3, dtype=torch.bool)
    for view, rows in (missing or {}).items():
        present[rows, view] = False
    return TriModalBatch(
        torch.randn(b, lt, DT, generator=g),
        masks[0],
        torch.randn(b, la, DA, generator=g),
        masks[1],
        torch.randn(b, lv, DV, generator=g),
        masks[2],
        present,
    ).normalized()


def model(seed: int = 0, **kw) -> TeCaFN:
    base = dict(text_dim=DT, audio_dim=DA, vision_dim=DV, enc_layers=1, fusion_layers=2)
    base.update(kw)
    torch.manual_seed(seed)
    return TeCaFN(TeCaFNConfig(**base))


def test_shapes_regression_and_classification() -> None:
    b = make_batch()
    out = model().eval()(b)
    assert out.pred.shape == (6,)
    assert out.aux_loss.dim() == 0
    assert out.extras["modality_weights"].shape == (6, 3)
    clf = model(n_outputs=2).eval()
    full = clf.run(b)
    assert full.prediction.shape == (6, 2)
    loss, parts = clf.loss(full, torch.tensor([0, 1, 0, 1, 1, 0]))
    assert torch.isfinite(loss) and parts["task"] > 0


def test_no_final_tanh_output_is_unbounded() -> None:
    m = model().eval()
    with torch.no_grad():
        m.head[-1].bias.fill_(5.0)
    assert (m.run(make_batch()).prediction > 1.0).all()


def test_padding_does_not_change_outputs() -> None:
    m = model().eval()
    b = make_batch(missing={1: [2]})
    padded = {}
    for name in ("text", "audio", "vision"):
        x, mk = b.view(name)
        padded[name] = F.pad(x, (0, 0, 0, 3))
        padded[f"{name}_mask"] = F.pad(mk, (0, 3), value=False)
    with torch.no_grad():
        a = m.run(b).prediction
        p = m.run(TriModalBatch(present=b.present, **padded)).prediction
    assert torch.allclose(a, p, atol=1e-5)


def test_missing_views_and_missing_text() -> None:
    m = model().eval()
    b = make_batch(missing={0: [0, 1], 1: [1, 3], 2: [4]})
    with torch.no_grad():
        out = m.run(b)
    assert torch.isfinite(out.prediction).all()
    assert out.weights[0].tolist() == [0.0, 0.5, 0.5]
    assert out.weights[1].tolist() == [0.0, 0.0, 1.0]


def test_every_parameter_gets_gradient() -> None:
    m = model().train()
    out = m.run(make_batch(missing={0: [5]}), generator=torch.Generator().manual_seed(0))
    loss, _ = m.loss(out, torch.randn(6))
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_tcon_is_text_to_m_infonce() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(6, 8), torch.randn(6, 8)
    valid = torch.ones(6, dtype=torch.bool)
    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).t() / 0.1
    assert torch.allclose(tcon_loss(q, k, 0.1, valid), F.cross_entropy(logits, torch.arange(6)), atol=1e-5)
    assert tcon_loss(q, q + 0.01 * torch.randn(6, 8), 0.1, valid) < tcon_loss(q, k, 0.1, valid)
    # Asymmetric (text -> m only): swapping the roles changes the value in general.
    assert not torch.allclose(tcon_loss(q, k, 0.1, valid), tcon_loss(k, q, 0.1, valid))
    # Rows without the view are out of both anchors and negatives.
    valid[0] = False
    k2 = k.clone()
    k2[0] = 100 * torch.randn(8)
    assert torch.allclose(tcon_loss(q, k, 0.1, valid), tcon_loss(q, k2, 0.1, valid))


def test_bicon_is_both_directions() -> None:
    torch.manual_seed(0)
    z, u = torch.randn(5, 8), torch.randn(5, 8)
    logits = F.normalize(z, dim=-1) @ F.normalize(u, dim=-1).t() / 0.1
    target = torch.arange(5)
    by_hand = F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)
    assert torch.allclose(bicon_loss(z, u, 0.1), by_hand, atol=1e-5)
    assert torch.allclose(bicon_loss(z, u, 0.1), bicon_loss(u, z, 0.1), atol=1e-5)
    assert bicon_loss(z, z, 0.1) < bicon_loss(z, u, 0.1)


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_gate_swap_rate_matches_p_and_picks_among_top3(p: float) -> None:
    torch.manual_seed(0)
    b = 8
    sim = torch.randn(b, b)
    valid = torch.ones(b, dtype=torch.bool)
    g = torch.Generator().manual_seed(123)
    off = sim.masked_fill(torch.eye(b, dtype=torch.bool), float("-inf"))
    top3 = off.topk(3, dim=1).indices
    swaps, picks = 0, torch.zeros(b, b)
    draws = 3000
    for _ in range(draws):
        src, lab = replacement_gate(sim, valid, p, 3, g)
        replaced = src != torch.arange(b)
        assert torch.equal(lab, (~replaced).long())  # 1 paired, 0 replaced
        swaps += int(replaced.sum())
        for i in torch.nonzero(replaced).flatten().tolist():
            assert int(src[i]) in top3[i].tolist()  # a hard negative, never itself
            picks[i, src[i]] += 1
    rate = swaps / (draws * b)
    assert abs(rate - p) < 0.015
    # Uniform over the three hard negatives.
    share = picks.gather(1, top3) / picks.sum(1, keepdim=True)
    assert (share - 1 / 3).abs().max() < 0.06


def test_gate_respects_missing_views_and_is_seeded() -> None:
    sim = torch.randn(6, 6)
    valid = torch.tensor([True, True, False, True, True, True])
    for _ in range(200):
        src, lab = replacement_gate(sim, valid, 1.0, 3)
        assert int(src[2]) == 2 and int(lab[2]) == 1  # no view: never replaced
        assert 2 not in src[torch.arange(6) != 2].tolist()  # and never a replacement
    a = replacement_gate(sim, valid, 0.5, 3, torch.Generator().manual_seed(7))
    c = replacement_gate(sim, valid, 0.5, 3, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_audio_and_vision_are_gated_independently() -> None:
    m = model(p_replace=0.5, fusion_layers=1, d_model=10, n_heads=2).train()
    b = make_batch(b=16)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(2, 2)
    with torch.no_grad():
        for _ in range(30):
            lab = m.run(b, generator=g).pair_labels  # [B, 2]
            for la, lv in lab.tolist():
                counts[la, lv] += 1
    freq = counts / counts.sum()
    assert (freq - 0.25).abs().max() < 0.06  # Table 2: (1-p)^2, p(1-p), p(1-p), p^2 at p = 0.5


def test_replacement_only_in_training() -> None:
    m = model(p_replace=1.0)
    b = make_batch()
    m.train()
    out = m.run(b, generator=torch.Generator().manual_seed(0))
    assert (out.pair_labels == 0).all()  # p = 1: every a and v replaced by a hard negative
    assert (out.sources != torch.arange(6)[:, None]).all()
    m.eval()
    with torch.no_grad():
        ev = m.run(b)
    assert (ev.pair_labels == 1).all()
    assert torch.equal(ev.sources, torch.arange(6)[:, None].expand(6, 2))
    with torch.no_grad():
        assert torch.equal(ev.prediction, m.run(b).prediction)  # eval is deterministic


def test_l_ap_uses_the_pseudo_labels() -> None:
    m = model(p_replace=1.0).train()
    with torch.no_grad():  # make both pairwise heads predict "paired" with certainty
        for head in m.ap.values():
            head[-1].weight.zero_()
            head[-1].bias.copy_(torch.tensor([-20.0, 20.0]))
    b = make_batch()
    out = m.run(b, generator=torch.Generator().manual_seed(0))
    assert float(out.l_ap.detach()) > 30  # all labels are 0 ("replaced"): two confident mistakes
    m.eval()
    with torch.no_grad():
        assert float(m.run(b).l_ap) < 1e-6  # eval: labels 1, the heads are right


def test_determinism_with_seed() -> None:
    b = make_batch()
    a = model(seed=2).train().run(b, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(9)
    c = model(seed=2).train().run(b, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.sources, c.sources)
    assert model(seed=2).eval().run(b).prediction.equal(model(seed=2).eval().run(b).prediction)


def test_tiny_mmsa_train_and_evaluate(tmp_path) -> None:
    import json

    import numpy as np

    from pipelines.datasets.mmsa import make_synthetic_mmsa
    from pipelines.recipes import RecipeContext, get

    path = make_synthetic_mmsa(tmp_path / "tiny.pkl", n=(24, 8, 8), dims=(16, 5, 6), lengths=(5, 6, 5))
    ctx = RecipeContext(
        data_dir=tmp_path,
        checkpoints_dir=tmp_path / "ck",
        cache_dir=tmp_path / "cache",
        epochs=2,
        options={"path": str(path), "batch_size": "8", "enc_layers": "1", "fusion_layers": "1"},
    )
    rec = get("tecafn", "mmsa")
    out_dir = rec.train(ctx)
    card = json.loads((out_dir / "card.json").read_text())
    assert card["model"] == "tecafn" and card["config"]["fusion_layers"] == 1
    assert card["training"]["regression_loss"] == "l1"
    m = rec.evaluate(ctx, "test")
    assert m["n"] == 8 and all(np.isfinite(m[k]) for k in ("mae", "corr", "acc2_has0", "acc7"))
    assert m["mae"] == pytest.approx(card["metrics"]["test"]["mae"], rel=1e-5)  # eval: no replacement
