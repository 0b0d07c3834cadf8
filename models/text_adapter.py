"""LoRA adapter for the text encoder (all-MiniLM-L6-v2), owned by a head, merged at load time.

Why: the production head on the frozen pooled embedding is limited by the encoder; tuning the
encoder pays, but a full copy of it (90 MB) must not land in the repository. A rank-r update
W + (alpha/r) * B @ A on a few Linear layers is ~1 MB, trains on a CPU, and, once merged into
the weights, costs nothing at inference: the merged encoder runs exactly as fast as the frozen one.

Layout: parameters `l{layer}_{target}_a` [r, in] and `..._b` [out, r] in one ParameterDict, so
they live in the head's state_dict (its safetensors file) next to the head's own weights.
B starts at zero: an untrained adapter leaves the encoder unchanged.

Two ways to use it:
- training: `wrap(model)` swaps the target Linear modules of a (copied) encoder for `LoRALinear`
  wrappers that read this adapter's parameters, so gradients reach only A and B;
- serving: `merge_into(model)` adds the low-rank update into the weights of a copy, in place.
`tag` (rank, layers, weight hash) becomes part of the tuned encoder's version, so cached
features of the frozen and of every tuned encoder never mix.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# BertLayer sub-modules: attention q/k/v/output and both feed-forward projections
DEFAULT_TARGETS: tuple[str, ...] = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


def _shape(target: str, hidden: int, intermediate: int) -> tuple[int, int]:
    """(in, out) features of one BertLayer Linear."""
    if target == "intermediate.dense":
        return hidden, intermediate
    if target == "output.dense":
        return intermediate, hidden
    return hidden, hidden


class LoRALinear(nn.Module):
    """base(x) + scale * B A dropout(x): a frozen Linear plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, a: nn.Parameter, b: nn.Parameter, scale: float, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.a, self.b = a, b  # shared with the adapter (not copies): its optimiser updates them
        self.scale = scale
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + F.linear(F.linear(self.drop(x), self.a), self.b) * self.scale


class TextAdapter(nn.Module):
    """Low-rank updates for `targets` in encoder layers `layers` (see the module docstring)."""

    def __init__(
        self,
        layers: Sequence[int] = (4, 5),
        rank: int = 16,
        alpha: float = 32.0,
        dropout: float = 0.1,
        targets: Sequence[str] = DEFAULT_TARGETS,
        hidden: int = 384,
        intermediate: int = 1536,
    ) -> None:
        super().__init__()
        if rank <= 0 or not layers:
            raise ValueError("a TextAdapter needs rank > 0 and at least one layer")
        self.layers = tuple(sorted(int(i) for i in layers))
        self.rank, self.alpha, self.dropout = int(rank), float(alpha), float(dropout)
        self.targets = tuple(targets)
        self.hidden, self.intermediate = int(hidden), int(intermediate)
        self.scale = self.alpha / self.rank
        self.params = nn.ParameterDict()
        for i in self.layers:
            for t in self.targets:
                fin, fout = _shape(t, self.hidden, self.intermediate)
                a = torch.empty(self.rank, fin)
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
                self.params[self._key(i, t, "a")] = nn.Parameter(a)
                self.params[self._key(i, t, "b")] = nn.Parameter(torch.zeros(fout, self.rank))

    @staticmethod
    def _key(layer: int, target: str, which: str) -> str:
        return f"l{layer}_{target.replace('.', '_')}_{which}"

    def config(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "targets": list(self.targets),
            "hidden": self.hidden,
            "intermediate": self.intermediate,
        }

    @property
    def first_layer(self) -> int:
        """Layers below this one are untouched: their outputs can be computed once and cached."""
        return self.layers[0]

    def delta(self, layer: int, target: str) -> Tensor:
        """The weight update scale * B @ A, shaped like the Linear's weight [out, in]."""
        a, b = self.params[self._key(layer, target, "a")], self.params[self._key(layer, target, "b")]
        return (b @ a) * self.scale

    def _sites(self, model: nn.Module) -> list[tuple[int, str, nn.Module, str]]:
        """(layer, target, parent module, attribute) of every adapted Linear in a BertModel."""
        out = []
        for i in self.layers:
            for t in self.targets:
                parent_path, _, attr = f"encoder.layer.{i}.{t}".rpartition(".")
                out.append((i, t, model.get_submodule(parent_path), attr))
        return out

    def wrap(self, model: nn.Module) -> nn.Module:
        """Swap the targets of `model` (a copy you own) for LoRALinear wrappers; returns it."""
        for i, t, parent, attr in self._sites(model):
            base = getattr(parent, attr)
            if isinstance(base, LoRALinear):
                raise ValueError(f"layer {i} {t} is already wrapped")
            a, b = self.params[self._key(i, t, "a")], self.params[self._key(i, t, "b")]
            setattr(parent, attr, LoRALinear(base, a, b, self.scale, self.dropout))
        return model

    @torch.no_grad()
    def merge_into(self, model: nn.Module) -> nn.Module:
        """Add every update into the plain Linear weights of `model` (a copy you own), in place."""
        for i, t, parent, attr in self._sites(model):
            lin = getattr(parent, attr)
            if not isinstance(lin, nn.Linear):
                raise TypeError(f"layer {i} {t}: expected nn.Linear, got {type(lin).__name__}")
            lin.weight.add_(self.delta(i, t).to(lin.weight.device, lin.weight.dtype))
        return model

    @property
    def tag(self) -> str:
        """Short id of this adapter's exact weights (part of the tuned encoder's version)."""
        h = hashlib.sha256(repr(sorted(self.config().items())).encode())
        for k, v in sorted(self.params.items()):
            h.update(k.encode())
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
        layers = ".".join(str(i) for i in self.layers)
        return f"lora-r{self.rank}-L{layers}-{h.hexdigest()[:10]}"
