"""The inference engine's batching: length buckets must not change any post's embedding."""

from __future__ import annotations

import math

import pytest
import torch

from models.production import EtaFusionHead
from pipelines.quantize import cpu_has_native_bf16, cpu_has_vnni, quantize_text_model
from pipelines.scoring import InferenceEngine, call_shape, plan_buckets

TEXTS = [
    "ok",
    "",
    "   ",
    "the flight was delayed for three hours and nobody told us anything at all",
    "thanks!",
    "@united lost my bag again, second time this month #fail",
    "a b c d e f g h i j k l m n o p",
    "great crew",
    "meh",
    "why is the wifi never working on these planes",
    "x" * 400,
    "fine",
]


@pytest.fixture(scope="module")
def engines() -> tuple[InferenceEngine, InferenceEngine]:
    head = EtaFusionHead({"text": 384}, hidden=16)
    plain = InferenceEngine(head, bucket_call_tokens=0)
    return plain, InferenceEngine(head, text_encoder=plain.frozen_text, bucket_call_tokens=4)


def test_buckets_cover_every_row_once_sorted_by_length(engines) -> None:
    _, bucketed = engines
    parts = bucketed.tokenize(TEXTS)
    rows = torch.cat([idx for idx, _ in parts]).tolist()
    assert sorted(rows) == list(range(len(TEXTS)))
    widths = [b["input_ids"].shape[1] for _, b in parts]
    lengths = sorted(int(b["attention_mask"][r].sum()) for _, b in parts for r in range(len(b["input_ids"])))
    assert widths == sorted(widths) and len(parts) == len(plan_buckets(lengths, 4)) > 1
    for _, b in parts:  # padded exactly to the longest row of the bucket, mask matches the ids
        assert (b["attention_mask"].sum(1).max() == b["input_ids"].shape[1]).item()
        assert ((b["input_ids"] != 0) == b["attention_mask"].bool()).all()


def test_bucketed_embeddings_equal_unbucketed(engines) -> None:
    plain, bucketed = engines
    a = plain.encode(TEXTS).x["text"]
    b = bucketed.encode(TEXTS, tokens=bucketed.tokenize(TEXTS)).x["text"]
    assert torch.allclose(a, b, atol=1e-5)
    assert not a[1].any() and not a[2].any()  # empty posts have no text view
    assert a[0].norm() > 0.99


def test_call_shapes_are_few_and_hold_every_call() -> None:
    shapes = {call_shape(r, w, 128) for r in range(1, 65) for w in range(1, 129)}
    assert len(shapes) == 11 * 8
    for r in range(1, 65):
        for w in range(1, 129):
            rows, width = call_shape(r, w, 128)
            assert r <= rows <= r + 7 and w <= width <= min(w + 15, 128)
    assert call_shape(3, 130, 130) == (4, 130)  # never wider than the longest row the model reads


def test_fixed_shapes_pad_calls_and_leave_every_embedding_as_it_was(engines) -> None:
    plain, bucketed = engines
    fixed = InferenceEngine(plain.head, text_encoder=plain.frozen_text, bucket_call_tokens=4, fixed_shapes=True)
    parts = fixed.tokenize(TEXTS)
    for idx, b in parts:
        rows, width = b["input_ids"].shape
        assert (rows, width) == call_shape(len(idx), int(b["attention_mask"][: len(idx)].sum(1).max()), 128)
        if rows > len(idx):  # spare rows are real rows, never all padding
            assert b["attention_mask"][len(idx) :].sum(1).min() > 0
    a = plain.encode(TEXTS).x["text"]
    assert torch.allclose(a, fixed.encode(TEXTS, tokens=parts).x["text"], atol=1e-5)
    one = InferenceEngine(plain.head, text_encoder=plain.frozen_text, fixed_shapes=True)  # one call: 12 rows -> 16
    [(idx, b)] = one.tokenize(TEXTS)
    assert b["input_ids"].shape[0] == 16 > len(idx)
    assert torch.allclose(a, one.encode(TEXTS, tokens=[(idx, b)]).x["text"], atol=1e-5)


def test_unbucketed_padding_matches_the_tokenizers_own(engines) -> None:
    """`buckets` pads ids itself (numpy); without buckets it must equal the tokenizer's padded batch."""
    plain, _ = engines
    [(idx, mine)] = plain.tokenize(TEXTS)
    theirs = plain.text.tokenize([t if t.strip() else "" for t in TEXTS])
    assert idx.tolist() == list(range(len(TEXTS)))
    assert mine.keys() == theirs.keys()
    for k in theirs:
        assert torch.equal(mine[k], theirs[k]), k


