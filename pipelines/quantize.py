"""Reduced precision for the text encoder: dynamic int8, and bf16 weights cast once.

Dynamic int8: int8 weights per output channel, activations quantised per call.

Why its own module: three choices here decide whether int8 keeps fp32's accuracy.

- **8-bit activations where the CPU has VNNI.** PyTorch's dynamic Linear always asks FBGEMM for
  7-bit activations (`reduce_range=True`), a guard for CPUs without VNNI, whose int8 multiply
  (`vpmaddubsw`) saturates 16-bit sums. VNNI's `vpdpbusd` accumulates in 32 bits, so on such CPUs
  the full 8 bits are safe and halve the rounding step, and the int8 embeddings move closer to
  fp32's.
- **Per-token activation scales.** PyTorch quantises a Linear's whole input with one scale, so a
  few large-valued tokens set the step for every token in the batch. Dividing each token by its
  own max first (exact: y = s * W(x/s) + b) gives each token the full range. It cut the labels int8
  changes against fp32 on every data set and CPU we measured, with and without VNNI, for part of
  int8's speed on CPUs without VNNI and almost none of it on CPUs with VNNI
  (docs/performance.md, docs/machines/). So it is on everywhere.
- **Every Linear layer int8.** Keeping the feed-forward output projections in fp32 (their GELU
  inputs have the largest outlier channels) hands a third of the int8 FLOPs back to fp32 and
  still did not bring int8 within the accuracy tolerance, so the simpler and faster one is what
  `int8` means. docs/performance.md has the accuracy each precision keeps.

Per-channel weight scales: per-tensor scales lose several times more macro-F1 than per-channel
ones, for a small part of the speed-up.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:  # x86 names the list "flags", arm64 "Features"
        line = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith(("flags", "Features")))
    except (OSError, StopIteration):
        return frozenset()
    return frozenset(line.split(":", 1)[1].split())


def cpu_has_vnni() -> bool:
    """AVX512-VNNI or AVX-VNNI: int8 dot products that accumulate in 32 bits."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


def cpu_has_native_bf16() -> bool:
    """bf16 matmul instructions (AVX512-BF16, AMX, or arm64's BF16). Without them bf16 is emulated,
    many times slower than fp32 (docs/machines/amd-epyc-avx2/performance.md)."""
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & cpu_flags())


def bf16_autocast(wanted: bool = True) -> torch.autocast:
    """bf16 autocast on the CPU where it pays: when asked for and the CPU has bf16 instructions.
    Elsewhere torch emulates bf16, several times slower than fp32, so this runs fp32 instead
    (training and evaluation only; the scorer's precision is chosen in pipelines/scoring.py)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=wanted and cpu_has_native_bf16())


def bf16_linear_weights(model: nn.Module) -> nn.Module:
    """A copy of `model` whose Linear weights and biases are bf16; every other tensor is shared.

    bf16 autocast casts a Linear's fp32 weight on every call (its cast cache only keeps weights that
    require grad, and frozen encoders do not): 42 MB read and 21 MB written per forward of
    all-MiniLM-L6-v2. Casting once gives the same numbers (autocast would round the same way) for
    less work per call, most of all on small batches. Run it under autocast:
    LayerNorm and the rest stay fp32.
    """
    import copy

    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    out = copy.deepcopy(model, memo=shared)
    for m in out.modules():
        if isinstance(m, nn.Linear):
            m.weight = nn.Parameter(m.weight.detach().to(torch.bfloat16), requires_grad=False)
            if m.bias is not None:
                m.bias = nn.Parameter(m.bias.detach().to(torch.bfloat16), requires_grad=False)
    return out


class Int8Linear(DynamicLinear):
    """A dynamic int8 Linear with the activation choices PyTorch's does not offer.

    `eight_bit`: full 8-bit activations (only safe with VNNI). `per_token`: one activation scale per
    token instead of one for the whole batch, so a few large-valued tokens no longer flatten every
    other token into a handful of levels. x / s is exact per row, so y = s * W(x / s) + b.
    """

    eight_bit = False
    per_token = False
    bias_fp32: torch.Tensor | None = None

    def use_per_token(self) -> None:
        """Per-token scales: the bias moves out of the packed weight (it is added after rescaling)."""
        weight, bias = self._packed_params._weight_bias()
        self._packed_params.set_weight_bias(weight, None)
        self.bias_fp32, self.per_token = (None if bias is None else bias.detach().clone()), True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed, reduce_range = self._packed_params._packed_params, not self.eight_bit
        if not self.per_token:
            return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=reduce_range).to(x.dtype)
        s = x.abs().amax(-1, keepdim=True).clamp_min_(1e-6)
        y = torch.ops.quantized.linear_dynamic(x / s, packed, reduce_range=reduce_range).mul_(s)
        return y if self.bias_fp32 is None else y.add_(self.bias_fp32)


def quantize_text_model(model: nn.Module, eight_bit: bool | None = None, per_token: bool = True) -> nn.Module:
    """A copy of `model` whose Linear layers are all dynamic int8.

    `eight_bit`: 8-bit activations; default: where the CPU has VNNI (7-bit elsewhere, as PyTorch).
    `per_token`: one activation scale per token (default; see the module docstring for what each
    costs and buys).
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig

    eight_bit = cpu_has_vnni() if eight_bit is None else eight_bit
    q = torch.ao.quantization.quantize_dynamic(
        model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, mapping={nn.Linear: Int8Linear}
    )
    for m in q.modules():
        if isinstance(m, Int8Linear):
            m.eight_bit = eight_bit
            if per_token:
                m.use_per_token()
    return q
