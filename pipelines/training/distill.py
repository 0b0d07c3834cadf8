"""Knowledge distillation ("Distilling the Knowledge in a Neural Network", Hinton, Vinyals and
Dean, 2015): the student matches the teacher's softened class distribution as well as the label.

    loss = (1 - alpha) * CE(student, label) + alpha * T^2 * KL(teacher_T || student_T)

where x_T is a distribution sharpened or softened by temperature T (logits / T, or for the
teacher's stored probabilities p^(1/T) renormalised: the same thing). T^2 keeps the soft term's
gradient on the scale of the hard one as T grows. Rows without a teacher label (`has_soft`
False) get the hard term alone.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def soften(probs: Tensor, temperature: float) -> Tensor:
    """p^(1/T) renormalised: the teacher's distribution at temperature T from its T=1 probabilities."""
    logp = probs.clamp_min(1e-8).log() / temperature
    return logp.softmax(-1)


def distillation_loss(
    logits: Tensor,
    target: Tensor,
    teacher_probs: Tensor,
    has_soft: Tensor,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
    weights: Tensor | None = None,
) -> Tensor:
    """Mean over the batch of the per-row loss above (optionally weighted per row)."""
    hard = F.cross_entropy(logits, target, reduction="none", label_smoothing=label_smoothing)
    t = soften(teacher_probs, temperature)
    log_s = F.log_softmax(logits / temperature, -1)
    kl = (t * (t.clamp_min(1e-8).log() - log_s)).sum(-1) * temperature**2
    a = alpha * has_soft.to(logits.dtype)
    per_row = (1 - a) * hard + a * kl
    if weights is not None:
        per_row = per_row * weights
    return per_row.mean()
