"""GHRNN-CMA: gated hierarchical RNN + cross-modal attention fusion (Xue & Wang, section 3.2).

The paper ("Cross-Modal Sentiment Analysis on Social Media using Improved Nonverbal Representation
Learning and GHRNN Fusion"; docs/models.md section 3), in order:

1. **Feature extraction** is INPNRLN-MD's: ELN (Conv1D k=3, positions, self-attention, linear)
   over audio and video (d = 32); text token states projected to d. ``Loss_in`` (InfoNCE on the
   pooled (t, a), (t, v) pairs) is kept, since the paper trains with a contrastive term.
2. **Cross-modal attention (Fig. 4).** Text queries attend over the ELN audio / video sequences:
   ``C_{a_t}`` and ``C_{v_t}``, both of text length L_t. The attended output has no residual from
   the text, so a missing view contributes exactly zero.
3. **Concatenations (Eq. 9).** ``[C_t; C_{a_t}]``, ``[C_t; C_{v_t}]``, ``[C_{a_t}; C_{v_t}]``.
4. **GHRNN (Eqs. 10, 12).** A one-gate recurrent cell
   ``z = sigma(W_xz x + W_hz h + b_z)``, ``h~ = tanh(W_xh x + W_hh (z * h) + b_h)``,
   ``h = (1 - z) * h + z * h~``, two stacked layers. The hyper-parameters ``zeta'`` are shared in
   Eq. 10, so one GHRNN (shared weights) runs over all three concatenations. The recurrence
   stops at each sample's last valid text position (state carried unchanged through padding).
5. **Output (Eq. 11).** The three final states are concatenated, ReLU(Linear) to d_z, then a
   linear output (a scalar, or class logits when ``n_outputs > 1``).

Missing text (MOSI-audio here): the text sequence is replaced by one learned "null query" token,
so the cross-attention can still read audio / video; ``C_t`` is then that token's projection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from models.inpnrln_md import ELN, ELNConfig
from models.trimodal import (
    CrossModalAttention,
    PositionalEmbedding,
    TriModalBatch,
    TriModalOutput,
    drop_views,
    info_nce,
    masked_mean,
)

GHRNN_CMA_VERSION = "ghrnn-cma/1"


class GHRNNCell(nn.Module):
    """The paper's one-gate cell (Eq. 12): the gate z both updates h and filters h in h~."""

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.x_z = nn.Linear(input_dim, hidden)
        self.h_z = nn.Linear(hidden, hidden, bias=False)
        self.x_h = nn.Linear(input_dim, hidden)
        self.h_h = nn.Linear(hidden, hidden, bias=False)

    def forward(
        self,
        x: Tensor,
        h: Tensor,
        xz: Tensor | None = None,
        xh: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One step: (h_new, z). `xz`/`xh` are precomputed input projections (optional)."""
        z = torch.sigmoid((self.x_z(x) if xz is None else xz) + self.h_z(h))
        cand = torch.tanh((self.x_h(x) if xh is None else xh) + self.h_h(z * h))
        return (1 - z) * h + z * cand, z


class GHRNN(nn.Module):
    """Stacked GHRNN cells over a masked sequence: (outputs [B, L, H], final states [B, H])."""

    def __init__(self, input_dim: int, hidden: int, layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.cells = nn.ModuleList(GHRNNCell(input_dim if i == 0 else hidden, hidden) for i in range(layers))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        b, length, _ = x.shape
        m = mask.to(x.dtype).unsqueeze(-1)  # [B, L, 1]
        seq = x
        cells = cast("list[GHRNNCell]", list(self.cells))
        h = x.new_zeros(b, cells[0].hidden)
        for i, cell in enumerate(cells):
            if i:
                seq = self.drop(seq)
            xz, xh = cell.x_z(seq), cell.x_h(seq)  # all time steps at once
            h = x.new_zeros(b, cell.hidden)
            outs = []
            for t in range(length):
                h_new, _ = cell(seq[:, t], h, xz[:, t], xh[:, t])
                h = m[:, t] * h_new + (1 - m[:, t]) * h  # padding: keep the state
                outs.append(h)
            seq = torch.stack(outs, 1) * m
        return seq, h


@dataclass
class GhrnnCmaConfig:
    text_dim: int = 768
    audio_dim: int = 5
    vision_dim: int = 20
    n_outputs: int = 1
    eln: ELNConfig | dict[str, Any] | None = None
    d: int = 32  # shared width of C_t, C_{a_t}, C_{v_t}
    cma_heads: int = 4
    hidden: int = 32  # GHRNN state size
    rnn_layers: int = 2
    d_z: int = 128
    dropout: float = 0.3
    loss_in_weight: float = 1.0
    tau: float = 0.1
    max_text_len: int = 512
    view_dropout: float = 0.0  # training-time modality dropout (models.trimodal.drop_views)

    def __post_init__(self) -> None:
        if self.eln is None:
            self.eln = ELNConfig(d=self.d)
        elif isinstance(self.eln, dict):
            self.eln = ELNConfig(**self.eln)
        if self.eln.d != self.d:
            raise ValueError(f"eln.d ({self.eln.d}) must equal d ({self.d})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GhrnnCma(nn.Module):
    """ELN(a), ELN(v), text-query CMA -> three concatenations -> shared GHRNN -> ReLU-Linear -> out."""

    version = GHRNN_CMA_VERSION

    def __init__(self, cfg: GhrnnCmaConfig) -> None:
        super().__init__()
        self.config = cfg
        eln: ELNConfig = cfg.eln  # type: ignore[assignment]
        self.audio_eln = ELN(cfg.audio_dim, eln)
        self.vision_eln = ELN(cfg.vision_dim, eln)
        self.text_in = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.text_dim, cfg.d))
        self.text_pos = PositionalEmbedding(cfg.d, cfg.max_text_len, learned=True)
        self.null_text = nn.Parameter(torch.zeros(cfg.d))
        nn.init.normal_(self.null_text, std=0.02)
        self.cma_a = CrossModalAttention(cfg.d, cfg.cma_heads, 2 * cfg.d, cfg.dropout, residual=False)
        self.cma_v = CrossModalAttention(cfg.d, cfg.cma_heads, 2 * cfg.d, cfg.dropout, residual=False)
        self.rnn = GHRNN(2 * cfg.d, cfg.hidden, cfg.rnn_layers, cfg.dropout)
        self.out = nn.Sequential(
            nn.Linear(3 * cfg.hidden, cfg.d_z), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.d_z, cfg.n_outputs)
        )

    def text_sequence(self, b: TriModalBatch) -> tuple[Tensor, Tensor]:
        """C_t [B, Lt, d] and its mask; a missing text becomes the single null-query token."""
        c_t = self.text_pos(self.text_in(b.text))
        mask = b.text_mask
        missing = ~b.present[:, 0]
        if missing.any():
            null = torch.zeros_like(c_t)
            null[:, 0] = self.null_text
            c_t = torch.where(missing.view(-1, 1, 1), null, c_t)
            first = torch.zeros_like(mask)
            first[:, 0] = True
            mask = torch.where(missing.view(-1, 1), first, mask)
        return c_t * mask.unsqueeze(-1).to(c_t.dtype), mask

    def forward(self, batch: TriModalBatch) -> TriModalOutput:
        b = drop_views(batch, self.config.view_dropout if self.training else 0.0)
        a_seq, c_a = self.audio_eln(b.audio, b.audio_mask)
        v_seq, c_v = self.vision_eln(b.vision, b.vision_mask)
        c_t, t_mask = self.text_sequence(b)
        c_at = self.cma_a(c_t, t_mask, a_seq, b.audio_mask)
        c_vt = self.cma_v(c_t, t_mask, v_seq, b.vision_mask)
        pairs = [torch.cat(p, -1) for p in ((c_t, c_at), (c_t, c_vt), (c_at, c_vt))]
        n = c_t.shape[0]
        _, final = self.rnn(torch.cat(pairs, 0), t_mask.repeat(3, 1))  # shared GHRNN, one pass
        c_z = torch.cat(final.split(n, 0), -1)
        out = self.out(c_z)
        pred = out.squeeze(-1) if self.config.n_outputs == 1 else out
        aux = pred.new_zeros(())
        if self.training and self.config.loss_in_weight:
            t_pool = masked_mean(c_t, t_mask)
            p = b.present
            aux = self.config.loss_in_weight * (
                info_nce(t_pool, c_a, self.config.tau, valid=p[:, 0] & p[:, 1])
                + info_nce(t_pool, c_v, self.config.tau, valid=p[:, 0] & p[:, 2])
            )
        return TriModalOutput(pred=pred, aux_loss=aux, extras={"c_z": c_z})
