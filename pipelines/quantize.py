"""Dynamic int8 for the text encoder: int8 weights per output channel, activations quantised per call.

Why its own module: two choices here decide whether int8 keeps fp32's accuracy.

- **8-bit activations where the CPU has VNNI.** PyTorch's dynamic Linear always asks FBGEMM for
  7-bit activations (`reduce_range=True`), a guard for CPUs without VNNI, whose int8 multiply
  (`vpmaddubsw`) saturates 16-bit sums. VNNI's `vpdpbusd` accumulates in 32 bits, so on such CPUs
  the full 8 bits are safe and halve the rounding step. With production 4.0 on 250 real airline
  tweets, the mean cosine between fp32 and all-int8 sentence embeddings went from 0.973 to 0.993.
- **Every Linear layer int8.** Keeping the feed-forward output projections in fp32 (their GELU
  inputs have the largest outlier channels) hands a third of the int8 FLOPs back to fp32. Worst
  per-set loss vs fp32 with production v5 (accuracy / macro-F1 points, 8-bit): all int8 1.66 / 1.85,
  those kept fp32 0.66 / 0.62, both on TweetEval's 300 posts (5 vs 2 posts). Neither is within the
  0.5-point tolerance, so the simpler and faster one is what `int8` means. docs/performance.md has
  the accuracy each precision keeps.

Per-channel weight scales: with production v3, per-tensor scales cost 2.2 macro-F1 points on the
airline test split and per-channel 0.3, for ~10% of the speed-up.
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
    try:
        line = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        return frozenset()
    return frozenset(line.split(":", 1)[1].split())


def cpu_has_vnni() -> bool:
    """AVX512-VNNI or AVX-VNNI: int8 dot products that accumulate in 32 bits."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


class Int8Linear(DynamicLinear):
    """A dynamic int8 Linear with full 8-bit activations (only built where the CPU has VNNI)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params,
                                                  reduce_range=False).to(x.dtype)


def quantize_text_model(model: nn.Module, eight_bit: bool | None = None) -> nn.Module:
    """A copy of `model` whose Linear layers are all dynamic int8.

    `eight_bit`: 8-bit activations; default: where the CPU has VNNI (7-bit elsewhere, as PyTorch).
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig

    eight_bit = cpu_has_vnni() if eight_bit is None else eight_bit
    mapping = {nn.Linear: Int8Linear if eight_bit else DynamicLinear}
    return torch.ao.quantization.quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig},
                                                  dtype=torch.qint8, mapping=mapping)
