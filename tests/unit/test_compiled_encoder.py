"""The compiled text encoder (VOXPOP_SCORER_COMPILE): eager's numbers, one compile, clear refusals."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from models.production import EtaFusionHead
from pipelines import compiled
from pipelines.quantize import cpu_has_native_bf16
from pipelines.scoring import InferenceEngine

TEXTS = [
    "ok",
    "",
    "the flight was delayed for three hours and nobody told us anything at all",
    "thanks!",
    "@united lost my bag again, second time this month #fail",
    "great crew",
    "x" * 400,
    "fine",
]
needs_cc = pytest.mark.skipif(
    compiled.compiler_missing() is not None,
    reason=f"Inductor cannot build CPU kernels here: {compiled.compiler_missing()}",
)


@pytest.fixture(scope="module")
def plain() -> InferenceEngine:
    return InferenceEngine(EtaFusionHead({"text": 384}, hidden=16), bucket_call_tokens=4)


def _compiles() -> int:
    return counters["stats"]["unique_graphs"]


def _every_shape(eng: InferenceEngine) -> torch.Tensor:
    """Length buckets, a whole padded batch, one post, an empty post: every way the scorer calls it."""
    whole = eng.encode(TEXTS).x["text"]
    eng.bucket_call_tokens = 0
    try:
        padded = eng.encode(TEXTS).x["text"]
    finally:
        eng.bucket_call_tokens = 4
    ones = torch.cat([eng.encode([t]).x["text"] for t in TEXTS[:3]])
    return torch.cat([whole, padded, ones])


@needs_cc
def test_compiled_fp32_gives_eagers_embeddings_and_compiles_once_at_start(plain) -> None:
    eng = InferenceEngine(plain.head, bucket_call_tokens=4, text_encoder=plain.frozen_text, compile=True)
    assert eng.compiled
    after_start = _compiles()
    got = _every_shape(eng)
    assert _compiles() == after_start, "a batch shape the start-up compile did not cover compiled again"
    ref = _every_shape(plain)
    assert (got - ref).abs().max().item() < 1e-5
    assert all(p.dtype == torch.float32 for p in plain.frozen_text.model.parameters())  # the shared one is eager


@needs_cc
@pytest.mark.skipif(not cpu_has_native_bf16(), reason="bf16 is only compiled where the CPU runs it natively")
def test_compiled_bf16_tracks_eager_bf16(plain) -> None:
    eager = InferenceEngine(plain.head, precision="bf16", bucket_call_tokens=4, text_encoder=plain.frozen_text)
    eng = InferenceEngine(
        plain.head, precision="bf16", bucket_call_tokens=4, text_encoder=plain.frozen_text, compile=True
    )
    got, ref = _every_shape(eng), _every_shape(eager)
    present = ref.norm(dim=-1) > 0
    assert torch.equal(present, got.norm(dim=-1) > 0)  # empty posts stay zero
    assert ((got * ref).sum(-1)[present] > 0.9999).all()


def test_int8_is_not_compiled_and_says_so(plain, caplog) -> None:
    with caplog.at_level("WARNING", logger="voxpop.scoring"):
        eng = InferenceEngine(plain.head, precision="int8", text_encoder=plain.frozen_text, compile=True)
    assert not eng.compiled and "int8 is not compiled" in caplog.text
    assert eng.encode(TEXTS[:2]).x["text"].shape == (2, 384)


def test_without_a_cpp_compiler_compiling_is_refused_with_what_to_do(plain, monkeypatch) -> None:
    monkeypatch.setattr(compiled, "_cpp_compiler", lambda: None)
    with pytest.raises(RuntimeError, match=r"no C\+\+ compiler.*VOXPOP_SCORER_COMPILE=false"):
        InferenceEngine(plain.head, text_encoder=plain.frozen_text, compile=True)
