"""AMSGFN: Adaptive Modality Selection and Guided Fusion Network (docs/models.md section 4).

Paper: "Multimodal sentiment analysis based on dynamic mode selection and contrastive learning alignment".

Reads like the paper, section by section:

- 2.2 unimodal features: each modality is projected to ``d`` (Linear); non-text sequences are
  length-aligned to the text grid L_t (see ``align`` below).
- 2.3 CCAM: masked mean pool -> per-modality projection MLP -> NT-Xent (cosine, in batch) in both
  directions for (t,a), (t,v), (a,v)  (Eq. 1-2).
- 2.4 DMSM: s = softmax(MLP([X'_t; X'_a; X'_v])) (Eq. 3), p = argmax s (Eq. 4),
  X~_m = s_m X_m (Eq. 5). argmax is not differentiable, so the MLP learns only through the
  weighting in Eq. 5. A missing modality gets s_m = 0, so it can never be dominant.
- 2.5.1 DMGF (N layers, X_p^[0] = X~_p, our reading): CMA from both auxiliaries, SA on the
  dominant stream, sigmoid gate on the auxiliary sum, FFN(LN(.)) + residual (Eq. 6-13).
- 2.5.2 readout: Q_p = TransformerBlock(X~_p), X_pred = CMA(Q_p, X_p^[N]), mean over time,
  MLP d->64->32->out with GELU (Eq. 14-16).
- 2.6 loss: MSE (or CE for classification) + alpha L_align + beta sum_m NCE(X_p^[N], X_m),
  with KuDA's NCE (mean-pool, L2-normalise, -mean(cos_ii - logsumexp_j cos_ij), no temperature).

The dominant modality differs per sample, so all three dominant paths (p = t, a, v) run in one
stacked pass with shared weights and each sample's own path is gathered. The selection scores
``s`` are returned per sample: the stream stores them as the post's per-modality weights.

Length alignment (``align``):
- ``"pool"`` (default): each non-text sequence is average-pooled into as many contiguous segments
  as the sample has valid text tokens (``text_len`` segments when text is missing). It handles
  any input length and is invariant to padding, which the stream needs (clips vary in length).
- ``"linear"``: KuDA's Linear over time, from a fixed input length (``audio_len`` /
  ``vision_len``, pad or truncate) to ``text_len``; text is padded or truncated to ``text_len``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.trimodal import (
    VIEWS,
    MaskedMultiheadAttention,
    SelfAttentionBlock,
    TriModalBatch,
    TriModalOutput,
    drop_views,
    info_nce,
    masked_mean,
    sinusoidal_positions,
    task_loss,
)

__all__ = ["AMSGFN", "AMSGFNConfig", "AMSGFNOutput", "alignment_loss", "kuda_nce", "align_by_pooling"]


@dataclass
class AMSGFNConfig:
    """Hyperparameters. Defaults are KuDA's (the paper gives none); see docs/models.md section 4."""

    text_dim: int = 768
    audio_dim: int = 74
    vision_dim: int = 35
    d_model: int = 256
    ffn_dim: int = 512
    n_heads: int = 8
    dropout: float = 0.3
    n_layers: int = 3  # N DMGF layers
    view_dropout: float = 0.0  # training-time modality dropout (models.trimodal.drop_views); 0 = paper
    align: str = "pool"  # "pool" | "linear" (see module docstring)
    text_len: int = 50  # L_t: the grid for "linear", and for "pool" when text is missing
    audio_len: int = 500  # fixed input lengths of the "linear" alignment
    vision_len: int = 375
    positional: bool = True  # sinusoidal positions after the input projections
    proj_dim: int = 128  # CCAM shared-space size
    tau: float = 0.1  # NT-Xent temperature (paper: not given; 0.07-0.1)
    alpha: float = 0.1  # weight of L_align
    beta: float = 0.1  # weight of sum_m NCE
    n_outputs: int = 1  # 1 = regression, C > 1 = C-way classification (models.trimodal convention)

    @property
    def task(self) -> str:
        return "regression" if self.n_outputs == 1 else "classification"

    @property
    def out_dim(self) -> int:
        return self.n_outputs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AMSGFNConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class AMSGFNOutput:
    """Everything the loss, the tests and the stream need from one forward pass."""

    prediction: Tensor  # [B] regression score, or [B, C] logits
    weights: Tensor  # s: [B, 3] selection scores (text, audio, vision), 0 for missing views
    dominant: Tensor  # p: [B] index into VIEWS
    path_predictions: Tensor  # [B, 3, out_dim]: every dominant path's output (p = t, a, v)
    fused: Tensor  # [B, d]: mean-pooled X_p^[N] of the selected path
    pooled: Tensor  # [B, 3, d]: X'_m (masked mean of each aligned, projected modality)
    projected: Tensor  # [B, 3, proj_dim]: CCAM shared-space vectors
    present: Tensor  # [B, 3] bool


