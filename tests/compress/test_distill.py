"""Hinton distillation: the soft term is a proper divergence and training on it moves the student."""

from __future__ import annotations

import torch

from edge_pipeline.compress.distill import distillation_loss, hinton_kd


def test_kd_is_zero_for_identical_logits_and_positive_otherwise():
    logits = torch.randn(8, 10)
    assert float(hinton_kd(logits, logits, 4.0)) < 1e-6
    assert float(hinton_kd(torch.randn(8, 10), logits, 4.0)) > 0


def test_kd_gradient_scale_is_temperature_invariant_in_first_order():
    """Hinton's T^2 factor: for a student near the teacher, the gradient magnitude hardly depends on T
    (without it, it would fall like 1/T^2: a factor 16 between T=2 and T=8)."""
    torch.manual_seed(0)
    teacher = torch.randn(64, 10)
    student = (teacher + 0.01 * torch.randn(64, 10)).requires_grad_()
    grads = []
    for t in (2.0, 8.0):
        student.grad = None
        hinton_kd(student, teacher, t).backward()
        grads.append(float(student.grad.norm()))
    assert 0.7 < grads[0] / grads[1] < 1.5


def test_training_on_the_distillation_loss_reduces_it():
    torch.manual_seed(0)
    teacher = torch.nn.Linear(6, 4)
    student = torch.nn.Linear(6, 4)
    loss_fn = distillation_loss(teacher, temperature=3.0, alpha=1.0)
    x = torch.randn(128, 6)
    y = torch.randint(0, 4, (128,))
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    first = None
    for _ in range(100):
        loss, _ = loss_fn(student, x, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.1 * first
    assert all(not p.requires_grad for p in teacher.parameters())
