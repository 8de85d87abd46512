"""Knowledge distillation losses for `training.fit`.

- Hinton et al. (2015): KL between temperature-softened teacher and student outputs (`hinton_kd`).
- Feature distillation at paired layers:
  - `mse` (FitNets, Romero et al. 2015; TinyBERT, Jiao et al. 2020): mean squared error between the
    student's feature map, through a learned 1x1 convolution when channel counts differ (a pruned
    student has fewer channels), and the teacher's;
  - `cosine` (DistilBERT, Sanh et al. 2019): 1 - cosine similarity of the channel vectors at every
    position (direction, not scale, is aligned).
  Layer pairs are given by name (the same name in both models, or student -> teacher), or chosen
  automatically at stage boundaries: the last module output at each spatial resolution.
- Objectives: `logits` (alpha * KD + (1 - alpha) * CE), `features` (feature term only: no labels and
  no logits, TinyBERT's first phase), `logits+features` (both).

`DistillLoss` keeps a running mean of each term (`terms()`), so a stage can report them and tests
can check that training lowers each one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .names import OBJECTIVES


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2 so its gradient
    magnitude does not shrink as T grows."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean", log_target=True,
    ) * (t * t)


def feature_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student, teacher)


def feature_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cos between channel vectors, averaged over samples and positions."""
    return (1.0 - F.cosine_similarity(student, teacher, dim=1, eps=1e-8)).mean()


FEATURE_FUNCTIONS = {"mse": feature_mse, "cosine": feature_cosine}


def freeze(teacher: nn.Module) -> nn.Module:
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _on(teacher: nn.Module, x: torch.Tensor) -> nn.Module:
    """The teacher on the student's device (moved once: distributed runs train on GPUs)."""
    p = next(teacher.parameters(), None)
    if p is not None and p.device != x.device:
        teacher.to(x.device)
    return teacher


def distillation_loss(teacher: nn.Module, temperature: float, alpha: float, label_smoothing: float = 0.0):
    """Loss for `training.fit`: alpha * soft KD + (1 - alpha) * hard cross-entropy."""
    return DistillLoss(teacher, temperature=temperature, alpha=alpha, label_smoothing=label_smoothing)


# ---------------------------------------------------------------------------------------------
# Feature taps and layer pairing


class FeatureTap:
    """Forward hooks that keep the latest output of named modules."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for name in dict.fromkeys(names):
            module = model.get_submodule(name)
            self.handles.append(module.register_forward_hook(self._keep(name)))

    def _keep(self, name: str):
        def hook(_module, _inp, out):
            self.outputs[name] = out if isinstance(out, torch.Tensor) else out[0]

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def stage_boundaries(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(module name, output shape) of the last module to finish at each spatial resolution, in order.

    The outermost module wins ties (a container finishes after its last child), so a ResNet gives
    its `layerN` blocks and a VGG the activation before each pooling."""
    finished: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m, _i, out, name=name):
            if isinstance(out, torch.Tensor) and out.dim() == 4:
                finished.append((name, tuple(out.shape)))

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(example[:1])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    last: dict[tuple[int, ...], tuple[str, tuple[int, ...]]] = {}  # spatial size -> last layer at it
    order: list[tuple[int, ...]] = []
    for name, shape in finished:
        res = shape[2:]
        if res not in last:
            order.append(res)
        last[res] = (name, shape)
    return [last[r] for r in order]


def pair_layers(student: nn.Module, teacher: nn.Module, example: torch.Tensor,
                layers: str | list[str] | dict[str, str]) -> list[tuple[str, str]]:
    """(student layer, teacher layer) pairs: by name, or `auto` at matching stage boundaries."""
    if layers == "auto":
        s = {shape[2:]: name for name, shape in stage_boundaries(student, example)}
        t = stage_boundaries(teacher, example)
        pairs = [(s[shape[2:]], name) for name, shape in t if shape[2:] in s]
        if not pairs:
            raise ValueError("no spatial resolution is shared by student and teacher feature maps")
        return pairs
    if isinstance(layers, dict):
        pairs = list(layers.items())
    else:
        pairs = [(name, name) for name in layers]
    for s_name, t_name in pairs:
        for model, name, who in ((student, s_name, "student"), (teacher, t_name, "teacher")):
            try:
                model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"the {who} has no module named {name!r}") from None
    return pairs


