"""Distillation loss: the hard term alone at alpha 0, zero soft term when the student matches the
teacher, gradients toward the teacher, and rows without a teacher label get the hard term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipelines.training.distill import distillation_loss, soften


def _batch():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    teacher = torch.softmax(torch.randn(6, 3) * 2, -1)
    return logits, target, teacher


def test_alpha_zero_is_cross_entropy() -> None:
    logits, target, teacher = _batch()
    loss = distillation_loss(logits, target, teacher, torch.ones(6, dtype=torch.bool), 0.0, 2.0, 0.05)
    assert torch.allclose(loss, F.cross_entropy(logits, target, label_smoothing=0.05))


def test_soft_term_vanishes_when_the_student_is_the_teacher() -> None:
    _, target, teacher = _batch()
    student = teacher.log()  # same distribution at any temperature
    soft_only = distillation_loss(student, target, teacher, torch.ones(6, dtype=torch.bool), 1.0, 3.0)
    assert abs(float(soft_only)) < 1e-5
    assert torch.allclose(soften(teacher, 1.0), teacher, atol=1e-6)
    assert float(soften(teacher, 4.0).max()) < float(teacher.max())  # a higher T is softer


def test_gradient_moves_the_student_toward_the_teacher() -> None:
    logits, target, teacher = _batch()
    before = F.kl_div(F.log_softmax(logits, -1), teacher, reduction="batchmean")
    opt = torch.optim.SGD([logits], lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        distillation_loss(logits, target, teacher, torch.ones(6, dtype=torch.bool), 1.0, 1.0).backward()
        opt.step()
    after = F.kl_div(F.log_softmax(logits, -1), teacher, reduction="batchmean").detach()
    assert float(after) < 0.02 * float(before.detach())


def test_rows_without_a_teacher_label_get_the_hard_term() -> None:
    logits, target, teacher = _batch()
    none = torch.zeros(6, dtype=torch.bool)
    loss = distillation_loss(logits, target, teacher, none, 0.9, 2.0)
    assert torch.allclose(loss, F.cross_entropy(logits, target))
