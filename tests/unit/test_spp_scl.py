"""SPP-SCL: shapes, HA layer weights, gradients, losses, the conditional step, determinism, and a
tiny real training run on an MVSA-Single slice (skipped when the data is absent)."""

from __future__ import annotations

import math

import pytest
import torch

from models.spp_scl import (
    SPPSCL,
    CrossModalFusion,
    LayerAttention,
    SPPSCLBatch,
    SPPSCLConfig,
    two_step_update,
)
from models.spp_scl_losses import alignment_check, check_from_similarity, inter_modal_loss, supcon_loss
from tests.conftest import dataset_path

C, L = 384, 4


def make_batch(b: int = 8, n: int = 10, seed: int = 0, image: bool = True) -> SPPSCLBatch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, n + 1, (b,), generator=g)
    lengths[0] = n
    tokens = torch.randn(b, L, n, C, generator=g)
    for i, ln in enumerate(lengths.tolist()):
        tokens[i, :, ln:] = 0
    return SPPSCLBatch(
        torch.randn(b, L, C, generator=g),
        tokens,
        lengths,
        torch.rand(b, 1280, 7, 7, generator=g) if image else None,
        torch.arange(b) % 3,
    )


def test_shapes_multimodal_and_text_only() -> None:
    torch.manual_seed(0)
    m = SPPSCL(SPPSCLConfig()).eval()
    b = make_batch()
    m.set_bank(make_batch(seed=1))
    out = m(b)
    assert out.logits.shape == (8, 3) and out.text.shape == (8, 32) and out.image.shape == (8, 32)
    assert out.layer_weights.shape == (8, 4)
    assert m.bank_image.shape == (8, 32)
    t = SPPSCL(SPPSCLConfig(num_classes=2, use_image=False)).eval()
    out = t(make_batch(image=False))
    assert out.logits.shape == (8, 2) and out.image is None


def test_layer_weights_are_sigmoid_gates_and_respond_to_cls() -> None:
    torch.manual_seed(0)
    la = LayerAttention(4)
    cls = torch.randn(5, 4, C)
    w = la(cls)
    assert w.shape == (5, 4) and bool(((w > 0) & (w < 1)).all())
    # Depends on the [CLS] states only through their per-layer channel means.
    shifted = cls - cls.mean(-1, keepdim=True) + cls.mean(-1, keepdim=True)
    assert torch.allclose(la(shifted), w, atol=1e-6)
    with torch.no_grad():
        la.fc1.weight.copy_(torch.eye(4))
        la.fc2.weight.copy_(torch.eye(4))
        la.fc2.bias.zero_()
    big = torch.zeros(1, 4, C)
    big[0, 2] = 5.0  # layer 3 has a large [CLS] mean -> it gets the largest weight
    w = la(big).detach()
    assert int(w.argmax()) == 2 and math.isclose(w[0, 0].item(), 0.5, abs_tol=1e-6)


def test_text_branch_ignores_padding() -> None:
    torch.manual_seed(0)
    m = SPPSCL(SPPSCLConfig(use_image=False)).eval()
    b = make_batch(image=False)
    padded = SPPSCLBatch(
        b.text_cls, torch.cat([b.text_tokens, torch.randn(8, L, 5, C)], 2), b.text_lengths, None, b.labels
    )
    assert torch.allclose(m(b).logits, m(padded).logits, atol=1e-5)


def test_gradient_reaches_every_trainable_part() -> None:
    torch.manual_seed(0)
    m = SPPSCL(SPPSCLConfig()).train()
    out = m(make_batch(), context="batch")
    y = torch.arange(8) % 3
    loss = (
        torch.nn.functional.cross_entropy(out.logits, y)
        + supcon_loss(out.text, y)
        + supcon_loss(out.image, y)
        + inter_modal_loss(out.image, out.text, y)
    )
    loss.backward()
    for name in (
        "text.layer_attention.fc1.weight",
        "text.lstm.weight_ih_l0",
        "image.conv.0.weight",
        "fusion.q_i.0.weight",
        "fusion.k_t.0.weight",
        "classifier.4.weight",
    ):
        g = dict(m.named_parameters())[name].grad
        assert g is not None and float(g.abs().sum()) > 0, name


def test_supcon_falls_when_same_label_pairs_move_together() -> None:
    torch.manual_seed(0)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    z = torch.randn(6, 16)
    centers = torch.randn(3, 16) * 3
    before = supcon_loss(z, y)
    closer = supcon_loss(0.3 * z + centers[y], y)
    assert float(closer) < float(before)
    assert float(supcon_loss(torch.randn(3, 16), torch.tensor([0, 1, 2]))) == 0.0  # no positives


