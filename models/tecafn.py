"""TeCaFN: Text-centered Cross-sample Fusion Network (docs/models.md section 5).

Paper: "Text-centered cross-sample fusion network for multimodal sentiment analysis".

Reads like the paper's section 3.2, with the official code's choices where docs/models.md records them:

- 3.2.1 audio/vision encoder: Conv1d (k=1, no bias) to 30, a MulT-style pre-norm transformer
  (6 layers, 5 heads, d=30, sinusoidal positions, embed dropout 0.25, other dropouts 0.1),
  then Linear 30->120, ReLU, Linear 120->d_in (back to the input size, as the code does).
- 3.2.2 L_tcon: Conv1d k=1 to 30 (text gets dropout 0.1), mean-pool, L2-normalise, InfoNCE
  with tau=0.1 text->m only; L_tcon = L_{t,a} + L_{t,v}. The cosine matrix is reused for
  hard-negative mining (Eq. 7, Algorithm 1).
- 3.2.3 replacement gate (training only): for each text, the top-3 most similar m of the batch
  (excluding itself); with probability p one of them, uniformly chosen, replaces m. a and v are
  gated independently. Pseudo-label 1 = paired, 0 = replaced. Then text-query cross-attention
  transformers (6 layers, 5 heads) fuse t with each m, followed by Linear 30->120, ReLU,
  Linear 120->30. L_ap: mean-pool, Linear 30->30, ReLU, Linear 30->2, CE, summed over a, v.
- 3.2.4 L_bicon: InfoNCE (tau=0.1) in both directions between the pooled, mapped h_ta and h_tv.
- 3.3 head: pooled h_ta + h_tv, Dropout, 30->128 tanh ->256 tanh, Dropout, ->128 tanh ->out. No
  final tanh (Eq. 17 has one; the code does not, and a tanh would cap scores at +-1).
  Loss: L1 (CE for classification) + gamma1 (L_tcon + L_bicon) + gamma2 L_ap.

Validation and test (``model.eval()``) fuse in-sample only: the gate never fires.
Missing views: a missing text is replaced by one learned query token (the model is text-centred,
so it needs a query); a missing a/v contributes nothing to attention and is left out of L_tcon,
the gate and L_ap.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.trimodal import (
    CrossModalAttention,
    TransformerEncoder,
    TriModalBatch,
    TriModalOutput,
    drop_views,
    info_nce,
    masked_mean,
    sinusoidal_positions,
    task_loss,
)

__all__ = ["TeCaFN", "TeCaFNConfig", "TeCaFNOutput", "replacement_gate", "tcon_loss", "bicon_loss"]


@dataclass
class TeCaFNConfig:
    """Hyperparameters; defaults from the official code (docs/models.md section 5)."""

    text_dim: int = 768
    audio_dim: int = 74
    vision_dim: int = 35
    d_model: int = 30
    n_heads: int = 5
    enc_layers: int = 6  # audio/vision encoders
    fusion_layers: int = 6  # text-query cross-attention transformers
    embed_dropout: float = 0.25
    dropout: float = 0.1  # attention, relu, residual and text dropouts
    head_dropout: float = 0.1
    tau: float = 0.1
    p_replace: float = 0.5  # code default; paper best 0.7 (MOSI), 0.4 (MOSEI)
    n_hard: int = 3
    view_dropout: float = 0.0  # training-time modality dropout (models.trimodal.drop_views); 0 = paper
    gamma1: float = 0.1  # weight of L_tcon + L_bicon
    gamma2: float = 0.1  # weight of L_ap
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
    def from_dict(cls, d: dict[str, Any]) -> TeCaFNConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class TeCaFNOutput:
    prediction: Tensor  # [B] score, or [B, C] logits
    weights: Tensor  # [B, 3]: uniform over the present views (TeCaFN has no per-sample selection)
    l_tcon: Tensor
    l_bicon: Tensor
    l_ap: Tensor
    pair_labels: Tensor  # [B, 2] long: 1 paired / 0 replaced, for (audio, vision)
    sources: Tensor  # [B, 2] long: which sample's audio / vision each row fused with
    similarity: dict[str, Tensor]  # "audio"/"vision": [B, B] text->m cosine matrices (no grad)


# --------------------------------------------------------------------------- losses and gate


def tcon_loss(q: Tensor, k: Tensor, tau: float, valid: Tensor) -> Tensor:
    """L_{t,m} (Eq. 6): text -> m InfoNCE only (asymmetric), on samples that have both views."""
    return info_nce(q, k, tau, valid=valid, symmetric=False)


def bicon_loss(z: Tensor, u: Tensor, tau: float) -> Tensor:
    """L_bicon = L_{tv,ta} + L_{ta,tv} (Eq. 15-16); the shared symmetric InfoNCE averages, so x2."""
    return 2.0 * info_nce(z, u, tau, symmetric=True)


@torch.no_grad()
def replacement_gate(
    sim: Tensor, valid: Tensor, p: float, k: int = 3, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Algorithm 1 + the gate: per row, with probability p take one of the top-k most similar others.

    sim [B, B] text->m similarities, valid [B] bool (m present). Returns (source index [B],
    pseudo-label [B]: 1 paired, 0 replaced). Rows without m, or with no other valid m, stay paired.
    """
    B = sim.shape[0]
    dev = sim.device
    idx = torch.arange(B, device=dev)
    if B < 2 or p <= 0.0:
        return idx, torch.ones(B, dtype=torch.long, device=dev)
    s = sim.float().masked_fill(torch.eye(B, dtype=torch.bool, device=dev), float("-inf"))
    s = s.masked_fill(~valid[None, :], float("-inf"))
    kk = min(k, B - 1)
    top = s.topk(kk, dim=1)
    n_cand = torch.isfinite(top.values).sum(1)  # [B]
    u = torch.rand(B, generator=generator).to(dev)
    r = torch.rand(B, generator=generator).to(dev)
    swap = (u < p) & valid & (n_cand > 0)
    pick = torch.minimum((r * n_cand).long(), (n_cand - 1).clamp_min(0))
    chosen = top.indices[idx, pick]
    src = torch.where(swap, chosen, idx)
    return src, (~swap).long()


