"""Knowledge distillation losses (Hinton et al., 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2 so its gradient
    magnitude does not shrink as T grows."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean", log_target=True,
    ) * (t * t)


def distillation_loss(teacher: nn.Module, temperature: float, alpha: float, label_smoothing: float = 0.0):
    """Loss for `training.fit`: alpha * soft KD + (1 - alpha) * hard cross-entropy."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            teacher_logits = teacher(x)
        logits = model(x)
        return alpha * hinton_kd(logits, teacher_logits, temperature) + (1 - alpha) * ce(logits, y), logits

    return loss