def test_clm_is_low_when_pairs_align_by_label_and_high_when_crossed() -> None:
    torch.manual_seed(0)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    protos = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    img = protos[y] + 0.01 * torch.randn(6, 16)
    txt_aligned = protos[y] + 0.01 * torch.randn(6, 16)
    txt_crossed = protos[(y + 1) % 3] + 0.01 * torch.randn(6, 16)
    aligned, crossed = inter_modal_loss(img, txt_aligned, y), inter_modal_loss(img, txt_crossed, y)
    assert float(aligned) < 0.1 * float(crossed)
    # Perfect class alignment: each image splits its mass evenly over its 2 same-label texts.
    assert math.isclose(float(aligned), math.log(2), abs_tol=0.05)
    # Defining formula (Eq. 6, image rows vs text columns, positives incl. the pair), by hand.
    a, t = torch.randn(4, 8), torch.randn(4, 8)
    yy = torch.tensor([0, 0, 1, 2])
    s = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).T / 0.07
    per = []
    for m in range(4):
        pos = [n for n in range(4) if yy[n] == yy[m]]
        per.append(-sum(float(s[m, n] - torch.logsumexp(s[m], 0)) for n in pos) / len(pos))
    assert math.isclose(float(inter_modal_loss(a, t, yy)), sum(per) / 4, rel_tol=1e-5)


def test_condition_fires_exactly_below_floor_two_thirds_c_mask() -> None:
    y = torch.tensor([0, 0, 1])  # c_mask = 4 + 1 = 5 -> threshold floor(10/3) = 3
    diag = torch.eye(3) * 0.9
    # c = entries strictly below d = mean(diag); build S with exactly c such entries.
    for c in range(0, 7):
        s = diag.clone()
        off = [(i, j) for i in range(3) for j in range(3) if i != j]
        for k, (i, j) in enumerate(off):
            s[i, j] = 0.1 if k < c else 0.95
        chk = check_from_similarity(s, y)
        assert chk.c == c and chk.c_mask == 5 and chk.threshold == 3
        assert chk.fire == (c < 3)
    # Via features: cosine S, perfectly aligned pairs -> many entries below d -> no second step.
    protos = torch.eye(3)
    assert not alignment_check(protos[y], protos[y], y).fire


def test_cmf_bank_mode_makes_predictions_batch_independent() -> None:
    torch.manual_seed(0)
    cmf = CrossModalFusion(32, 0.2).eval()
    ip, tp = torch.randn(6, 32), torch.randn(6, 32)
    ctx = (torch.randn(10, 32), torch.randn(10, 32))
    full = cmf(ip, tp, ctx)
    part = cmf(ip[:2], tp[:2], ctx)
    assert torch.allclose(full[:2], part, atol=1e-6)
    assert not torch.allclose(cmf(ip, tp)[:2], cmf(ip[:2], tp[:2]), atol=1e-4)  # in-batch mode depends on B


def _train_a_bit(seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    m = SPPSCL(SPPSCLConfig())
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    b = make_batch()
    for _ in range(3):
        two_step_update(m, opt, b)
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_deterministic_with_seed() -> None:
    assert torch.equal(_train_a_bit(3), _train_a_bit(3))
    assert not torch.equal(_train_a_bit(3), _train_a_bit(4))


def test_two_step_update_takes_second_step_only_when_condition_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    import models.spp_scl as mod
    from models.spp_scl_losses import AlignmentCheck

    for fire in (True, False):
        monkeypatch.setattr(mod, "alignment_check", lambda *a, _f=fire, **k: AlignmentCheck(0.5, 0, 9, 6, _f))
        torch.manual_seed(0)
        m = SPPSCL(SPPSCLConfig())
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        s = two_step_update(m, opt, make_batch())
        assert s.second_step is fire and (s.loss_clm > 0) is fire
        assert opt.state[next(iter(m.parameters()))]["step"] == (2 if fire else 1)


def _ctx(tmp_path, **kw):
    from pipelines.recipes import RecipeContext

    data = dataset_path("mvsa-single").parent
    return RecipeContext(data_dir=data, checkpoints_dir=tmp_path / "ckpt", cache_dir=tmp_path / "cache", seed=0, **kw)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_tiny_training_run_on_mvsa_single_beats_majority(tmp_path) -> None:
    """Text branch on a 300-per-split slice: validation accuracy above the majority class."""
    import json

    from pipelines.recipes import get
    from pipelines.training.spp_scl import SPECS, prepare

    ctx = _ctx(tmp_path, epochs=15, limit=300, options={"use_image": "false", "lr": 1e-3, "patience": 15, "threads": 1})
    r = get("spp-scl", "mvsa-single")
    out = r.train(ctx)
    card = json.loads((out / "card.json").read_text())
    prep = prepare(ctx, SPECS["mvsa-single"], with_image=False)
    yv = prep.labels[prep.split_idx["val"]]
    majority = float((yv == yv.mode().values).float().mean())
    assert card["metrics"]["val"]["accuracy"] > majority, (card["metrics"]["val"], majority)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_multimodal_recipe_end_to_end_on_a_small_slice(tmp_path) -> None:
    """Image feature maps, two-step training, checkpoint, reload and evaluation agree."""
    import json

    from pipelines.recipes import get

    ctx = _ctx(tmp_path, epochs=2, limit=40, options={"batch_size": 16, "threads": 1})
    r = get("spp-scl", "mvsa-single")
    out = r.train(ctx)
    assert (out / "model.safetensors").exists()
    card = json.loads((out / "card.json").read_text())
    assert card["config"]["use_image"] and card["data"]["splits"] == {"train": 40, "val": 40, "test": 40}
    ev = r.evaluate(ctx, "val")
    assert math.isclose(ev["accuracy"], card["metrics"]["val"]["accuracy"], abs_tol=1e-9)
    assert {"baseline_lr_accuracy", "batch64_accuracy", "f1_weighted"} <= set(ev)