# --------------------------------------------------------------------------- blocks


class MulTEncoder(nn.Module):
    """MulT-style encoder: sqrt(d)-scaled input + sinusoidal positions, embed dropout, pre-LN layers.

    Without ``kv`` it is a self-attention encoder (the a/v encoders); with ``kv`` every layer is a
    text-query cross-attention layer over ``kv`` (the cross-sample fusion, Eq. 11-12).
    """

    def __init__(
        self, d: int, heads: int, layers: int, embed_dropout: float, dropout: float, cross: bool = False
    ) -> None:
        super().__init__()
        self.d = d
        self.embed_drop = nn.Dropout(embed_dropout)
        if cross:
            self.cross = nn.ModuleList([CrossModalAttention(d, heads, 4 * d, dropout) for _ in range(layers)])
            self.ln = nn.LayerNorm(d)
        else:
            self.enc = TransformerEncoder(d, heads, layers, 4 * d, dropout)

    def _embed(self, x: Tensor, mask: Tensor) -> Tensor:
        pos = sinusoidal_positions(x.shape[1], self.d, x.device).to(x.dtype)
        return self.embed_drop(math.sqrt(self.d) * x + pos[None]) * mask[..., None].to(x.dtype)

    def forward(self, x: Tensor, mask: Tensor, kv: Tensor | None = None, kv_mask: Tensor | None = None) -> Tensor:
        x = self._embed(x, mask)
        if kv is None or kv_mask is None:
            return self.enc(x, mask)
        kv = self._embed(kv, kv_mask)
        for layer in self.cross:
            x = layer(x, mask, kv, kv_mask)
        return self.ln(x) * mask[..., None].to(x.dtype)


class UnimodalEncoder(nn.Module):
    """Audio/vision encoder of the code: Conv1d to d, MulT encoder, Linear d->4d->d_in."""

    def __init__(self, d_in: int, c: TeCaFNConfig) -> None:
        super().__init__()
        self.conv = nn.Conv1d(d_in, c.d_model, kernel_size=1, bias=False)
        self.enc = MulTEncoder(c.d_model, c.n_heads, c.enc_layers, c.embed_dropout, c.dropout)
        d = c.d_model
        self.out = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d_in))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)
        return self.out(self.enc(h, mask)) * mask[..., None].to(x.dtype)


def _conv1(x: Tensor, conv: nn.Module) -> Tensor:
    return conv(x.transpose(1, 2)).transpose(1, 2)


# --------------------------------------------------------------------------- model


