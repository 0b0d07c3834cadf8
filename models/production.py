"""Production sentiment head v1: per-view extractors, SMOM's eta user fusion, gated view fusion.

Per view v (text 384-d MiniLM, image 1280-d EfficientNet-Lite0):
    h_v = g_v(x_v)                                  extractor MLP (LayerNorm -> Linear -> GELU -> Linear)
    z_v = h_v + eta_v * g_v(u_v) * [n_v > 0]        u_v = running mean of the author's earlier posts
The same g_v encodes the post and the author's history (SMOM eq. z = s + eta f(u) with f = g).
eta_v is a learned scalar per view, initialised at `eta_init` (docs/models.md section 1 suggests {0.1, 0.5, 1};
training picks it on validation) and kept non-negative via softplus so the author prior can only
be added, never inverted. Views are fused by a learned gate: a_v = w^T tanh(z_v), softmax over the
PRESENT views only; those weights are reported as `modality_weights`. Absent views get weight 0
and their features never reach the output. In training, present views are dropped at random
(never all of them) so the head works with any subset. Classifier: LayerNorm -> Linear -> 3.

Optionally (v4) the head owns a LoRA `text_adapter` (models/text_adapter.py) trained jointly
with it: its text features must then come from the encoder with that adapter merged in, which
`models.text_encoder.encoder_for_head` builds (the scorer's InferenceEngine does so). The adapter
is stored in the head's own safetensors file, so the checkpoint stays small.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.registry import SENTIMENT_LABELS, HeadOutput, ScoringHead, register_head
from models.text_adapter import TextAdapter

DEFAULT_DIMS = {"text": 384, "image": 1280}


def _inv_softplus(y: float) -> float:
    return math.log(math.expm1(y)) if y > 0 else -20.0


class Extractor(nn.Module):
    """g_v: normalises the frozen feature (image features are not unit length) and projects it."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Dropout(dropout),
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@register_head("production")
class EtaFusionHead(ScoringHead):
    """See the module docstring. score = P(positive) - P(negative)."""

    def __init__(
        self,
        feature_dims: dict[str, int] | None = None,
        hidden: int = 256,
        dropout: float = 0.2,
        eta_init: float = 0.5,
        learn_eta: bool = True,
        modality_dropout: float = 0.3,
        labels: tuple[str, ...] | list[str] = SENTIMENT_LABELS,
        name: str = "production",
        version: str = "1",
        text_adapter: dict[str, Any] | None = None,
        text_reading: dict[str, Any] | None = None,
        logit_bias: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.feature_dims = dict(feature_dims or DEFAULT_DIMS)
        self.views = tuple(self.feature_dims)
        self.labels = tuple(labels)
        self.name, self.version = name, version
        self.hidden, self.dropout_p, self.eta_init = hidden, dropout, eta_init
        self.learn_eta, self.modality_dropout = learn_eta, modality_dropout
        self.extract = nn.ModuleDict({v: Extractor(d, hidden, dropout) for v, d in self.feature_dims.items()})
        raw = torch.full((len(self.views),), _inv_softplus(eta_init))
        if learn_eta:
            self.eta_raw = nn.Parameter(raw)
        else:
            self.register_buffer("eta_raw", raw)
        self.gate = nn.Linear(hidden, 1)
        self.classifier = nn.Sequential(nn.LayerNorm(hidden), nn.Dropout(dropout), nn.Linear(hidden, len(self.labels)))
        self.text_adapter = TextAdapter(**text_adapter) if text_adapter else None
        # which encoder, and how it read texts (models.text_encoder.head_reading); None = MiniLM, raw
        self.text_reading = dict(text_reading) if text_reading else None
        # added to the logits: the neutral class calibrated on validation (zeros = uncalibrated)
        self.register_buffer("logit_bias", torch.tensor(logit_bias or [0.0] * len(self.labels)), persistent=False)

    def config(self) -> dict[str, Any]:
        return {
            "feature_dims": self.feature_dims,
            "hidden": self.hidden,
            "dropout": self.dropout_p,
            "eta_init": self.eta_init,
            "learn_eta": self.learn_eta,
            "modality_dropout": self.modality_dropout,
            "labels": list(self.labels),
            **({"text_adapter": self.text_adapter.config()} if self.text_adapter is not None else {}),
            **({"text_reading": self.text_reading} if self.text_reading else {}),
            **({"logit_bias": self.logit_bias.tolist()} if bool(self.logit_bias.any()) else {}),
        }

    @property
    def eta(self) -> dict[str, float]:
        return {v: float(e) for v, e in zip(self.views, F.softplus(self.eta_raw).tolist(), strict=True)}

    def _batch_size(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> int:
        for d in (mask, x):
            for t in d.values():
                return t.shape[0]
        raise ValueError("empty batch: no views given")

    def forward(
        self, x: dict[str, Tensor], u: dict[str, Tensor], n: dict[str, Tensor], mask: dict[str, Tensor]
    ) -> HeadOutput:
        b = self._batch_size(x, mask)
        device = self.gate.weight.device
        eta = F.softplus(self.eta_raw)
        zs, masks = [], []
        for i, v in enumerate(self.views):
            m = mask.get(v)
            if m is None or v not in x:
                continue
            m = m.to(device).bool()
            xv = x[v].to(device, torch.float32) * m.unsqueeze(-1)  # absent view: input ignored
            z = self.extract[v](xv)
            if v in u and v in n:
                has_prior = (n[v].to(device) > 0) & m
                if bool(has_prior.any()):
                    uv = u[v].to(device, torch.float32) * has_prior.unsqueeze(-1)
                    z = z + eta[i] * self.extract[v](uv) * has_prior.unsqueeze(-1).to(z.dtype)
            zs.append((v, z))
            masks.append(m)
        if not zs:
            logits = self.classifier(torch.zeros(b, self.hidden, device=device)) + self.logit_bias
            return HeadOutput(logits=logits, modality_weights={})
        names = [v for v, _ in zs]
        z = torch.stack([t for _, t in zs], 1)  # [B, V, H]
        m = torch.stack(masks, 1)  # [B, V]
        if self.training and self.modality_dropout > 0 and len(names) > 1:
            drop = torch.rand(m.shape, device=device) < self.modality_dropout
            keep = m & ~drop
            m = torch.where(keep.any(1, keepdim=True), keep, m)  # never drop every present view
        scores = self.gate(torch.tanh(z)).squeeze(-1).masked_fill(~m, -1e4)
        w = scores.softmax(1) * m  # rows with no present view -> all zeros
        fused = (w.unsqueeze(-1) * z).sum(1)
        logits = self.classifier(fused) + self.logit_bias
        return HeadOutput(logits=logits, modality_weights={v: w[:, j] for j, v in enumerate(names)})
