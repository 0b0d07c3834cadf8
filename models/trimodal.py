"""Shared tri-modal (text / audio / vision) conventions and building blocks.

Batch convention (every tri-modal model takes a `TriModalBatch` and returns a `TriModalOutput`):

- `text [B, Lt, Dt]`, `audio [B, La, Da]`, `vision [B, Lv, Dv]`: float32 feature sequences,
  zero-padded on the right.
- `*_mask [B, L]` bool, True = a real position. Masks are prefix masks (lengths).
- `present [B, 3]` bool, columns (text, audio, vision): whether the view exists for the sample.
  A missing view has zero features and an all-False mask; `TriModalBatch.normalized()` enforces
  that (mask &= present, features zeroed where the mask is False), so models can rely on it.
- A data set without a view at all still passes a [B, 1, D] zero tensor with a False mask.

Model convention: `forward(batch) -> TriModalOutput(pred, aux_loss, extras)`, `pred` [B] for
regression (`n_outputs == 1`) or logits [B, C]; `aux_loss` is the model's extra training loss
(e.g. InfoNCE), already weighted, a 0-dim tensor (zero in eval mode is fine). The training
pipeline adds the task loss (L1/MSE or cross-entropy) itself.

Blocks: `masked_mean`, `sinusoidal_positions`/`PositionalEmbedding`, `MaskedMultiheadAttention`
(all-masked rows give zeros, never NaN), `SelfAttentionBlock`, `TransformerEncoder`,
`CrossModalAttention` (query attends over a context sequence), `info_nce`, `nt_xent`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VIEWS: tuple[str, str, str] = ("text", "audio", "vision")


@dataclass
class TriModalDims:
    """Input feature sizes and output size (1 = regression, C > 1 = C-way classification)."""

    text: int
    audio: int
    vision: int
    n_outputs: int = 1

    @property
    def task(self) -> str:
        return "regression" if self.n_outputs == 1 else "classification"


@dataclass
class TriModalBatch:
    text: Tensor
    text_mask: Tensor
    audio: Tensor
    audio_mask: Tensor
    vision: Tensor
    vision_mask: Tensor
    present: Tensor  # [B, 3] bool: text, audio, vision

    @property
    def batch_size(self) -> int:
        return int(self.text.shape[0])

    def view(self, name: str) -> tuple[Tensor, Tensor]:
        """(features, mask) of one view by name."""
        return getattr(self, name), getattr(self, f"{name}_mask")

    def to(self, device: str | torch.device) -> TriModalBatch:
        return TriModalBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def normalized(self) -> TriModalBatch:
        """Masks AND-ed with `present`; features zeroed wherever the mask is False."""
        out: dict[str, Tensor] = {"present": self.present.bool()}
        for i, name in enumerate(VIEWS):
            x, m = self.view(name)
            m = m.bool() & self.present[:, i : i + 1].bool()
            out[name] = x * m.unsqueeze(-1).to(x.dtype)
            out[f"{name}_mask"] = m
        return TriModalBatch(**out)


@dataclass
class TriModalOutput:
    pred: Tensor  # [B] regression or [B, C] logits
    aux_loss: Tensor  # 0-dim, already weighted
    extras: dict[str, Tensor] = field(default_factory=dict)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid positions: x [B, L, D], mask [B, L] -> [B, D]; zeros for empty rows."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def last_valid(x: Tensor, mask: Tensor) -> Tensor:
    """State at the last valid position of each row (prefix masks); zeros for empty rows."""
    lengths = mask.long().sum(1)
    idx = (lengths - 1).clamp_min(0)
    out = x[torch.arange(x.shape[0], device=x.device), idx]
    return out * (lengths > 0).unsqueeze(-1).to(x.dtype)


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Transformer sine/cosine position table [length, dim]."""
    pos = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