def make_adapter(student_channels: int, teacher_channels: int, always: bool) -> nn.Module:
    """A learned 1x1 conv from student to teacher channels (identity when equal and not forced)."""
    if student_channels == teacher_channels and not always:
        return nn.Identity()
    adapter = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
    nn.init.kaiming_normal_(adapter.weight, nonlinearity="linear")
    return adapter


def _match(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Same spatial size (the larger map is average-pooled) so any pair of layers compares."""
    if s.dim() == 4 and t.dim() == 4 and s.shape[2:] != t.shape[2:]:
        size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
        s, t = F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size)
    return s, t


# ---------------------------------------------------------------------------------------------
# The combined loss


@dataclass
class FeatureSpec:
    pairs: list[tuple[str, str]]
    loss: str = "mse"
    weight: float = 1.0
    adapter: str = "auto"  # "auto": only when channel counts differ; "always"


class DistillLoss:
    """Callable (model, x, y) -> (loss, logits) for `training.fit`."""

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.7, label_smoothing: float = 0.0,
                 objective: str = "logits", features: FeatureSpec | None = None, student: nn.Module | None = None,
                 example: torch.Tensor | None = None) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
        if "features" in objective and (features is None or student is None or example is None):
            raise ValueError("feature distillation needs layer pairs, the student and an example input")
        self.teacher = freeze(teacher)
        self.temperature, self.alpha, self.objective = temperature, alpha, objective
        self.ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.features = features if "features" in objective else None
        self.adapters = nn.ModuleList()
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        if self.features is not None:
            assert student is not None and example is not None  # checked above
            self.student_tap = FeatureTap(student, [s for s, _ in self.features.pairs])
            self.teacher_tap = FeatureTap(teacher, [t for _, t in self.features.pairs])
            self.adapters = self._build_adapters(student, example)

    @torch.no_grad()
    def _build_adapters(self, student: nn.Module, example: torch.Tensor) -> nn.ModuleList:
        assert self.features is not None
        was_training = student.training
        student.eval()
        student(example[:1])
        self.teacher(example[:1])
        student.train(was_training)
        adapters = nn.ModuleList()
        for s_name, t_name in self.features.pairs:
            s, t = self.student_tap.outputs[s_name], self.teacher_tap.outputs[t_name]
            if s.dim() != t.dim() or s.dim() not in (2, 4):
                raise ValueError(f"feature pair {s_name} -> {t_name}: shapes {tuple(s.shape)} and {tuple(t.shape)} do not compare")
            adapter = make_adapter(s.shape[1], t.shape[1], self.features.adapter == "always")
            if s.dim() == 2 and isinstance(adapter, nn.Conv2d):  # vectors: a linear map is the 1x1 conv
                adapter = nn.Linear(s.shape[1], t.shape[1], bias=False)
            adapters.append(adapter)
        return adapters

    def parameters(self) -> list[nn.Parameter]:
        """The adapters' parameters: pass them to `fit(extra_params=...)`."""
        return list(self.adapters.parameters())

    def feature_term(self) -> torch.Tensor:
        assert self.features is not None  # only called for a feature objective
        fn = FEATURE_FUNCTIONS[self.features.loss]
        terms = []
        for (s_name, t_name), adapter in zip(self.features.pairs, self.adapters):
            s, t = self.student_tap.outputs[s_name], self.teacher_tap.outputs[t_name]
            adapter.to(s.device)
            s, t = _match(adapter(s), t.detach())
            terms.append(fn(s, t))
        return torch.stack(terms).mean()

    def _note(self, name: str, value: torch.Tensor) -> None:
        self._sums[name] = self._sums.get(name, 0.0) + float(value.detach())
        self._counts[name] = self._counts.get(name, 0) + 1

    def terms(self, reset: bool = True) -> dict[str, float]:
        """Mean of each term since the last reset."""
        out = {k: self._sums[k] / self._counts[k] for k in self._sums}
        if reset:
            self._sums.clear()
            self._counts.clear()
        return out

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            teacher_logits = _on(self.teacher, x)(x)
        logits = model(x)
        total = logits.new_zeros(())
        if "logits" in self.objective:
            kd = hinton_kd(logits, teacher_logits, self.temperature)
            ce = self.ce(logits, y)
            self._note("kd", kd)
            self._note("ce", ce)
            total = total + self.alpha * kd + (1 - self.alpha) * ce
        if self.features is not None:
            feat = self.feature_term()
            self._note(f"feature_{self.features.loss}", feat)
            total = total + self.features.weight * feat
        return total, logits

    def close(self) -> None:
        if self.features is not None:
            self.student_tap.remove()
            self.teacher_tap.remove()