def test_posts_tokenised_in_parts_batch_like_one_call(engines) -> None:
    """The scorer tokenises each poll's records on its own thread and batches them later."""
    _, bucketed = engines
    ids = bucketed.token_ids(TEXTS[:5]) + bucketed.token_ids(TEXTS[5:])
    for (i1, b1), (i2, b2) in zip(bucketed.buckets(ids), bucketed.tokenize(TEXTS), strict=True):
        assert torch.equal(i1, i2) and all(torch.equal(b1[k], b2[k]) for k in b2)
    assert bucketed.buckets([]) == []


def _bucket_cost(lengths: list[int], cuts: list[tuple[int, int]], call: int, fixed: bool = False) -> int:
    shape = (lambda r, w: call_shape(r, w, 128)) if fixed else (lambda r, w: (r, w))
    return sum(call + math.prod(shape(b - a, lengths[b - 1])) for a, b in cuts)


@pytest.mark.parametrize("fixed", [False, True], ids=["exact", "fixed-shapes"])
@pytest.mark.parametrize("seed", range(20))
def test_plan_buckets_is_the_cheapest_cut_of_all(seed: int, fixed: bool) -> None:
    """Against brute force over every set of cut points, on random tweet-like lengths; with fixed
    shapes, each bucket costed at the shape it is padded to."""
    import itertools
    import random

    rng = random.Random(seed)
    lengths = sorted(rng.randint(3, 60) for _ in range(rng.randint(1, 10)))
    call = rng.choice([0, 4, 32, 500])
    plan = plan_buckets(lengths, call, 128 if fixed else None)
    assert plan[0][0] == 0 and plan[-1][1] == len(lengths)
    assert all(a < b for a, b in plan) and all(p[1] == q[0] for p, q in itertools.pairwise(plan))
    best = min(
        _bucket_cost(lengths, list(itertools.pairwise((0, *cut, len(lengths)))), call, fixed)
        for k in range(len(lengths))
        for cut in itertools.combinations(range(1, len(lengths)), k)
    )
    assert _bucket_cost(lengths, plan, call, fixed) == best
    if call == 500 and not fixed:  # a costly call: one padded batch unless padding costs more
        assert len(plan) == 1 or lengths[-1] * len(lengths) - sum(lengths) > 500


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b)[a.norm(dim=1) > 0]


def test_int8_quantises_every_encoder_linear_and_leaves_the_shared_encoder_alone(engines) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    plain, _ = engines
    eng = InferenceEngine(plain.head, precision="int8", text_encoder=plain.frozen_text)
    layers = [m for m in eng.text.model.encoder.modules() if isinstance(m, torch.nn.Linear | DynamicLinear)]
    assert len(layers) == 36 and all(isinstance(m, DynamicLinear) for m in layers)
    assert not any(isinstance(m, DynamicLinear) for m in plain.frozen_text.model.modules())


@pytest.fixture(scope="module")
def production_text(engines):
    """The encoder int8 serves: production's LoRA-merged MiniLM (the frozen one has larger outliers)."""
    from models.registry import load_head
    from models.text_encoder import encoder_for_head

    plain, _ = engines
    return encoder_for_head(load_head("production"), plain.frozen_text)


def test_int8_production_embeddings_track_fp32(production_text) -> None:
    ref = production_text.encode(TEXTS)
    q = production_text.with_model(quantize_text_model(production_text.model))  # this CPU's defaults
    cos = _cosines(ref, q.encode(TEXTS))
    assert cos.min() > 0.95, cos


def test_per_token_activation_scales_track_fp32_closer_than_one_scale_per_batch(production_text) -> None:
    """Why int8 uses per-token activation scales (checked with 7 bits: every CPU can run them)."""
    ref = production_text.encode(TEXTS)
    err = {}
    for per_token in (False, True):
        q = production_text.with_model(quantize_text_model(production_text.model, eight_bit=False, per_token=per_token))
        err[per_token] = (1 - _cosines(ref, q.encode(TEXTS))).mean().item()
    assert err[True] < 0.5 * err[False], err


