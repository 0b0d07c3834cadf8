"""SPP-SCL losses (Eqs. 4-6) and the conditional check of Algorithm 1 (lines 8-12).

- :func:`supcon_loss` -- intra-modal supervised contrastive loss (L_cli on I_p, L_clt on T_p).
  Features are L2-normalised, s(i,j) = cosine, tau = 0.07. Positives: same label, j != i.
  Denominator: all k != i. Each anchor averages over its positives (Khosla et al. L_out);
  anchors with no positive in the batch are skipped.
- :func:`inter_modal_loss` -- L_clm: image rows against text columns. Positives: texts with the
  anchor image's label, the paired text included (official code; the paper writes m != n).
  Denominator: all B texts.
- :func:`alignment_check` -- S = sigmoid(sim(T', I')), d = mean(diag S), c = #{S < d} over the
  whole B x B matrix, c_mask = #same-label pairs (diagonal included); the second step fires
  iff c < floor(alpha * c_mask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812


def _masked_mean_log_prob(logits: Tensor, pos: Tensor, denom_mask: Tensor) -> Tensor:
    """Mean over anchors (with >= 1 positive) of the mean log-probability of their positives."""
    logits = logits.masked_fill(~denom_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    log_prob = log_prob.masked_fill(~denom_mask, 0.0)
    n_pos = pos.sum(1)
    has = n_pos > 0
    if not bool(has.any()):
        return logits.new_zeros(()) + 0.0 * logits.masked_fill(~denom_mask, 0.0).sum()
    per_anchor = (log_prob * pos).sum(1)[has] / n_pos[has]
    return -per_anchor.mean()


def supcon_loss(z: Tensor, labels: Tensor, tau: float = 0.07) -> Tensor:
    """Intra-modal supervised contrastive loss on features z [B, D] (Eqs. 4-5)."""
    z = F.normalize(z, dim=-1)
    logits = z @ z.T / tau
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    same = labels[:, None] == labels[None, :]
    return _masked_mean_log_prob(logits, same & ~eye, ~eye)


def inter_modal_loss(
    image: Tensor, text: Tensor, labels: Tensor, tau: float = 0.07, include_pair: bool = True
) -> Tensor:
    """Inter-modal supervised contrastive loss L_clm (Eq. 6): image anchors, text candidates."""
    logits = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T / tau
    pos = labels[:, None] == labels[None, :]
    if not include_pair:
        pos = pos & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return _masked_mean_log_prob(logits, pos, torch.ones_like(pos))


@dataclass(frozen=True)
class AlignmentCheck:
    d: float  # mean of diag(S)
    c: int  # entries of S below d
    c_mask: int  # same-label pairs, diagonal included
    threshold: int  # floor(alpha * c_mask)
    fire: bool  # c < threshold -> apply L_clm


def similarity_matrix(image: Tensor, text: Tensor, similarity: str = "cosine") -> Tensor:
    """S = sigmoid(T' I'^T): cosine (paper) or raw dot products (official code)."""
    if similarity == "cosine":
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    elif similarity != "raw":
        raise ValueError(f"similarity must be 'cosine' or 'raw', not {similarity!r}")
    return torch.sigmoid(text @ image.T)


def check_from_similarity(s: Tensor, labels: Tensor, alpha: float = 2.0 / 3.0) -> AlignmentCheck:
    """Algorithm 1 lines 9-12 on a given similarity matrix S [B, B]."""
    d = s.diagonal().mean()
    c = int((s < d).sum())
    c_mask = int((labels[:, None] == labels[None, :]).sum())
    threshold = math.floor(alpha * c_mask + 1e-9)
    return AlignmentCheck(float(d), c, c_mask, threshold, c < threshold)


def alignment_check(
    image: Tensor, text: Tensor, labels: Tensor, alpha: float = 2.0 / 3.0, similarity: str = "cosine"
) -> AlignmentCheck:
    """The conditional statement deciding whether the inter-modal step runs."""
    with torch.no_grad():
        return check_from_similarity(similarity_matrix(image, text, similarity), labels, alpha)