# --------------------------------------------------------------------------- losses


def alignment_loss(projected: Tensor, present: Tensor, tau: float) -> Tensor:
    """Eq. 2: L^{mn} + L^{nm} for (t,a), (t,v), (a,v), each pair on the samples that have both views.

    Eq. 1 is the cross-view form (z_m,i against every z_n,j of the batch), i.e. the shared
    ``info_nce``; its symmetric mode averages the two directions, so x2 gives Eq. 2's sum.
    """
    total = projected.new_zeros(())
    for m, n in ((0, 1), (0, 2), (1, 2)):
        both = present[:, m] & present[:, n]
        total = total + 2.0 * info_nce(projected[:, m], projected[:, n], tau, valid=both, symmetric=True)
    return total


def kuda_nce(x: Tensor, y: Tensor, valid: Tensor | None = None) -> Tensor:
    """KuDA's NCE between pooled vectors: -mean(cos_ii - logsumexp_j cos_ij), no temperature."""
    return info_nce(x, y, tau=1.0, valid=valid, symmetric=False, normalize=True)


# --------------------------------------------------------------------------- alignment


def align_by_pooling(x: Tensor, mask: Tensor, grid: Tensor, width: int) -> Tensor:
    """Average-pool each sample's valid frames into ``grid[b]`` contiguous segments.

    x [B, L, D], mask [B, L] (valid frames must be a prefix), grid [B] >= 1 -> [B, width, D].
    Segment j covers frames [floor(j n / g), ceil((j+1) n / g)); never empty when n >= 1.
    Rows j >= grid[b] and samples with n = 0 come out as zeros.
    """
    n = mask.sum(1).long()  # [B]
    g = grid.long().clamp_min(1)
    j = torch.arange(width, device=x.device)[None, :]  # [1, W]
    start = (j * n[:, None]) // g[:, None]  # [B, W]
    end = -((-(j + 1) * n[:, None]) // g[:, None])  # ceil
    i = torch.arange(x.shape[1], device=x.device)[None, None, :]  # [1, 1, L]
    w = (i >= start[..., None]) & (i < end[..., None]) & (j[..., None] < g[:, None, None])
    w = w & mask[:, None, :]
    w = w.to(x.dtype)
    w = w / w.sum(-1, keepdim=True).clamp_min(1.0)
    return w @ x


def _fit_length(x: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Pad with zeros or truncate the time axis to ``length``."""
    L = x.shape[1]
    if L >= length:
        return x[:, :length], mask[:, :length]
    pad = length - L
    return F.pad(x, (0, 0, 0, pad)), F.pad(mask, (0, pad), value=False)


# --------------------------------------------------------------------------- blocks


class FeedForward(nn.Sequential):
    def __init__(self, d: int, hidden: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d), nn.Dropout(dropout)
        )


class CMA(nn.Module):
    """CMA(Q, K, V) of Eq. 6, 7, 15: pre-LN multi-head attention only (the DMGF adds its own residuals).

    A context with no valid position (a missing view) yields exactly zero.
    """

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_q, self.ln_kv = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = MaskedMultiheadAttention(d, heads, dropout)

    def forward(self, q: Tensor, kv: Tensor, kv_mask: Tensor) -> Tensor:
        return self.attn(self.ln_q(q), self.ln_kv(kv), kv_mask)


class DMGFLayer(nn.Module):
    """One dominant-modality guided fusion layer, Eq. 6-13."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.cma = CMA(d, heads, dropout)  # shared by both auxiliaries: their sum (Eq. 9) is symmetric
        self.sa = CMA(d, heads, dropout)
        self.gate = nn.Linear(2 * d, d)  # W_g, b_g
        self.ln = nn.LayerNorm(d)
        self.ffn = FeedForward(d, ffn, dropout)

    def forward(self, xp: Tensor, mp: Tensor, a1: Tensor, m1: Tensor, a2: Tensor, m2: Tensor) -> Tensor:
        aux = self.cma(xp, a1, m1) + self.cma(xp, a2, m2)  # Eq. 6, 7, 9
        tmp = self.sa(xp, xp, mp) + xp  # Eq. 8
        g = torch.sigmoid(self.gate(torch.cat([tmp, aux], dim=-1)))  # Eq. 10
        hat = tmp + g * aux  # Eq. 11, 12
        return self.ffn(self.ln(hat)) + hat  # Eq. 13


# --------------------------------------------------------------------------- model


class AMSGFN(nn.Module):
    """AMSGFN over a TriModalBatch; ``forward`` returns an AMSGFNOutput, ``loss`` the objective."""

    version = "amsgfn-1"

    def __init__(self, config: AMSGFNConfig) -> None:
        super().__init__()
        c = self.config = config
        d = c.d_model
        self.inp = nn.ModuleList([nn.Linear(c.text_dim, d), nn.Linear(c.audio_dim, d), nn.Linear(c.vision_dim, d)])
        if c.align == "linear":
            self.time_align = nn.ModuleList([nn.Linear(c.audio_len, c.text_len), nn.Linear(c.vision_len, c.text_len)])
        elif c.align != "pool":
            raise ValueError(f"align must be 'pool' or 'linear', got {c.align!r}")
        self.in_drop = nn.Dropout(c.dropout)
        # CCAM projection heads, one per modality (their spaces differ before alignment).
        self.ccam = nn.ModuleList([nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, c.proj_dim)) for _ in VIEWS])
        # DMSM scoring MLP (Eq. 3).
        self.selector = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Dropout(c.dropout), nn.Linear(d, 3))
        self.dmgf = nn.ModuleList([DMGFLayer(d, c.n_heads, c.ffn_dim, c.dropout) for _ in range(c.n_layers)])
        self.query_block = SelfAttentionBlock(d, c.n_heads, c.ffn_dim, c.dropout)  # TB(.) of Eq. 14
        self.readout = CMA(d, c.n_heads, c.dropout)
        self.head = nn.Sequential(
            nn.Linear(d, 64), nn.GELU(), nn.Dropout(c.dropout), nn.Linear(64, 32), nn.GELU(), nn.Linear(32, c.out_dim)
        )

    # -- 2.2: projection and alignment to the text grid
    def encode(self, batch: TriModalBatch) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """Project to d and align to L_t. Returns per-modality sequences, masks and present [B, 3]."""
        c = self.config
        seqs = [batch.text, batch.audio, batch.vision]
        masks = [batch.text_mask.bool(), batch.audio_mask.bool(), batch.vision_mask.bool()]
        present = batch.present.bool() & torch.stack([m.any(1) for m in masks], dim=1)
        masks = [m & present[:, i, None] for i, m in enumerate(masks)]
        B = present.shape[0]
        if c.align == "pool":
            n_t = masks[0].sum(1)
            grid = torch.where(n_t > 0, n_t, torch.full_like(n_t, c.text_len))
            width = int(grid.max()) if B else 1
            grid_mask = torch.arange(width, device=grid.device)[None, :] < grid[:, None]
            text, tmask = _fit_length(seqs[0], masks[0], width)
            out = [self.inp[0](text) * tmask[..., None]]
            out_masks = [tmask]
            for i in (1, 2):
                x = self.inp[i](seqs[i])
                out.append(align_by_pooling(x, masks[i], grid, width))
                out_masks.append(grid_mask & present[:, i, None])
        else:
            text, tmask = _fit_length(seqs[0], masks[0], c.text_len)
            out = [self.inp[0](text) * tmask[..., None]]
            out_masks = [tmask]
            for i, length in ((1, c.audio_len), (2, c.vision_len)):
                x, m = _fit_length(seqs[i], masks[i], length)
                x = self.inp[i](x) * m[..., None]
                out.append(self.time_align[i - 1](x.transpose(1, 2)).transpose(1, 2))
                out_masks.append(present[:, i, None].expand(B, c.text_len).clone())
        if c.positional:
            pos = sinusoidal_positions(out[0].shape[1], c.d_model, out[0].device).to(out[0].dtype)
            out = [x + pos[None] for x in out]
        out = [self.in_drop(x) * m[..., None] for x, m in zip(out, out_masks, strict=True)]
        return out, out_masks, present

    # -- 2.4: DMSM
    def select(self, pooled: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        """s (Eq. 3) with missing views masked out of the softmax, and p = argmax s (Eq. 4)."""
        logits = self.selector(pooled.flatten(1))
        logits = logits.masked_fill(~present, float("-inf"))
        s = torch.softmax(logits, dim=-1)
        s = torch.nan_to_num(s, nan=0.0)  # a sample with no view at all (never in practice)
        return s, s.argmax(dim=-1)

    def forward(self, batch: TriModalBatch) -> TriModalOutput:
        """Shared convention: prediction, weighted auxiliary loss (alpha L_align + beta L_cor), extras.

        ``extras["modality_weights"]`` is s [B, 3] (text, audio, vision), ``extras["dominant"]`` is p.
        """
        out = self.run(batch)
        return TriModalOutput(
            pred=out.prediction,
            aux_loss=self.aux_loss(out),
            extras={
                "modality_weights": out.weights.detach(),
                "dominant": out.dominant,
                "path_predictions": out.path_predictions.detach(),
            },
        )

    def run(self, batch: TriModalBatch) -> AMSGFNOutput:
        """The full forward pass with every intermediate the loss and the tests need."""
        batch = drop_views(batch, self.config.view_dropout if self.training else 0.0)
        xs, masks, present = self.encode(batch)
        B = present.shape[0]
        pooled = torch.stack([masked_mean(x, m) for x, m in zip(xs, masks, strict=True)], dim=1)  # X'_m
        projected = torch.stack([self.ccam[i](pooled[:, i]) for i in range(3)], dim=1)
        s, p = self.select(pooled, present)
        xw = [s[:, i, None, None] * xs[i] for i in range(3)]  # Eq. 5

        # All three dominant paths in one stacked pass: rows [k*B:(k+1)*B] have p = k.
        order = ((0, 1, 2), (1, 0, 2), (2, 0, 1))
        dom = torch.cat([xw[k] for k, _, _ in order])
        dmask = torch.cat([masks[k] for k, _, _ in order])
        a1 = torch.cat([xw[i] for _, i, _ in order])
        m1 = torch.cat([masks[i] for _, i, _ in order])
        a2 = torch.cat([xw[j] for _, _, j in order])
        m2 = torch.cat([masks[j] for _, _, j in order])
        h = dom
        for layer in self.dmgf:
            h = layer(h, dmask, a1, m1, a2, m2)
        q = self.query_block(dom, dmask)  # Eq. 14
        xpred = self.readout(q, h, dmask)  # Eq. 15
        out = self.head(masked_mean(xpred, dmask))  # Eq. 16 (mean over time first)
        fused = masked_mean(h, dmask)

        paths = out.view(3, B, -1).transpose(0, 1)  # [B, 3, out]
        fused_paths = fused.view(3, B, -1).transpose(0, 1)
        idx = torch.arange(B, device=p.device)
        chosen = paths[idx, p]
        prediction = chosen.squeeze(-1) if self.config.task == "regression" else chosen
        return AMSGFNOutput(
            prediction=prediction,
            weights=s,
            dominant=p,
            path_predictions=paths,
            fused=fused_paths[idx, p],
            pooled=pooled,
            projected=projected,
            present=present,
        )

    # -- 2.6: objective
    def aux_loss(self, out: AMSGFNOutput) -> Tensor:
        """alpha L_align + beta sum_m NCE(X_p^[N], X_m) (Eq. 18-19); a sample's missing views are skipped."""
        c = self.config
        align = alignment_loss(out.projected, out.present, c.tau)
        cor = sum(
            (kuda_nce(out.fused, out.pooled[:, m], valid=out.present[:, m]) for m in range(3)), out.fused.new_zeros(())
        )
        return c.alpha * align + c.beta * cor

    def loss(self, out: AMSGFNOutput, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The whole objective, Eq. 19: MSE (CE for classification) + the auxiliary terms."""
        task = task_loss(out.prediction, target, self.config.out_dim, regression_loss="mse")
        aux = self.aux_loss(out)
        total = task + aux
        return total, {"task": float(task.detach()), "aux": float(aux.detach()), "total": float(total.detach())}