class PositionalEmbedding(nn.Module):
    """Adds a learned (positions < max_len) or sinusoidal position embedding to [B, L, D]."""

    def __init__(self, dim: int, max_len: int = 1024, learned: bool = True) -> None:
        super().__init__()
        self.dim, self.max_len, self.learned = dim, max_len, learned
        if learned:
            self.table = nn.Embedding(max_len, dim)
            nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        if self.learned and length <= self.max_len:
            pe = self.table(torch.arange(length, device=x.device))
        else:
            pe = sinusoidal_positions(length, self.dim, x.device)
        return x + pe.unsqueeze(0).to(x.dtype)


class MaskedMultiheadAttention(nn.Module):
    """Multi-head attention with key padding masks; a query with no valid key gets zeros."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, kdim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.dim, self.heads, self.hd = dim, heads, dim // heads
        kdim = kdim or dim
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kdim, dim)
        self.v = nn.Linear(kdim, dim)
        self.o = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, query: Tensor, key: Tensor, key_mask: Tensor | None = None, return_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        b, lq, _ = query.shape
        lk = key.shape[1]
        q = self.q(query).view(b, lq, self.heads, self.hd).transpose(1, 2)
        k = self.k(key).view(b, lk, self.heads, self.hd).transpose(1, 2)
        v = self.v(key).view(b, lk, self.heads, self.hd).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.hd)  # [B, H, Lq, Lk]
        if key_mask is not None:
            km = key_mask.bool()[:, None, None, :]
            scores = scores.masked_fill(~km, float("-inf"))
            any_key = km.any(-1, keepdim=True)
            scores = torch.where(any_key, scores, torch.zeros_like(scores))
            w = torch.softmax(scores, dim=-1) * any_key.to(scores.dtype)
        else:
            w = torch.softmax(scores, dim=-1)
        out = (self.drop(w) @ v).transpose(1, 2).reshape(b, lq, self.dim)
        out = self.o(out)
        if key_mask is not None:  # no valid key -> no message (not the output bias)
            out = out * key_mask.bool().any(-1).view(b, 1, 1).to(out.dtype)
        return (out, w) if return_weights else out


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, act: str = "relu") -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU() if act == "gelu" else nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SelfAttentionBlock(nn.Module):
    """Pre-LN transformer layer (self-attention + FFN); padded positions are re-zeroed."""

    def __init__(self, dim: int, heads: int, ff: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MaskedMultiheadAttention(dim, heads, dropout)
        self.ff = FeedForward(dim, ff or 4 * dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h, mask))
        x = x + self.drop(self.ff(self.ln2(x)))
        return x * mask.unsqueeze(-1).to(x.dtype)


class TransformerEncoder(nn.Module):
    """A stack of `SelfAttentionBlock`s with a final LayerNorm (masked positions stay zero)."""

    def __init__(self, dim: int, heads: int, layers: int, ff: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(SelfAttentionBlock(dim, heads, ff, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x * mask.unsqueeze(-1).to(x.dtype)
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x) * mask.unsqueeze(-1).to(x.dtype)


class CrossModalAttention(nn.Module):
    """Query sequence attends over a context sequence (pre-LN, residual, FFN).

    x [B, Lq, D] (query_mask [B, Lq]), ctx [B, Lk, D] (ctx_mask [B, Lk]) -> [B, Lq, D].
    With `residual=False` the output is only the attended context (+ FFN), so a missing
    context contributes exactly zero. Masked query positions are zeroed.
    """

    def __init__(
        self, dim: int, heads: int, ff: int | None = None, dropout: float = 0.1, residual: bool = True
    ) -> None:
        super().__init__()
        self.residual = residual
        self.ln_q, self.ln_k, self.ln_f = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MaskedMultiheadAttention(dim, heads, dropout)
        self.ff = FeedForward(dim, ff or 4 * dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, query_mask: Tensor, ctx: Tensor, ctx_mask: Tensor) -> Tensor:
        a = self.drop(self.attn(self.ln_q(x), self.ln_k(ctx), ctx_mask))
        h = x + a if self.residual else a
        has_ctx = ctx_mask.bool().any(-1).view(-1, 1, 1).to(h.dtype)
        ffo = self.drop(self.ff(self.ln_f(h)))
        h = h + (ffo if self.residual else ffo * has_ctx)
        return h * query_mask.unsqueeze(-1).to(h.dtype)


def info_nce(
    a: Tensor, b: Tensor, tau: float = 0.1, valid: Tensor | None = None, symmetric: bool = True, normalize: bool = True
) -> Tensor:
    """In-batch InfoNCE between paired rows of a [N, D] and b [N, D] (positives on the diagonal).

    Only cross-view negatives are used (a_i against every b_j). `valid` [N] bool drops rows (e.g.
    samples where one of the views is missing) both as anchors and as negatives. Returns the mean
    cross-entropy (a->b, plus b->a averaged in when `symmetric`); 0 when fewer than 2 valid rows.
    `normalize=True, tau=1` without `symmetric` is KuDA's NCE (cosine logits, no temperature).
    """
    if valid is not None:
        a, b = a[valid.bool()], b[valid.bool()]
    if a.shape[0] < 2:
        return a.sum() * 0.0 + b.sum() * 0.0
    if normalize:
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.t() / tau
    target = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.t(), target))
    return loss


def nt_xent(a: Tensor, b: Tensor, tau: float = 0.1, valid: Tensor | None = None) -> Tensor:
    """SimCLR NT-Xent over the 2N views: each row's positive is its pair, negatives are the
    other 2N-2 rows of both views (cosine similarity / tau). 0 when fewer than 2 valid rows."""
    if valid is not None:
        a, b = a[valid.bool()], b[valid.bool()]
    n = a.shape[0]
    if n < 2:
        return a.sum() * 0.0 + b.sum() * 0.0
    z = F.normalize(torch.cat([a, b]), dim=-1)
    sim = z @ z.t() / tau
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def task_loss(pred: Tensor, target: Tensor, n_outputs: int, regression_loss: str = "l1") -> Tensor:
    """L1 / MSE for regression (pred [B]), cross-entropy for classification (pred [B, C])."""
    if n_outputs == 1:
        p, t = pred.reshape(-1), target.reshape(-1).to(pred.dtype)
        return F.mse_loss(p, t) if regression_loss == "mse" else F.l1_loss(p, t)
    return F.cross_entropy(pred, target.long())


# --------------------------------------------------------------------------------------------
# Added by the AMSGFN/TeCaFN helper: modality dropout (docs/architecture.md "Missing modalities").
# --------------------------------------------------------------------------------------------
def drop_views(batch: TriModalBatch, p: float, generator: torch.Generator | None = None) -> TriModalBatch:
    """Training-time modality dropout: each present view of each sample is dropped with probability
    p, but a sample always keeps at least one of its views (so the stream's text-only or image-only
    posts are seen in training). Returns a normalized batch; p <= 0 returns it unchanged."""
    batch = batch.normalized()
    if p <= 0:
        return batch
    present = batch.present.bool()
    keep = torch.rand(present.shape, generator=generator).to(present.device) >= p
    new = present & keep
    empty = ~new.any(1) & present.any(1)
    if bool(empty.any()):  # restore one random originally-present view for rows that lost all
        score = torch.rand(present.shape, generator=generator).to(present.device).masked_fill(~present, -1.0)
        pick = torch.nn.functional.one_hot(score.argmax(1), 3).bool()
        new = torch.where(empty[:, None], pick, new)
    return TriModalBatch(
        text=batch.text,
        text_mask=batch.text_mask,
        audio=batch.audio,
        audio_mask=batch.audio_mask,
        vision=batch.vision,
        vision_mask=batch.vision_mask,
        present=new,
    ).normalized()