class TeCaFN(nn.Module):
    """TeCaFN over a TriModalBatch; ``forward`` computes the auxiliary losses, ``loss`` combines them."""

    version = "tecafn-1"

    def __init__(self, config: TeCaFNConfig) -> None:
        super().__init__()
        c = self.config = config
        d = c.d_model
        self.enc = nn.ModuleDict({"audio": UnimodalEncoder(c.audio_dim, c), "vision": UnimodalEncoder(c.vision_dim, c)})
        self.text_drop = nn.Dropout(c.dropout)
        self.proj = nn.ModuleDict(
            {
                "text": nn.Conv1d(c.text_dim, d, 1, bias=False),
                "audio": nn.Conv1d(c.audio_dim, d, 1, bias=False),
                "vision": nn.Conv1d(c.vision_dim, d, 1, bias=False),
            }
        )
        self.null_text = nn.Parameter(torch.zeros(d))  # query used when a post has no text
        self.fusion = nn.ModuleDict(
            {
                m: MulTEncoder(d, c.n_heads, c.fusion_layers, c.embed_dropout, c.dropout, cross=True)
                for m in ("audio", "vision")
            }
        )
        self.fusion_out = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d)) for m in ("audio", "vision")}
        )
        self.ap = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 2)) for m in ("audio", "vision")}
        )
        self.bicon_map = nn.ModuleDict({m: nn.Linear(d, d, bias=False) for m in ("audio", "vision")})
        self.head = nn.Sequential(
            nn.Dropout(c.head_dropout),
            nn.Linear(d, 128),
            nn.Tanh(),
            nn.Linear(128, 256),
            nn.Tanh(),
            nn.Dropout(c.head_dropout),
            nn.Linear(256, 128),
            nn.Tanh(),
            nn.Linear(128, c.out_dim),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal on every weight matrix, as the code does."""
        for name, p in self.named_parameters():
            if p.dim() > 1 and "null_text" not in name:
                nn.init.xavier_normal_(p)

    def forward(self, batch: TriModalBatch, generator: torch.Generator | None = None) -> TriModalOutput:
        """Shared convention: prediction, gamma1 (L_tcon + L_bicon) + gamma2 L_ap, extras."""
        out = self.run(batch, generator)
        return TriModalOutput(
            pred=out.prediction,
            aux_loss=self.aux_loss(out),
            extras={"modality_weights": out.weights, "pair_labels": out.pair_labels, "sources": out.sources},
        )

    def run(self, batch: TriModalBatch, generator: torch.Generator | None = None) -> TeCaFNOutput:
        """The full pass; the gate fires only in training mode (``generator`` makes it reproducible)."""
        c = self.config
        batch = drop_views(batch, c.view_dropout if self.training else 0.0, generator)
        tmask = batch.text_mask.bool() & batch.present[:, 0, None].bool()
        has_t = tmask.any(1)
        t = _conv1(self.text_drop(batch.text), self.proj["text"]) * tmask[..., None]
        if t.shape[1] == 0:
            t = t.new_zeros(t.shape[0], 1, c.d_model)
            tmask = tmask.new_zeros(t.shape[0], 1)
        # A sample without text gets one learned query token at position 0.
        first = torch.arange(t.shape[1], device=t.device) == 0
        use_null = (~has_t)[:, None, None] & first[None, :, None]
        t = torch.where(use_null, self.null_text.to(t.dtype)[None, None, :], t)
        qmask = tmask | ((~has_t)[:, None] & first[None, :])
        q_vec = F.normalize(masked_mean(t, qmask), dim=-1)

        B = t.shape[0]
        idx = torch.arange(B, device=t.device)
        pooled_f, tcon, ap = {}, t.new_zeros(()), t.new_zeros(())
        labels, sources, sims = [], [], {}
        for i, m in ((1, "audio"), (2, "vision")):
            x = getattr(batch, m)
            mask = getattr(batch, f"{m}_mask").bool() & batch.present[:, i, None].bool()
            valid = mask.any(1)
            h = _conv1(self.enc[m](x, mask), self.proj[m]) * mask[..., None]
            k_vec = F.normalize(masked_mean(h, mask), dim=-1)
            tcon = tcon + tcon_loss(q_vec, k_vec, c.tau, valid & has_t)
            sim = (q_vec @ k_vec.t()).detach()
            sims[m] = sim
            if self.training and c.p_replace > 0:
                src, lab = replacement_gate(sim, valid, c.p_replace, c.n_hard, generator)
            else:
                src, lab = idx, torch.ones(B, dtype=torch.long, device=t.device)
            h_m, mask_m = h[src], mask[src]
            hf = self.fusion[m](t, qmask, kv=h_m, kv_mask=mask_m)
            hf = self.fusion_out[m](hf)
            pf = masked_mean(hf, qmask)
            if bool(valid.any()):
                ap = ap + F.cross_entropy(self.ap[m](pf[valid]), lab[valid])
            pooled_f[m] = pf
            labels.append(lab)
            sources.append(src)

        bicon = t.new_zeros(())
        if B >= 2:
            z, u = self.bicon_map["vision"](pooled_f["vision"]), self.bicon_map["audio"](pooled_f["audio"])
            bicon = bicon_loss(z, u, c.tau)
        zs = pooled_f["audio"] + pooled_f["vision"]
        out = self.head(zs)
        prediction = out.squeeze(-1) if c.task == "regression" else out
        # TeCaFN selects no modality per sample: the stream gets uniform weights over the present views.
        pres = torch.stack([has_t, batch.present[:, 1].bool(), batch.present[:, 2].bool()], 1).to(zs.dtype)
        w = pres / pres.sum(1, keepdim=True).clamp_min(1.0)
        return TeCaFNOutput(
            prediction=prediction,
            weights=w,
            l_tcon=tcon,
            l_bicon=bicon,
            l_ap=ap,
            pair_labels=torch.stack(labels, 1),
            sources=torch.stack(sources, 1),
            similarity=sims,
        )

    def aux_loss(self, out: TeCaFNOutput) -> Tensor:
        c = self.config
        return c.gamma1 * (out.l_tcon + out.l_bicon) + c.gamma2 * out.l_ap

    def loss(self, out: TeCaFNOutput, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        """L_task + gamma1 (L_tcon + L_bicon) + gamma2 L_ap (Eq. 19); L1 for regression as in Eq. 18."""
        task = task_loss(out.prediction, target, self.config.out_dim, regression_loss="l1")
        total = task + self.aux_loss(out)
        parts = {"task": task, "tcon": out.l_tcon, "bicon": out.l_bicon, "ap": out.l_ap, "total": total}
        return total, {k: float(v.detach()) for k, v in parts.items()}
