"""Late-fusion baseline for the tri-modal models: per-view encoder -> pooled vector -> per-view
linear output, averaged over the views a sample has.

The encoders are INPNRLN-MD's: the text [CLS]/mean state through Linear(D_t, d), and an ELN for
audio and video. Each view has its own linear head; the prediction (scalar or logits) is the
mean of the heads of the present views, so there is no cross-modal interaction at all. It
answers "what do the fusion modules add over the same encoders?".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from models.inpnrln_md import ELN, ELNConfig, pool_text
from models.trimodal import TriModalBatch, TriModalOutput, drop_views

LATE_FUSION_VERSION = "late-fusion/1"


@dataclass
class LateFusionConfig:
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    n_outputs: int = 1
    eln: ELNConfig | dict[str, Any] | None = None
    text_pool: str = "cls"
    dropout: float = 0.3
    view_dropout: float = 0.0  # training-time modality dropout (models.trimodal.drop_views)

    def __post_init__(self) -> None:
        if self.eln is None:
            self.eln = ELNConfig()
        elif isinstance(self.eln, dict):
            self.eln = ELNConfig(**self.eln)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LateFusion(nn.Module):
    version = LATE_FUSION_VERSION

    def __init__(self, cfg: LateFusionConfig) -> None:
        super().__init__()
        self.config = cfg
        eln: ELNConfig = cfg.eln  # type: ignore[assignment]
        self.text_enc = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.text_dim, eln.d), nn.ReLU())
        self.audio_eln = ELN(cfg.audio_dim, eln)
        self.vision_eln = ELN(cfg.vision_dim, eln)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(eln.d, cfg.n_outputs)) for _ in range(3)
        )

    def forward(self, batch: TriModalBatch) -> TriModalOutput:
        b = drop_views(batch, self.config.view_dropout if self.training else 0.0)
        pooled = [
            self.text_enc(pool_text(b.text, b.text_mask, self.config.text_pool)),
            self.audio_eln(b.audio, b.audio_mask)[1],
            self.vision_eln(b.vision, b.vision_mask)[1],
        ]
        outs = torch.stack([h(p) for h, p in zip(self.heads, pooled, strict=True)], 1)  # [B, 3, C]
        w = b.present.to(outs.dtype).unsqueeze(-1)
        out = (outs * w).sum(1) / w.sum(1).clamp_min(1.0)
        pred = out.squeeze(-1) if self.config.n_outputs == 1 else out
        return TriModalOutput(pred=pred, aux_loss=pred.new_zeros(()), extras={"per_view": outs})
