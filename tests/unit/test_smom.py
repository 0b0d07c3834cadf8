"""SMOM: shapes, masks, gradients, L_cc, the eta term, the graph, determinism, a real MELD slice."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from models.smom import (
    SMOM,
    SMOMConfig,
    angular_adjacency,
    causal_running_mean,
    cross_view_mi_loss,
    graph_structure,
    sym_normalise,
    update_running_mean,
)

VIEWS = (("text", 12), ("audio", 5), ("visual", 7))


def _model(seed: int = 0, **kw) -> SMOM:
    torch.manual_seed(seed)
    base = {"views": VIEWS, "n_classes": 4, "hidden": 8, "n_layers": 3, "cc_dim": 5, "dropout": 0.0}
    return SMOM(SMOMConfig(**{**base, **kw})).eval()


def _batch(b: int = 3, t: int = 5, seed: int = 1, lengths: tuple[int, ...] = (5, 3, 1)):
    g = torch.Generator().manual_seed(seed)
    feats = {name: torch.randn(b, t, d, generator=g) for name, d in VIEWS}
    user = {name: torch.randn(b, t, d, generator=g) for name, d in VIEWS}
    counts = {name: torch.randint(0, 3, (b, t), generator=g) for name, _ in VIEWS}
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    return feats, user, counts, mask


def test_shapes() -> None:
    model = _model()
    feats, user, counts, mask = _batch()
    out = model(feats, mask, user, counts)
    assert out.logits.shape == (3, 5, 4)
    assert out.z.shape == out.h.shape == (3, 3, 5, 8)
    assert out.cluster.shape == (3, 3, 5, 5)
    assert torch.allclose(out.cluster.sum(-1), torch.ones(3, 3, 5))
    assert torch.isfinite(out.logits).all()


def test_padding_does_not_change_real_outputs() -> None:
    model = _model()
    feats, user, counts, mask = _batch()
    full = model(feats, mask, user, counts).logits
    for i, n in enumerate((5, 3, 1)):  # each dialogue alone, unpadded

        def cut(d: dict[str, torch.Tensor], i: int = i, n: int = n) -> dict[str, torch.Tensor]:
            return {k: v[i : i + 1, :n] for k, v in d.items()}

        one = model(cut(feats), mask[i : i + 1, :n], cut(user), cut(counts))
        assert torch.allclose(one.logits[0], full[i, :n], atol=1e-5)
    garbage = {k: torch.where(mask.unsqueeze(-1), v, torch.full_like(v, 1e3)) for k, v in feats.items()}
    assert torch.allclose(model(garbage, mask, user, counts).logits[mask], full[mask], atol=1e-5)


def test_missing_views_are_ignored() -> None:
    model = _model()
    feats, user, counts, mask = _batch()
    vm = torch.ones(3, 5, 3, dtype=torch.bool)
    vm[:, :, 1] = False  # no audio anywhere
    a = model(feats, mask, user, counts, view_mask=vm).logits
    noisy = {**feats, "audio": torch.randn_like(feats["audio"]) * 50}
    b = model(noisy, mask, user, counts, view_mask=vm).logits
    assert torch.allclose(a[mask], b[mask], atol=1e-5)
    c = model({"text": feats["text"]}, mask, user, counts).logits  # only the text view supplied
    assert torch.isfinite(c).all() and c.shape == a.shape


def test_gradients_reach_every_parameter() -> None:
    model = _model(eta=0.5).train()
    feats, user, counts, mask = _batch()
    counts = {k: torch.ones_like(v) for k, v in counts.items()}
    labels = torch.randint(0, 4, (3, 5))
    losses = model.loss(model(feats, mask, user, counts), labels)
    assert losses["cc"].abs() > 0
    losses["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_cc_loss_minimal_for_dependent_views() -> None:
    k, n = 4, 400
    lab = torch.arange(n) % k
    one_hot = torch.nn.functional.one_hot(lab, k).float()
    g = torch.Generator().manual_seed(0)
    independent = torch.nn.functional.one_hot(torch.randint(0, k, (n,), generator=g), k).float()
    dep = cross_view_mi_loss(one_hot, one_hot, lam=1.0)
    ind = cross_view_mi_loss(one_hot, independent, lam=1.0)
    assert math.isclose(float(dep), -3 * math.log(k), rel_tol=1e-4)  # -(I + H1 + H2) at its minimum
    assert float(dep) < float(ind) - 0.5 * math.log(k)
    for _ in range(5):  # nothing beats perfect dependence
        p1 = torch.softmax(torch.randn(n, k, generator=g) * 3, -1)
        p2 = torch.softmax(torch.randn(n, k, generator=g) * 3, -1)
        assert float(cross_view_mi_loss(p1, p2)) >= float(dep) - 1e-5


def test_eta_changes_head_input_only_with_history() -> None:
    on, off = _model(eta=0.7), _model(eta=0.0)
    feats, user, counts, mask = _batch()
    z_on, z_off = on(feats, mask, user, counts).z, off(feats, mask, user, counts).z
    for v, (name, _) in enumerate(VIEWS):
        has = (counts[name] > 0) & mask
        diff = (z_on[:, v] - z_off[:, v]).abs().sum(-1)
        assert (diff[~has] < 1e-6).all()
        assert (diff[has] > 1e-4).all()
    zero = {k: torch.zeros_like(v) for k, v in counts.items()}
    assert torch.allclose(on(feats, mask, user, zero).logits, off(feats, mask, user, zero).logits, atol=1e-6)


def test_causal_running_mean() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    authors = torch.randint(0, 5, (40,), generator=g)
    u, n = causal_running_mean(x, authors)
    for i in range(40):
        earlier = [j for j in range(i) if authors[j] == authors[i]]
        assert int(n[i]) == len(earlier)
        want = x[earlier].mean(0) if earlier else torch.zeros(6)
        assert torch.allclose(u[i], want, atol=1e-5)
    # the streaming update reproduces it
    state: dict[int, tuple[torch.Tensor, int]] = {}
    for i in range(40):
        a = int(authors[i])
        su, sn = state.get(a, (torch.zeros(6), 0))
        assert sn == int(n[i]) and torch.allclose(su, u[i], atol=1e-5)
        state[a] = update_running_mean(su, sn, x[i])


def test_determinism_with_seed() -> None:
    feats, user, counts, mask = _batch()
    outs = []
    for _ in range(2):
        model = _model(seed=3, dropout=0.3, modality_dropout=0.2).train()
        torch.manual_seed(7)
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        loss = model.loss(model(feats, mask, user, counts), torch.zeros(3, 5, dtype=torch.long))["loss"]
        loss.backward()
        opt.step()
        outs.append(model.eval()(feats, mask, user, counts).logits)
    assert torch.equal(outs[0], outs[1])


def test_adjacency_properties() -> None:
    g = torch.Generator().manual_seed(0)
    v, t = 3, 4
    node_mask = torch.ones(2, v * t, dtype=torch.bool)
    node_mask[1, [3, 7, 11]] = False  # dialogue 2 has 3 utterances
    node_mask[1, 4] = False  # utterance 0 of dialogue 2 lacks view 1
    s = graph_structure(v, node_mask)
    a = angular_adjacency(torch.randn(2, v * t, 6, generator=g), s)
    assert torch.allclose(a, a.transpose(1, 2))
    assert (a >= 0).all() and (a <= 1).all()
    diag = torch.diagonal(a, dim1=1, dim2=2)
    assert torch.equal(diag[node_mask], torch.ones(int(node_mask.sum())))
    assert (diag[~node_mask] == 0).all() and (a[1, 4] == 0).all()
    # rule 1: same view, any utterances; rule 2: same utterance, any views; nothing else
    assert s[0, 0, 3] and s[0, 0, 4] and not s[0, 0, 5]
    p = sym_normalise(a)
    assert torch.allclose(p, p.transpose(1, 2), atol=1e-6)
    assert torch.isfinite(p).all()


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_training_run_on_meld_beats_majority(tmp_path: Path) -> None:
    from tests.conftest import dataset_path

    data = dataset_path("meld").parent
    from collections import Counter

    from pipelines.recipes import RecipeContext, get

    cache = Path(__file__).resolve().parents[2] / ".voxpop" / "features"  # content-addressed, safe to share
    ctx = RecipeContext(
        data_dir=data,
        checkpoints_dir=tmp_path,
        cache_dir=cache,
        seed=0,
        epochs=8,
        limit=1500,
        options={"layers": 4, "hidden": 64, "lr": 2e-3, "eta": 0.5},
    )
    rec = get("smom", "meld-sentiment")
    path = rec.train(ctx)
    assert (path / "model.safetensors").exists() and (path / "card.json").exists()
    val = rec.evaluate(ctx, "val")
    from pipelines.training.smom import load_dataset

    ds = load_dataset("meld-sentiment", data, limit=1500)
    y_train = [lab for d in ds.split("train") for lab in d.labels]
    y_val = [lab for d in ds.split("val") for lab in d.labels]
    majority = Counter(y_train).most_common(1)[0][0]
    majority_acc = sum(y == majority for y in y_val) / len(y_val)
    assert val["accuracy"] > majority_acc, (val["accuracy"], majority_acc)
    assert {"precision_weighted", "recall_weighted", "f1_weighted", "recall_neutral"} <= set(val)


def _cut(d: dict[str, torch.Tensor], rows: slice, cols: slice) -> dict[str, torch.Tensor]:
    return {k: v[rows, cols] for k, v in d.items()}


def test_streaming_score_posts_matches_dialogue_forward() -> None:
    model = _model(eta=0.5)
    feats, user, counts, mask = _batch()
    # posts: utterance 2 of dialogue 0 (thread context = its utterances 0-1) and utterance 0 of dialogue 1
    x, u, n = ({k: torch.stack([v[0, 2], v[1, 0]]) for k, v in d.items()} for d in (feats, user, counts))
    present = {k: torch.ones(2, dtype=torch.bool) for k in feats}
    ctx = {
        "x": _cut(feats, slice(0, 2), slice(0, 2)),
        "u": _cut(user, slice(0, 2), slice(0, 2)),
        "n": _cut(counts, slice(0, 2), slice(0, 2)),
        "mask": {k: torch.ones(2, 2, dtype=torch.bool) for k in feats},
        "valid": torch.tensor([[True, True], [False, False]]),
    }
    logits = model.score_posts(x, u, n, present, context=ctx)
    r, c = slice(0, 1), slice(0, 3)
    thread = model(_cut(feats, r, c), mask[r, c], _cut(user, r, c), _cut(counts, r, c)).logits[0, 2]
    assert torch.allclose(logits[0], thread, atol=1e-5)
    r, c = slice(1, 2), slice(0, 1)
    alone = model(_cut(feats, r, c), mask[r, c], _cut(user, r, c), _cut(counts, r, c)).logits[0, 0]
    assert torch.allclose(logits[1], alone, atol=1e-5)
    assert not torch.allclose(logits[0], model.score_posts(x, u, n, present)[0], atol=1e-4)  # context matters


def test_smom_head_checkpoint_round_trip(tmp_path: Path) -> None:
    from models.checkpoint import load_checkpoint, save_checkpoint
    from models.registry import ScoringHead
    from models.smom import SMOMHead

    torch.manual_seed(0)
    cfg = SMOMConfig(views=(("text", 12), ("image", 6)), n_classes=3, hidden=8, n_layers=2)
    head = SMOMHead(cfg.to_dict(), ("negative", "neutral", "positive")).eval()
    path = save_checkpoint(head, tmp_path / "smom-x", dataset="unit")
    loaded = load_checkpoint(path)
    assert isinstance(loaded, ScoringHead) and loaded.views == ("text", "image")
    x = {"text": torch.randn(4, 12), "image": torch.randn(4, 6)}
    u = {"text": torch.randn(4, 12), "image": torch.zeros(4, 6)}
    n = {"text": torch.tensor([0.0, 1.0, 2.0, 0.0]), "image": torch.zeros(4)}
    mask = {"text": torch.ones(4, dtype=torch.bool), "image": torch.tensor([True, False, True, False])}
    a, b = head(x, u, n, mask).logits, loaded(x, u, n, mask).logits
    assert a.shape == (4, 3) and torch.allclose(a, b)
    assert torch.isfinite(loaded.score(a)).all()
    text_only = loaded({"text": x["text"]}, u, n, {"text": mask["text"]}).logits  # image view absent
    assert text_only.shape == (4, 3)
