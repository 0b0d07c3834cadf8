"""Registry + checkpoint round trip: save -> load gives the same head and identical outputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.production import EtaFusionHead
from models.registry import HeadOutput, ScoringHead, available_heads, head_class, load_head


def _batch(b: int = 5, seed: int = 0) -> tuple[dict, dict, dict, dict]:
    g = torch.Generator().manual_seed(seed)
    x = {"text": torch.randn(b, 384, generator=g), "image": torch.randn(b, 1280, generator=g)}
    u = {k: torch.randn(v.shape, generator=g) for k, v in x.items()}
    n = {"text": torch.tensor([0.0, 1, 3, 0, 2]), "image": torch.tensor([0.0, 0, 1, 0, 4])}
    m = {"text": torch.ones(b, dtype=torch.bool), "image": torch.tensor([True, False, True, False, True])}
    return x, u, n, m


def test_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    head = EtaFusionHead(hidden=32, eta_init=0.3).eval()
    with torch.no_grad():
        head.eta_raw.add_(0.1)  # make sure trained-looking parameters survive the trip
    save_checkpoint(head, tmp_path / "production", command="pytest", metrics={"x": 1.0})
    card = json.loads((tmp_path / "production" / "card.json").read_text())
    assert card["architecture"] == "production" and card["labels"] == ["negative", "neutral", "positive"]
    assert card["views"] == ["text", "image"] and card["command"] == "pytest"
    for key in ("name", "version", "config", "date", "machine", "feature_dims"):
        assert key in card
    loaded = load_head("production", tmp_path)
    assert isinstance(loaded, ScoringHead) and not loaded.training
    assert loaded.views == head.views and loaded.feature_dims == head.feature_dims
    out_a, out_b = head(*_batch()), loaded(*_batch())
    assert isinstance(out_b, HeadOutput)
    assert torch.equal(out_a.logits, out_b.logits)
    for v in out_a.modality_weights:
        assert torch.equal(out_a.modality_weights[v], out_b.modality_weights[v])
    assert available_heads(tmp_path) == ["production"]
    assert head_class("production") is EtaFusionHead
    assert load_checkpoint(tmp_path / "production").config() == head.config()


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_head("production", tmp_path)


def test_shipped_production_checkpoint_loads() -> None:
    """The committed checkpoint (if present) loads and gives valid probabilities."""
    from models.registry import DEFAULT_CHECKPOINTS_DIR

    if not (DEFAULT_CHECKPOINTS_DIR / "production" / "card.json").exists():
        import pytest

        pytest.skip("no trained production checkpoint in models/checkpoints")
    head = load_head("production")
    assert set(head.labels) == {"negative", "neutral", "positive"}
    size = sum(p.stat().st_size for p in (DEFAULT_CHECKPOINTS_DIR / "production").iterdir())
    assert size < 5 * 2**20
    b = 3
    x = {v: torch.zeros(b, d) for v, d in head.feature_dims.items()}
    x["text"] = torch.nn.functional.normalize(torch.randn(b, head.feature_dims["text"]), dim=-1)
    mask = {v: torch.zeros(b, dtype=torch.bool) for v in head.views}
    mask["text"][:] = True
    n = {v: torch.zeros(b) for v in head.views}
    out = head(x, {v: torch.zeros_like(t) for v, t in x.items()}, n, mask)
    p = out.logits.softmax(-1)
    assert p.shape == (b, 3) and torch.allclose(p.sum(-1), torch.ones(b))
    s = head.score(out.logits)
    assert ((s >= -1) & (s <= 1)).all()
