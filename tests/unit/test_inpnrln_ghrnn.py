"""INPNRLN-MD, GHRNN-CMA and the late-fusion baseline: shapes, masks, gradients, the GHRNN gate,
determinism, and a tiny MMSA-format pickle through train + evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.ghrnn_cma import GHRNN, GHRNNCell, GhrnnCma, GhrnnCmaConfig
from models.inpnrln_md import ELN, ELNConfig, InpnrlnConfig, InpnrlnMD
from models.late_fusion import LateFusion, LateFusionConfig
from models.trimodal import TriModalBatch

DT, DA, DV = 12, 5, 7


def make_model(kind: str, n_out: int = 1, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(text_dim=DT, audio_dim=DA, vision_dim=DV, n_outputs=n_out, **kw)
    if kind == "inpnrln":
        return InpnrlnMD(InpnrlnConfig(**common))
    if kind == "ghrnn":
        return GhrnnCma(GhrnnCmaConfig(**common))
    return LateFusion(LateFusionConfig(**common))


def make_batch(b: int = 4, lt: int = 6, la: int = 9, lv: int = 8, seed: int = 1) -> TriModalBatch:
    g = torch.Generator().manual_seed(seed)
    tl = torch.tensor([lt, 3, 5, 2][:b] + [lt] * max(0, b - 4))
    al = torch.tensor([la, 4, 1, 7][:b] + [la] * max(0, b - 4))
    vl = torch.tensor([lv, 8, 2, 5][:b] + [lv] * max(0, b - 4))

    def seq(length: int, d: int, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.arange(length)[None] < lens[:, None]
        return torch.randn(b, length, d, generator=g) * m.unsqueeze(-1), m

    t, tm = seq(lt, DT, tl)
    a, am = seq(la, DA, al)
    v, vm = seq(lv, DV, vl)
    return TriModalBatch(t, tm, a, am, v, vm, torch.ones(b, 3, dtype=torch.bool))


def pad(batch: TriModalBatch, extra: int = 3, junk: float = 7.0) -> TriModalBatch:
    """More padding on every view, filled with junk (masked out)."""
    parts = {}
    for name in ("text", "audio", "vision"):
        x, m = batch.view(name)
        parts[name] = torch.cat([x, torch.full((x.shape[0], extra, x.shape[2]), junk)], 1)
        parts[f"{name}_mask"] = torch.cat([m, torch.zeros(m.shape[0], extra, dtype=torch.bool)], 1)
    return TriModalBatch(**parts, present=batch.present)


KINDS = ("inpnrln", "ghrnn", "late")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_out", [1, 3])
def test_shapes(kind: str, n_out: int) -> None:
    model = make_model(kind, n_out).eval()
    out = model(make_batch())
    assert out.pred.shape == ((4,) if n_out == 1 else (4, n_out))
    assert out.aux_loss.shape == () and torch.isfinite(out.pred).all()


@pytest.mark.parametrize("kind", KINDS)
def test_padding_does_not_change_outputs(kind: str) -> None:
    model = make_model(kind).eval()
    b = make_batch()
    assert torch.allclose(model(b).pred, model(pad(b)).pred, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_view_is_masked(kind: str) -> None:
    model = make_model(kind).eval()
    b = make_batch()
    present = b.present.clone()
    present[1, 1] = False  # sample 1 has no audio
    present[2, 2] = False  # sample 2 has no vision
    present[3, 0] = False  # sample 3 has no text
    b1 = TriModalBatch(b.text, b.text_mask, b.audio, b.audio_mask, b.vision, b.vision_mask, present)
    junk = TriModalBatch(
        b.text * 0 + 5, b.text_mask, b.audio * 0 - 3, b.audio_mask, b.vision + 9, b.vision_mask, present
    )
    p1, pj = model(b1).pred, model(junk).pred
    # features of a missing view never matter: compare sample-wise against a single-sample run
    for i, view in ((1, "audio"), (2, "vision"), (3, "text")):

        def one(batch: TriModalBatch, i: int = i) -> torch.Tensor:
            return model(
                TriModalBatch(
                    *(
                        getattr(batch, f)[i : i + 1]
                        for f in ("text", "text_mask", "audio", "audio_mask", "vision", "vision_mask", "present")
                    )
                )
            ).pred

        assert torch.allclose(one(b1), p1[i : i + 1], atol=1e-5)  # no batch coupling at eval
        zeroed = {
            "text": (b.text * 0, b.audio, b.vision),
            "audio": (b.text, b.audio * 0, b.vision),
            "vision": (b.text, b.audio, b.vision * 0),
        }[view]
        bz = TriModalBatch(zeroed[0], b.text_mask, zeroed[1], b.audio_mask, zeroed[2], b.vision_mask, present)
        assert torch.allclose(one(bz), p1[i : i + 1], atol=1e-5)
    assert torch.isfinite(pj).all()


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_all_parameters(kind: str) -> None:
    model = make_model(kind, dropout=0.0).train()
    b = make_batch(6)
    present = b.present.clone()
    present[5, 0] = False  # one sample without text: GHRNN-CMA's null query gets a gradient too
    b = TriModalBatch(b.text, b.text_mask, b.audio, b.audio_mask, b.vision, b.vision_mask, present)
    out = model(b)
    loss = out.pred.abs().mean() + out.aux_loss
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # positions beyond the longest sequence never receive gradient
    missing = [n for n in missing if not n.endswith("pos.table.weight")]
    assert not missing, missing
    if kind != "late":
        assert out.aux_loss.item() > 0


def test_aux_loss_only_in_training_and_only_for_present_pairs() -> None:
    model = make_model("inpnrln")
    b = make_batch()
    assert model.eval()(b).aux_loss.item() == 0.0
    no_av = TriModalBatch(
        b.text, b.text_mask, b.audio, b.audio_mask, b.vision, b.vision_mask, torch.tensor([[True, False, False]] * 4)
    )
    assert model.train()(no_av).aux_loss.item() == 0.0  # no (t,a) or (t,v) pair exists


def test_outer_product_of_missing_view_is_zero() -> None:
    model = make_model("inpnrln").eval()
    b = make_batch()
    no_audio = TriModalBatch(
        b.text, b.text_mask, b.audio, b.audio_mask, b.vision, b.vision_mask, torch.tensor([[True, False, True]] * 4)
    )
    r = model.encode(no_audio)
    assert torch.all(r["c_a"] == 0)


def test_eln_pooled_ignores_padding() -> None:
    torch.manual_seed(0)
    eln = ELN(DA, ELNConfig(dropout=0.0)).eval()
    x = torch.randn(1, 5, DA)
    m = torch.ones(1, 5, dtype=torch.bool)
    xp = torch.cat([x, torch.zeros(1, 4, DA)], 1)
    mp = torch.cat([m, torch.zeros(1, 4, dtype=torch.bool)], 1)
    assert torch.allclose(eln(x, m)[1], eln(xp, mp)[1], atol=1e-5)


def test_ghrnn_cell_gate() -> None:
    torch.manual_seed(0)
    cell = GHRNNCell(4, 3)
    x, h = torch.randn(2, 4), torch.randn(2, 3)
    with torch.no_grad():
        cell.h_z.weight.zero_()
        cell.x_z.weight.zero_()
        cell.x_z.bias.fill_(-50.0)  # gate closed: z = 0 -> the state is kept
        h1, z = cell(x, h)
        assert torch.allclose(z, torch.zeros_like(z), atol=1e-12) and torch.allclose(h1, h)
        cell.x_z.bias.fill_(50.0)  # gate open: z = 1 -> h = tanh(W'x + U'(z*h) + b)
        h2, z = cell(x, h)
        assert torch.allclose(h2, torch.tanh(cell.x_h(x) + cell.h_h(h)), atol=1e-6)
        cell.x_z.bias.fill_(0.0)  # z = 0.5: convex mix of h and the candidate computed from 0.5*h
        h3, z = cell(x, h)
        assert torch.allclose(h3, 0.5 * h + 0.5 * torch.tanh(cell.x_h(x) + cell.h_h(0.5 * h)), atol=1e-6)


def test_ghrnn_keeps_state_through_padding() -> None:
    torch.manual_seed(0)
    rnn = GHRNN(4, 3, layers=2).eval()
    x = torch.randn(2, 6, 4)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    seq, final = rnn(x, mask)
    assert torch.allclose(final[1], seq[1, 2]) and torch.allclose(final[0], seq[0, 5])
    _, f_short = rnn(x[1:, :3], mask[1:, :3])
    assert torch.allclose(f_short[0], final[1], atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic(kind: str) -> None:
    a, b = make_model(kind).eval(), make_model(kind).eval()
    batch = make_batch()
    assert torch.equal(a(batch).pred, b(batch).pred)


@pytest.mark.parametrize("model_name", ["inpnrln-md", "ghrnn-cma", "late-fusion"])
def test_tiny_mmsa_train_and_evaluate(tmp_path, model_name: str) -> None:
    from pipelines.datasets.mmsa import make_synthetic_mmsa
    from pipelines.recipes import RecipeContext, get

    path = make_synthetic_mmsa(tmp_path / "tiny.pkl", n=(24, 8, 8), dims=(16, 5, 6), lengths=(5, 6, 5))
    ctx = RecipeContext(
        data_dir=tmp_path,
        checkpoints_dir=tmp_path / "ck",
        cache_dir=tmp_path / "cache",
        epochs=2,
        options={"path": str(path), "batch_size": "8"},
    )
    rec = get(model_name, "mmsa")
    out_dir = rec.train(ctx)
    assert (out_dir / "model.safetensors").exists()
    card = json.loads((out_dir / "card.json").read_text())
    assert card["model"] == model_name and card["training"]["epochs_run"] == 2
    m = rec.evaluate(ctx, "test")
    for key in ("mae", "corr", "acc7", "acc5", "acc2_has0", "acc2_non0", "f1_has0", "f1_non0"):
        assert key in m and np.isfinite(m[key])
    assert m["line"].startswith("Acc-2 ") and m["n"] == 8
    assert m["mae"] == pytest.approx(card["metrics"]["test"]["mae"], rel=1e-5)  # reload reproduces


@pytest.mark.parametrize("kind", KINDS)
def test_view_dropout_only_in_training(kind: str) -> None:
    plain, dropped = make_model(kind).eval(), make_model(kind, view_dropout=0.5).eval()
    b = make_batch()
    assert torch.equal(plain(b).pred, dropped(b).pred)  # eval: no modality dropout
    dropped.train()
    torch.manual_seed(3)
    assert torch.isfinite(dropped(b).pred).all()
