"""AMSGFN: shapes, masks, gradient paths, the losses' defining properties, per-sample gather."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.amsgfn import AMSGFN, AMSGFNConfig, align_by_pooling, alignment_loss, kuda_nce
from models.trimodal import TriModalBatch

DT, DA, DV = 16, 8, 6


def make_batch(
    b: int = 6, lt: int = 7, la: int = 11, lv: int = 5, seed: int = 0, missing: dict[int, list[int]] | None = None
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


def pad(batch: TriModalBatch, extra: int = 4) -> TriModalBatch:
    """The same batch with `extra` more padded positions on every view."""
    out = {}
    for name in ("text", "audio", "vision"):
        x, m = batch.view(name)
        out[name] = F.pad(x, (0, 0, 0, extra))
        out[f"{name}_mask"] = F.pad(m, (0, extra), value=False)
    return TriModalBatch(present=batch.present, **out)


def config(**kw) -> AMSGFNConfig:
    base = dict(text_dim=DT, audio_dim=DA, vision_dim=DV, d_model=32, ffn_dim=64, n_heads=4, proj_dim=16, n_layers=2)
    base.update(kw)
    return AMSGFNConfig(**base)


def model(seed: int = 0, **kw) -> AMSGFN:
    torch.manual_seed(seed)
    return AMSGFN(config(**kw))


def test_shapes_regression_and_classification() -> None:
    b = make_batch()
    out = model().eval()(b)
    assert out.pred.shape == (6,)
    assert out.aux_loss.dim() == 0
    w = out.extras["modality_weights"]
    assert w.shape == (6, 3)
    assert torch.allclose(w.sum(1), torch.ones(6))
    assert out.extras["path_predictions"].shape == (6, 3, 1)
    clf = model(n_outputs=4).eval()
    full = clf.run(b)
    assert full.prediction.shape == (6, 4)
    loss, parts = clf.loss(full, torch.tensor([0, 1, 2, 3, 0, 1]))
    assert torch.isfinite(loss) and parts["task"] > 0


def test_linear_alignment_shapes() -> None:
    m = model(align="linear", text_len=9, audio_len=12, vision_len=6).eval()
    out = m.run(make_batch())
    assert out.prediction.shape == (6,)
    assert torch.isfinite(out.prediction).all()


def test_missing_modality_never_selected_even_when_favoured() -> None:
    m = model().eval()
    with torch.no_grad():  # make the selector strongly prefer vision, then audio
        m.selector[-1].bias.copy_(torch.tensor([0.0, 50.0, 100.0]))
    b = make_batch(missing={2: [0, 1, 2], 1: [2]})
    out = m.run(b)
    assert (out.weights[:3, 2] == 0).all()
    assert out.weights[2, 1] == 0
    assert out.dominant.tolist() == [1, 1, 0, 2, 2, 2]
    assert torch.isfinite(out.prediction).all()


@pytest.mark.parametrize("align", ["pool", "linear"])
def test_padding_does_not_change_outputs(align: str) -> None:
    m = model(align=align, text_len=12, audio_len=16, vision_len=10).eval()
    b = make_batch(missing={2: [1]})
    with torch.no_grad():
        a, p = m.run(b), m.run(pad(b, 3))
    assert torch.allclose(a.prediction, p.prediction, atol=1e-5)
    assert torch.allclose(a.weights, p.weights, atol=1e-6)
    assert torch.equal(a.dominant, p.dominant)


def test_align_by_pooling_segments() -> None:
    x = torch.arange(6, dtype=torch.float32).view(1, 6, 1)
    mask = torch.tensor([[True, True, True, True, False, False]])
    out = align_by_pooling(x, mask, torch.tensor([2]), width=3)
    assert out.squeeze().tolist() == [0.5, 2.5, 0.0]  # frames {0,1}, {2,3}; slot 2 is past the grid
    up = align_by_pooling(x, torch.tensor([[True] + [False] * 5]), torch.tensor([3]), width=3)
    assert up.squeeze().tolist() == [0.0, 0.0, 0.0]  # a single frame is repeated (its value is 0)


def test_every_parameter_gets_gradient() -> None:
    m = model().train()
    out = m(make_batch())
    (out.pred.pow(2).mean() + out.aux_loss).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_selector_gets_gradient_only_through_the_weighting() -> None:
    m = model().train()
    torch.manual_seed(1)
    out = m.run(make_batch())
    out.weights.retain_grad()
    loss, _ = m.loss(out, torch.randn(6))
    loss.backward()
    params = list(m.selector.parameters())
    direct = [p.grad.clone() for p in params]
    # Push dL/ds back through s alone: if the MLP had any other path to the loss this would differ.
    torch.manual_seed(1)
    out2 = m.run(make_batch())
    via_s = torch.autograd.grad(out2.weights, params, grad_outputs=out.weights.grad)
    for a, b in zip(direct, via_s, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in direct)


def test_dominant_path_is_gathered_per_sample() -> None:
    m = model().eval()
    b = make_batch()
    forced = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]] * 2)
    m.select = lambda pooled, present: (forced, forced.argmax(-1))  # type: ignore[method-assign]
    with torch.no_grad():
        out = m.run(b)
    assert out.dominant.tolist() == [0, 1, 2, 0, 1, 2]
    rows = torch.arange(6)
    assert torch.equal(out.prediction, out.path_predictions[rows, out.dominant, 0])
    # The three paths really differ, so picking the wrong one would be visible.
    assert (out.path_predictions[:, 0] - out.path_predictions[:, 1]).abs().max() > 1e-4
    # Each sample alone (same s) gives its own path's prediction: paths do not mix samples.
    for i in range(6):
        one = TriModalBatch(**{k: getattr(b, k)[i : i + 1] for k in b.__dataclass_fields__})
        m.select = lambda pooled, present, i=i: (forced[i : i + 1], forced[i : i + 1].argmax(-1))
        with torch.no_grad():
            single = m.run(one)
        assert torch.allclose(single.prediction, out.prediction[i : i + 1], atol=1e-5)


def test_nt_xent_lower_for_aligned_pairs_and_matches_eq1() -> None:
    torch.manual_seed(0)
    z = torch.randn(8, 16)
    present = torch.ones(8, 3, dtype=torch.bool)
    aligned = torch.stack([z, z + 0.01 * torch.randn(8, 16), z + 0.01 * torch.randn(8, 16)], 1)
    shuffled = torch.stack([z, z[torch.randperm(8)], torch.randn(8, 16)], 1)
    assert alignment_loss(aligned, present, 0.1) < alignment_loss(shuffled, present, 0.1)
    # Eq. 1-2 by hand for one pair (t, a) when vision is missing everywhere.
    present[:, 2] = False
    zt, za = F.normalize(shuffled[:, 0], dim=-1), F.normalize(shuffled[:, 1], dim=-1)
    sim = zt @ za.t() / 0.1
    by_hand = -(sim.diagonal() - sim.logsumexp(1)).mean() - (sim.diagonal() - sim.logsumexp(0)).mean()
    assert torch.allclose(alignment_loss(shuffled, present, 0.1), by_hand, atol=1e-5)


def test_alignment_pairs_skip_missing_samples() -> None:
    torch.manual_seed(0)
    proj = torch.randn(6, 3, 8)
    present = torch.ones(6, 3, dtype=torch.bool)
    present[0, 1] = False
    changed = proj.clone()
    changed[0, 1] = 100 * torch.randn(8)  # garbage in a missing view must not matter
    assert torch.allclose(alignment_loss(proj, present, 0.1), alignment_loss(changed, present, 0.1))


def test_kuda_nce_formula_and_property() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(5, 8), torch.randn(5, 8)
    xn, yn = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    cos = xn @ yn.t()
    assert torch.allclose(kuda_nce(x, y), -(cos.diagonal() - cos.logsumexp(1)).mean(), atol=1e-6)
    assert kuda_nce(x, x) < kuda_nce(x, y)
    # No temperature: the loss is bounded below by log(N) - 1 - 1 (cos in [-1, 1]).
    assert kuda_nce(x, x) > math.log(5) - 2


def test_determinism_with_seed() -> None:
    b = make_batch()
    a = model(seed=3).eval().run(b).prediction
    c = model(seed=3).eval().run(b).prediction
    assert torch.equal(a, c)
    d = model(seed=4).eval().run(b).prediction
    assert not torch.equal(a, d)


def test_training_reduces_loss_on_a_learnable_target() -> None:
    torch.manual_seed(0)
    b = make_batch(b=8, seed=5)
    y = b.audio[:, 0, 0] * 2  # a function of one view
    m = model(dropout=0.0, n_layers=1, d_model=16, ffn_dim=32).train()
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    first = None
    for _ in range(25):
        out = m.run(b)
        loss, parts = m.loss(out, y)
        first = first if first is not None else parts["task"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts["task"] < 0.5 * first


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
        options={
            "path": str(path),
            "batch_size": "8",
            "d_model": "16",
            "ffn_dim": "32",
            "n_heads": "2",
            "n_layers": "1",
        },
    )
    rec = get("amsgfn", "mmsa")
    out_dir = rec.train(ctx)
    card = json.loads((out_dir / "card.json").read_text())
    assert card["model"] == "amsgfn" and card["config"]["d_model"] == 16
    assert card["training"]["regression_loss"] == "mse"
    m = rec.evaluate(ctx, "test")
    assert m["n"] == 8 and all(np.isfinite(m[k]) for k in ("mae", "corr", "acc2_has0", "acc7"))
    assert m["mae"] == pytest.approx(card["metrics"]["test"]["mae"], rel=1e-5)  # reload reproduces


def test_view_dropout_keeps_a_view_and_only_acts_in_training() -> None:
    from models.trimodal import drop_views

    b = make_batch(b=64, missing={2: list(range(32))})
    g = torch.Generator().manual_seed(0)
    dropped = [drop_views(b, 0.3, g).present for _ in range(20)]
    for pres in dropped:
        assert pres.any(1).all()  # never a sample with no view
        assert not (pres & ~b.present).any()  # never invents a view
    rate = 1 - torch.stack(dropped).float().sum() / (20 * b.present.float().sum())
    assert 0.2 < rate < 0.33  # about p, a little less because of the keep-one rule
    m = model(view_dropout=0.5).eval()
    with torch.no_grad():
        assert torch.equal(m.run(b).present, b.present)