@pytest.mark.skipif(not cpu_has_vnni(), reason="8-bit activations are only used (and safe) on CPUs with VNNI")
def test_eight_bit_activations_track_fp32_closer_than_seven_bit(engines) -> None:
    """The reason pipelines/quantize.py bypasses PyTorch's reduce_range on VNNI CPUs."""
    plain, _ = engines
    ref = plain.encode(TEXTS).x["text"]
    err = {}
    for bits in (7, 8):
        model = quantize_text_model(plain.frozen_text.model, eight_bit=bits == 8)
        eng = InferenceEngine(plain.head, text_encoder=plain.frozen_text.with_model(model))
        err[bits] = (1 - _cosines(ref, eng.encode(TEXTS).x["text"])).mean().item()
    assert err[8] < 0.5 * err[7], err


def test_bf16_casts_linear_weights_once_with_autocasts_numbers_and_shares_the_rest(engines) -> None:
    plain, _ = engines
    eng = InferenceEngine(plain.head, precision="bf16", text_encoder=plain.frozen_text)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # the per-call cast
        ref = plain.frozen_text.encode(TEXTS[3:9]).float()
    got = eng.encode(TEXTS[3:9]).x["text"]
    assert (got - ref).abs().max().item() < 1e-6
    linears = [m for m in eng.text.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert all(p.dtype == torch.float32 for p in plain.frozen_text.model.parameters())  # caller's untouched
    emb = eng.text.model.embeddings.word_embeddings.weight
    assert emb.data_ptr() == plain.frozen_text.model.embeddings.word_embeddings.weight.data_ptr()


def test_auto_precision_without_bf16_instructions_is_fp32_without_probing(engines, monkeypatch, caplog) -> None:
    import pipelines.scoring as scoring

    plain, _ = engines
    monkeypatch.setattr(scoring, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(scoring, "bf16_linear_weights", None)  # a probe would call it
    with caplog.at_level("INFO", logger="voxpop.scoring"):
        eng = scoring.InferenceEngine(plain.head, precision="auto", text_encoder=plain.frozen_text)
    assert eng.precision == "fp32" and "no bf16 instructions" in caplog.text


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="the bf16 probe only runs on CPUs with bf16 instructions")
def test_auto_precision_probes_bf16_and_runs_what_it_picked(engines, caplog) -> None:
    plain, _ = engines
    with caplog.at_level("INFO", logger="voxpop.scoring"):
        eng = InferenceEngine(plain.head, precision="auto", text_encoder=plain.frozen_text)
    assert eng.precision in ("fp32", "bf16")
    assert f"precision auto -> {eng.precision}: probe: bf16 " in caplog.text
    dtypes = {m.weight.dtype for m in eng.text.model.modules() if isinstance(m, torch.nn.Linear)}
    assert dtypes == {torch.bfloat16 if eng.precision == "bf16" else torch.float32}


def test_unknown_precision_says_what_is_accepted(engines) -> None:
    plain, _ = engines
    with pytest.raises(ValueError, match="auto or one of"):
        InferenceEngine(plain.head, precision="fp16", text_encoder=plain.frozen_text)


def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch, caplog) -> None:
    import pipelines.scoring as scoring
    from models.registry import load_head

    monkeypatch.setattr(scoring, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="voxpop.scoring"):
        scoring.InferenceEngine(load_head("production"), precision="bf16")
    assert any("emulates" in r.getMessage() for r in caplog.records)
    caplog.clear()
    monkeypatch.setattr(scoring, "cpu_has_native_bf16", lambda: True)
    with caplog.at_level("WARNING", logger="voxpop.scoring"):
        scoring.InferenceEngine(load_head("production"), precision="bf16")
    assert not caplog.records


def test_the_ceiling_times_only_posts_it_has_not_seen() -> None:
    """Re-encoding the same posts runs faster (warm kernels for recurring shapes): the ceiling never does."""
    from services.bench.encoders import _split_warm, text_ceiling

    texts = [f"post number {i} " + "word " * (i % 17) for i in range(40)]
    warm, timed = _split_warm(texts, batch=4)
    assert warm + timed == texts and len(warm) == 10 and not set(warm) & set(timed)
    rate = text_ceiling(EtaFusionHead({"text": 384}, hidden=16), texts, "fp32", batch=4)
    assert rate.posts == len(timed) and rate.per_s > 0


def test_training_bf16_autocast_only_where_the_cpu_has_bf16(monkeypatch) -> None:
    """Emulated bf16 is several times slower than fp32: training and evaluation run fp32 there."""
    from pipelines import quantize

    monkeypatch.setattr(quantize, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert not quantize.bf16_autocast(True)._enabled
    monkeypatch.setattr(quantize, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    on, off = quantize.bf16_autocast(True), quantize.bf16_autocast(False)
    assert on._enabled and on.fast_dtype == torch.bfloat16 and not off._enabled
