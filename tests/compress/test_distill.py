"""Hinton distillation: the soft term is a proper divergence and training on it moves the student."""

from __future__ import annotations

import torch

from edge_pipeline.compress.distill import distillation_loss, hinton_kd
from edge_pipeline.compress.names import FEATURE_LOSSES


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
    assert loss.item() < 0.1 * first
    assert all(not p.requires_grad for p in teacher.parameters())


# -- feature distillation ------------------------------------------------------------------

import copy  # noqa: E402

import pytest  # noqa: E402
from torch import nn  # noqa: E402

from edge_pipeline.compress.distill import DistillLoss, FeatureSpec, pair_layers, stage_boundaries  # noqa: E402
from edge_pipeline.models import BaseSpec, build_model  # noqa: E402


def tiny_cnn(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 4))


def train_on(loss_fn, student, steps: int = 60, lr: float = 0.05):
    torch.manual_seed(1)
    x = torch.randn(32, 1, 8, 8)
    y = torch.full((32,), -100)  # labels must not be needed by a features-only objective
    opt = torch.optim.Adam(list(student.parameters()) + loss_fn.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        loss, _ = loss_fn(student, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss_fn.terms())
    return history


@pytest.mark.parametrize("kind", FEATURE_LOSSES)
def test_feature_distillation_reduces_its_own_term_through_an_adapter(kind):
    torch.manual_seed(0)
    teacher, student = tiny_cnn(8), tiny_cnn(4)  # the student has fewer channels: a 1x1 adapter bridges them
    pairs = [("1", "1"), ("3", "3")]
    loss_fn = DistillLoss(teacher, objective="features", features=FeatureSpec(pairs, kind), student=student,
                          example=torch.zeros(1, 1, 8, 8))
    assert [type(a).__name__ for a in loss_fn.adapters] == ["Conv2d", "Conv2d"]
    history = train_on(loss_fn, student)
    term = f"feature_{kind}"
    assert set(history[0]) == {term}
    assert history[-1][term] < 0.5 * history[0][term]


def test_equal_channels_need_no_adapter_unless_asked():
    teacher, student = tiny_cnn(4), tiny_cnn(4)
    for adapter, expected in (("auto", "Identity"), ("always", "Conv2d")):
        loss_fn = DistillLoss(teacher, objective="logits+features", features=FeatureSpec([("1", "1")], "mse", 1.0, adapter),
                              student=student, example=torch.zeros(1, 1, 8, 8))
        assert type(loss_fn.adapters[0]).__name__ == expected
        loss_fn.close()


def test_combined_objective_reports_every_term():
    teacher, student = tiny_cnn(8), tiny_cnn(4)
    loss_fn = DistillLoss(teacher, objective="logits+features", features=FeatureSpec([("3", "3")], "cosine"),
                          student=student, example=torch.zeros(1, 1, 8, 8))
    loss_fn(student, torch.randn(4, 1, 8, 8), torch.randint(0, 4, (4,)))
    assert set(loss_fn.terms()) == {"kd", "ce", "feature_cosine"}


def test_stage_boundaries_are_the_last_map_at_each_resolution():
    resnet = build_model(BaseSpec("resnet8", 10, 1, 16))
    assert [n for n, _ in stage_boundaries(resnet, torch.zeros(1, 1, 16, 16))] == ["layer1", "layer2", "layer3", "pool"]
    vgg = build_model(BaseSpec("vgg_small", 10, 1, 16))
    assert [n for n, _ in stage_boundaries(vgg, torch.zeros(1, 1, 16, 16))] == ["features.5", "features.12", "features.19", "features"]


def test_auto_pairs_match_a_pruned_student_to_its_teacher():
    from edge_pipeline.compress.pruning import Target, prune_channels

    teacher = build_model(BaseSpec("resnet8", 10, 1, 16)).eval()
    student = copy.deepcopy(teacher)
    prune_channels(student, torch.zeros(1, 1, 16, 16), Target("ratio", 0.5))
    pairs = pair_layers(student, teacher, torch.zeros(1, 1, 16, 16), "auto")
    assert pairs == [("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3"), ("pool", "pool")]
    with pytest.raises(ValueError, match="student has no module named 'nope'"):
        pair_layers(student, teacher, torch.zeros(1, 1, 16, 16), {"nope": "layer1"})
