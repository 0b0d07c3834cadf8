"""INPNRLN-MD: improved nonverbal representation learning + outer-product fusion (Xue & Wang).

The paper ("Cross-Modal Sentiment Analysis on Social Media using Improved Nonverbal Representation
Learning and GHRNN Fusion", section 3.1; docs/models.md section 3), in order:

1. **Text (Eq. 1).** The [CLS] state of the text encoder's last layer is ``c_t``. Our setting
   takes pre-extracted token states: MMSA's BERT features (position 0 = [CLS]) or the frozen
   MiniLM's last layer. ``text_pool="cls"`` follows the paper; ``"mean"`` (masked mean over
   tokens) suits MiniLM, which was trained with mean pooling.
2. **ELN for audio and video (Eq. 2-4, Figs. 2-3).** Conv1D over time (kernel 3, the paper gives
   none), positional embedding, multi-head self-attention layers (d = 32, 4 heads, 2 layers;
   each a pre-LN transformer layer with its FFN), a linear map, masked mean-pool -> ``c_a``/``c_v``.
3. **Outer-product fusion (Eq. 6).** ``c_t`` is projected to 32 first; the flattened outer
   products ``c_a (x) c_t`` and ``c_v (x) c_t`` (32x32 each) are concatenated and projected to
   ``d_z = 128`` (Linear + ReLU + dropout: two stacked linear maps without a nonlinearity would
   collapse into one), then the output layer.
4. **Output (Eq. 7).** Eq. 7's ReLU on the scalar would forbid negative sentiment scores, so the
   regression output is linear. ``n_outputs > 1`` gives class logits instead.
5. **Loss (Eq. 8).** MAE (the pipeline's task loss; cross-entropy for classes) + ``Loss_in``,
   unspecified in the paper: our reading is InfoNCE (cosine / tau, in-batch negatives,
   symmetric) on the pooled pairs (t, a) and (t, v), weight 1.

Missing modalities (our addition, needed for EmoDB / MVSA / MOSI-audio): a missing audio or
video view has an all-False mask, so its ELN output and ``c_a``/``c_v`` are exactly zero and its
outer product contributes nothing; pairs with a missing view are left out of ``Loss_in``. Text is
the anchor of every product, so a missing text does not zero everything: its features are zero
and the projection's bias becomes a learned constant anchor, which keeps audio/video usable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.trimodal import (
    PositionalEmbedding,
    TransformerEncoder,
    TriModalBatch,
    TriModalOutput,
    drop_views,
    info_nce,
    masked_mean,
)

INPNRLN_MD_VERSION = "inpnrln-md/1"


@dataclass
class ELNConfig:
    """ELN encoder sizes (docs/models.md section 3 suggestions)."""

    d: int = 32
    heads: int = 4
    layers: int = 2
    kernel: int = 3
    ff: int = 64
    dropout: float = 0.3
    max_len: int = 1024  # learned positions up to here, sinusoidal beyond


class ELN(nn.Module):
    """Expressing Learning Network: Conv1D -> positions -> self-attention -> Linear -> mean-pool.

    forward(x [B, L, D_in], mask [B, L]) -> (sequence [B, L, d] zero at padding, pooled [B, d]).
    The convolution sees zero padding beyond the valid prefix, so outputs do not depend on how
    much padding follows.
    """

    def __init__(self, in_dim: int, cfg: ELNConfig) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_dim, cfg.d, kernel_size=cfg.kernel, padding=cfg.kernel // 2)
        self.pos = PositionalEmbedding(cfg.d, cfg.max_len, learned=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = TransformerEncoder(cfg.d, cfg.heads, cfg.layers, cfg.ff, cfg.dropout)
        self.out = nn.Linear(cfg.d, cfg.d)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        m = mask.unsqueeze(-1).to(x.dtype)
        h = self.conv((x * m).transpose(1, 2)).transpose(1, 2) * m
        h = self.drop(self.pos(h)) * m
        h = self.encoder(h, mask)
        h = self.out(h) * m
        return h, masked_mean(h, mask)


def pool_text(text: Tensor, mask: Tensor, how: str) -> Tensor:
    """[CLS] state (position 0, zero when the text is missing) or masked mean of token states."""
    if how == "cls":
        return text[:, 0] * mask[:, :1].to(text.dtype)
    if how == "mean":
        return masked_mean(text, mask)
    raise ValueError(f"text_pool must be 'cls' or 'mean', not {how!r}")


@dataclass
class InpnrlnConfig:
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    n_outputs: int = 1  # 1 = regression, C = classification logits
    eln: ELNConfig | dict[str, Any] | None = None
    text_pool: str = "cls"
    d_t: int = 32  # c_t projected to this before the outer products
    d_z: int = 128
    dropout: float = 0.3
    loss_in_weight: float = 1.0
    tau: float = 0.1
    view_dropout: float = 0.0  # training-time modality dropout (models.trimodal.drop_views)

    def __post_init__(self) -> None:
        if self.eln is None:
            self.eln = ELNConfig()
        elif isinstance(self.eln, dict):
            self.eln = ELNConfig(**self.eln)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InpnrlnMD(nn.Module):
    """Text [CLS] + ELN(audio), ELN(video) -> outer products with c_t -> d_z -> output."""

    version = INPNRLN_MD_VERSION

    def __init__(self, cfg: InpnrlnConfig) -> None:
        super().__init__()
        self.config = cfg
        eln: ELNConfig = cfg.eln  # type: ignore[assignment]
        self.audio_eln = ELN(cfg.audio_dim, eln)
        self.vision_eln = ELN(cfg.vision_dim, eln)
        self.text_proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.text_dim, cfg.d_t))
        self.fuse = nn.Sequential(nn.Linear(2 * eln.d * cfg.d_t, cfg.d_z), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.head = nn.Linear(cfg.d_z, cfg.n_outputs)

    def encode(self, batch: TriModalBatch) -> dict[str, Tensor]:
        """Pooled representations c_t (projected), c_a, c_v and the fused c_z."""
        b = drop_views(batch, self.config.view_dropout if self.training else 0.0)
        c_t = self.text_proj(pool_text(b.text, b.text_mask, self.config.text_pool))
        _, c_a = self.audio_eln(b.audio, b.audio_mask)
        _, c_v = self.vision_eln(b.vision, b.vision_mask)
        at = torch.einsum("bi,bj->bij", c_a, c_t).flatten(1)
        vt = torch.einsum("bi,bj->bij", c_v, c_t).flatten(1)
        c_z = self.fuse(torch.cat([at, vt], dim=-1))
        return {"c_t": c_t, "c_a": c_a, "c_v": c_v, "c_z": c_z, "present": b.present}

    def loss_in(self, r: dict[str, Tensor]) -> Tensor:
        """InfoNCE on (t, a) and (t, v), over samples where both views exist."""
        p = r["present"]
        la = info_nce(r["c_t"], r["c_a"], self.config.tau, valid=p[:, 0] & p[:, 1])
        lv = info_nce(r["c_t"], r["c_v"], self.config.tau, valid=p[:, 0] & p[:, 2])
        return la + lv

    def forward(self, batch: TriModalBatch) -> TriModalOutput:
        r = self.encode(batch)
        out = self.head(r["c_z"])
        pred = out.squeeze(-1) if self.config.n_outputs == 1 else out
        aux = self.config.loss_in_weight * self.loss_in(r) if self.training else pred.new_zeros(())
        return TriModalOutput(pred=pred, aux_loss=aux, extras={"c_z": r["c_z"]})
