"""The text encoder compiled by TorchInductor with its weights frozen in (`VOXPOP_SCORER_COMPILE`).

Why: eager PyTorch runs MiniLM's matrix products near the CPU's peak, but around them every
bias add, GELU, residual add, LayerNorm and (under bf16 autocast) dtype cast is its own pass over
memory. Inductor fuses those into the products' epilogues, and freezing lets it prepack the
weights for oneDNN once. The embeddings match eager ones to rounding (tests/unit/
test_compiled_encoder.py); the speed it buys per machine is in docs/performance.md ("Compiled
encoder").

What it costs: a C++ compiler at start-up and some seconds of compiling per process (the first call),
so it is off by default and on in the k8s CPU overlay, where pods live long. int8 is not compiled
(its packed dynamic-quantised Linear is an opaque op to Inductor); it runs eagerly as before.

Shapes: the graph is compiled with dynamic batch and length. PyTorch still specialises a
dimension of size 1, so a one-post batch is padded to two rows here rather than paying a second
compile the first time the stream goes quiet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from models.text_encoder import TextEncoder

log = logging.getLogger("voxpop.compiled")


def _cpp_compiler() -> str | None:
    """The C++ compiler Inductor would use (its own search: $CXX, g++, clang++...), or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception:  # its search raises when it finds none
        return None


def compiler_missing() -> str | None:
    """Why Inductor cannot build CPU kernels here, or None when it can."""
    if _cpp_compiler() is None:
        return (
            "no C++ compiler found (Inductor builds its CPU kernels with one): install g++ "
            "(Debian: apt-get install g++) or set VOXPOP_SCORER_COMPILE=false"
        )
    return None


class CompiledEncoder(nn.Module):
    """A transformers encoder behind `torch.compile(dynamic=True)` with frozen weights.

    Holds the eager module as `.model` (so `.parameters()`, `.config` and device lookups still
    work) and answers `forward(**batch)` with an object carrying `last_hidden_state`, which is
    all the scoring path reads.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        import torch._inductor.config as inductor

        inductor.freezing = True  # process-wide: inference-only processes lose nothing by it
        self.model = model
        self.config = getattr(model, "config", None)
        self._compiled = torch.compile(model, dynamic=True)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **rest: Tensor) -> _Out:
        # Inference tensors and ordinary ones differ in a dispatch key the graph is guarded on:
        # tokens made outside inference mode would cost a second compile, so all become the former.
        input_ids, attention_mask = _inference(input_ids), _inference(attention_mask)
        rest = {k: _inference(v) for k, v in rest.items()}
        one = input_ids.shape[0] == 1
        if one:  # a size-1 batch would be compiled again as its own specialisation
            input_ids, attention_mask = input_ids.repeat(2, 1), attention_mask.repeat(2, 1)
            rest = {k: v.repeat(2, 1) for k, v in rest.items()}
        out = self._compiled(input_ids=input_ids, attention_mask=attention_mask, **rest).last_hidden_state
        return _Out(out[:1] if one else out)


def _inference(t: Tensor) -> Tensor:
    if t.is_inference():
        return t
    with torch.inference_mode():
        return t.clone()


class _Out:
    __slots__ = ("last_hidden_state",)

    def __init__(self, last_hidden_state: Tensor) -> None:
        self.last_hidden_state = last_hidden_state


def compile_text_encoder(
    text: TextEncoder, autocast: Callable[[], AbstractContextManager[object]]
) -> tuple[TextEncoder, float]:
    """`text` (a TextEncoder) with a compiled model, warmed up under `autocast`; (encoder, seconds).

    The warm-up call is the compile: done here, at start-up, never on the first real batch.
    """
    why = compiler_missing()
    if why:
        raise RuntimeError(f"cannot compile the text encoder: {why}")
    t = time.perf_counter()
    compiled = text.with_model(CompiledEncoder(text.model))
    batch = text.tokenize(
        ["warm up the compiled encoder", "two rows, so the batch dimension stays dynamic", "and a third"]
    )
    with torch.inference_mode(), autocast():
        compiled.encode_tokens(batch)
    return compiled, time.perf_counter() - t
