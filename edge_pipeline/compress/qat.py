"""Quantization-aware training that matches the TFLite int8 scheme the converter will apply.

While training, every convolution and Linear sees
- its weights with the following BatchNorm folded in, rounded to symmetric int8 ([-127, 127], per
  output channel or per tensor, scale = max|w| / 127), as the converter does; BatchNorm statistics
  are frozen (the layers normalize with their running averages, so the folded factor the rounding
  uses is the one the converter will fold);
- its input rounded to asymmetric int8 over the [min, max] that input has on the calibration set,
  re-measured every few steps as the weights move: the range the converter's min/max calibration
  will measure on the final model (an EMA of batch ranges, as TF's QAT keeps, came out up to 2.2x
  narrower than what the converter then calibrated on our test model, so the file's steps were
  coarser than the ones trained for).
Rounding passes gradients straight through (STE); the weights are a torch parametrization of each
layer. At the end the parametrization is removed keeping the rounded values: the weights sit on the
grid (like AdaRound's, the converter's own rounding then returns exactly the integers QAT trained
with) and the saved model is an ordinary float model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from .equalize import WEIGHTED
from .int8sim import QMAX, activation_ranges, fake_quantize, fold_factors


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def fake_quant_folded(folded: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """int8 rounding of a folded weight (per output channel or per tensor, symmetric), differentiable (STE)."""
    shape = (-1, *[1] * (folded.dim() - 1))
    peak = folded.detach().flatten(1).abs().amax(1).view(shape) if per_channel else folded.detach().abs().max()
    scale = (peak / QMAX).clamp_min(1e-12)
    return torch.clamp(_round_ste(folded / scale), -QMAX, QMAX) * scale


def _safe_factor(factor: torch.Tensor, dims: int) -> torch.Tensor:
    return torch.where(factor.abs() > 1e-12, factor, torch.ones_like(factor)).view(-1, *[1] * (dims - 1))


def fake_quant_activation(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return x + (fake_quantize(x, low, high) - x).detach()


class WeightFakeQuant(nn.Module):
    """A parametrization: the layer's weight as the converter will round it.

    The tensor the optimizer trains is the FOLDED weight (weight x the BatchNorm factor after it),
    not the weight. With BatchNorm frozen, a step on the raw weight moves the layer's normalized
    output by factor^2 times the step a folded network would take: mobilenet_v3_small's depthwise
    convs fold with factors up to 31 (~1000x the intended step; QAT's loss went to nan within an
    epoch). Training the folded weight is plain SGD on the network the converter will write. (A
    layer whose INPUT is badly scaled, like the tests' hard model's consumer of a 1000x channel, still
    needs `equalize` first.)"""

    factor: torch.Tensor

    def __init__(self, factor: torch.Tensor, per_channel: bool) -> None:
        super().__init__()
        self.register_buffer("factor", factor.clone())
        self.per_channel = per_channel

    def forward(self, folded: torch.Tensor) -> torch.Tensor:
        return fake_quant_folded(folded, self.per_channel) / _safe_factor(self.factor, folded.dim())

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * _safe_factor(self.factor, weight.dim())


class QuantAware:
    """Fake quantization attached to a model's weighted layers (see the module doc)."""

    def __init__(self, model: nn.Module, calibration: torch.Tensor, per_channel: bool) -> None:
        self.model, self.per_channel = model, per_channel
        model.eval()
        self.factors = fold_factors(model)
        modules = dict(model.named_modules())
        self.layers = {name: modules[name] for name in self.factors}
        self.calibration = calibration
        self._measuring = False
        self.ranges = activation_ranges(model, calibration)
        self.norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _pre_hook(self, name: str):
        def hook(_module, args):
            if self._measuring:
                return None
            low, high = self.ranges.get(name, (0.0, 0.0))
            return (fake_quant_activation(args[0], low, high), *args[1:])

        return hook

    def recalibrate(self) -> None:
        """Re-measure every input range on the calibration set, with the weights as they are now
        (rounded) and the inputs unrounded, as the converter will."""
        was_training = self.model.training
        self.model.eval()
        self._measuring = True
        try:
            self.ranges = activation_ranges(self.model, self.calibration)
        finally:
            self._measuring = False
            self.model.train(was_training)

    def every(self, steps: int):
        """An `after_step` callback for the training loop: recalibrate every `steps` optimizer steps."""
        count = [0]

        def after_step(_model: nn.Module) -> None:
            count[0] += 1
            if count[0] % steps == 0:
                self.recalibrate()

        return after_step

    @contextmanager
    def attached(self) -> Iterator[None]:
        """Fake quantization on, BatchNorm statistics frozen. On exit the weights stay rounded: each
        layer keeps the integers QAT trained with (times the scale), so the converter's own rounding
        returns them exactly; the model is an ordinary float model again."""
        handles = [layer.register_forward_pre_hook(self._pre_hook(name)) for name, layer in self.layers.items()]
        # BatchNorm normalizes with its running averages even in train mode: the folded factor stays fixed.
        handles += [norm.register_forward_pre_hook(_freeze) for norm in self.norms]
        for name, layer in self.layers.items():
            parametrize.register_parametrization(layer, "weight", WeightFakeQuant(self.factors[name], self.per_channel))
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            for layer in self.layers.values():
                if parametrize.is_parametrized(layer, "weight"):
                    parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)

    def range_report(self, final: dict[str, tuple[float, float]]) -> list[dict[str, Any]]:
        """The input ranges QAT last trained with against the min/max the converter will calibrate on
        the final model (they differ by what the steps since the last recalibration moved)."""
        rows = []
        for name, (low, high) in self.ranges.items():
            f_low, f_high = final.get(name, (0.0, 0.0))
            learned, measured = high - low, f_high - f_low
            rows.append({"layer": name, "trained": [round(low, 5), round(high, 5)], "calibrated": [round(f_low, 5), round(f_high, 5)],
                         "scale_ratio": round(measured / learned, 4) if learned > 0 else None})
        return rows


def _freeze(module: nn.Module, _args: Any) -> None:
    module.training = False


def weighted_layers(model: nn.Module) -> int:
    return sum(isinstance(m, WEIGHTED) for m in model.modules())
