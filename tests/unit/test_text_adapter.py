"""LoRA text adapter: merged == wrapped, the prefix path == the encoder, only the adapter learns,
and a head that owns one round-trips through safetensors and gets its tuned encoder at load."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from models.checkpoint import save_checkpoint
from models.production import EtaFusionHead
from models.registry import load_head
from models.text_adapter import TextAdapter
from models.text_encoder import TEXT_ENCODER_VERSION, TextEncoder, encoder_for_head
from pipelines.feature_cache import FeatureStore, content_key
from pipelines.training.encoder_tuning import encode_prefix, pooled_from_prefix, run_layers

TEXTS = [
    "@united thanks for the quick rebooking, great crew!",
    "@USAirways 3 hours on the tarmac and no information. Never again.",
    "Flight 1234 departs at 6pm from gate B12",
    "",
    "ok",
]


@pytest.fixture(scope="module")
def enc() -> TextEncoder:
    return TextEncoder()


def _adapter(seed: int = 0, layers: tuple[int, ...] = (4, 5)) -> TextAdapter:
    """An adapter with non-zero B (a fresh one is the identity), as after some training."""
    torch.manual_seed(seed)
    ad = TextAdapter(layers=layers, rank=4, alpha=8.0, dropout=0.0)
    with torch.no_grad():
        for k, p in ad.params.items():
            if k.endswith("_b"):
                p.normal_(0, 0.02)
    return ad


def _wrapped_pooled(enc: TextEncoder, ad: TextAdapter, texts: list[str]) -> torch.Tensor:
    model = ad.wrap(copy.deepcopy(enc.model)).eval()
    tok = enc.tokenize(texts)
    with torch.no_grad():
        out = model(**tok).last_hidden_state
    return TextEncoder.mean_pool(out, tok["attention_mask"])


def test_fresh_adapter_is_identity_and_merge_matches_wrap(enc: TextEncoder) -> None:
    frozen = enc.encode(TEXTS)
    fresh = TextAdapter(layers=(5,), rank=4)
    torch.testing.assert_close(enc.with_adapter(fresh).encode(TEXTS), frozen, atol=1e-6, rtol=0)
    ad = _adapter()
    tuned = enc.with_adapter(ad)
    merged = tuned.encode(TEXTS)
    assert (merged - frozen).abs().max() > 1e-3  # the adapter changes the features
    torch.testing.assert_close(merged, _wrapped_pooled(enc, ad, TEXTS), atol=2e-5, rtol=0)
    # the base encoder is untouched, and the versions keep cached features apart
    torch.testing.assert_close(enc.encode(TEXTS), frozen, atol=0, rtol=0)
    assert enc.version == TEXT_ENCODER_VERSION and tuned.version == f"{TEXT_ENCODER_VERSION}+{ad.tag}"
    assert ad.tag != _adapter(seed=1).tag
    with pytest.raises(ValueError):
        tuned.with_adapter(ad)  # never stack adapters


def test_prefix_path_equals_encoder(enc: TextEncoder, tmp_path: Path) -> None:
    ad = _adapter()
    prefix = encode_prefix(enc, TEXTS, start=ad.first_layer, cache_dir=tmp_path)
    store = FeatureStore(tmp_path, enc.version)  # the pass cached the frozen embeddings
    cached = torch.stack([torch.from_numpy(store.get(content_key(enc.version, t.encode()))) for t in TEXTS])
    torch.testing.assert_close(cached, enc.encode(TEXTS), atol=2e-5, rtol=0)
    model = ad.wrap(copy.deepcopy(enc.model)).eval()
    with torch.no_grad():
        via_prefix = pooled_from_prefix(model, prefix, [prefix.row[t] for t in TEXTS], range(4, 6))
    torch.testing.assert_close(via_prefix, enc.with_adapter(ad).encode(TEXTS), atol=2e-5, rtol=0)


def test_only_adapter_parameters_get_gradients(enc: TextEncoder) -> None:
    ad = _adapter()
    model = ad.wrap(copy.deepcopy(enc.model)).train()
    tok = enc.tokenize(TEXTS[:3])
    h = model.embeddings(input_ids=tok["input_ids"], token_type_ids=tok["token_type_ids"])
    pooled = TextEncoder.mean_pool(run_layers(model, range(6), h, tok["attention_mask"]), tok["attention_mask"])
    pooled[:, :8].sum().backward()
    adapter_ids = {id(p) for p in ad.parameters()}
    for name, p in model.named_parameters():
        if id(p) in adapter_ids:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert len(adapter_ids) == 2 * 2 * 6  # A and B for 6 targets in 2 layers


def test_head_with_adapter_round_trips_and_serves_tuned(enc: TextEncoder, tmp_path: Path) -> None:
    from pipelines.scoring import InferenceEngine

    torch.manual_seed(0)
    cfg = {"layers": [5], "rank": 4, "alpha": 8.0}
    head = EtaFusionHead({"text": 384}, hidden=16, text_adapter=cfg).eval()
    with torch.no_grad():
        next(p for k, p in head.text_adapter.params.items() if k.endswith("_b")).normal_(0, 0.05)
    save_checkpoint(head, tmp_path / "production", command="pytest")
    loaded = load_head("production", tmp_path)
    assert loaded.config() == head.config() and loaded.text_adapter is not None
    for (k, a), (_, b) in zip(head.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert loaded.text_adapter.tag == head.text_adapter.tag
    tuned = encoder_for_head(loaded, enc)
    assert tuned is not enc and tuned.version.endswith(head.text_adapter.tag)
    assert encoder_for_head(loaded, tuned) is tuned  # idempotent: never merged twice
    engine = InferenceEngine(loaded, text_encoder=enc)
    assert engine.frozen_text is enc and engine.text.version == tuned.version
    torch.testing.assert_close(engine.encode(TEXTS[:2]).x["text"], tuned.encode(TEXTS[:2]), atol=2e-5, rtol=0)
    # a head without an adapter keeps the shared frozen encoder itself
    assert InferenceEngine(EtaFusionHead({"text": 384}, hidden=16), text_encoder=enc).text is enc


def test_default_adapter_checkpoint_is_small(tmp_path: Path) -> None:
    head = EtaFusionHead(text_adapter={"layers": [4, 5], "rank": 16, "alpha": 32.0})
    save_checkpoint(head, tmp_path / "p")
    assert (tmp_path / "p" / "model.safetensors").stat().st_size < 5 * 2**20
