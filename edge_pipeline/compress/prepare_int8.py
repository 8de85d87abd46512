"""Preparing a model for int8 before conversion: the methods the quantize stage can apply, in order,
each measured by what it bought (simulated int8 accuracy and agreement with the float model) and
what it cost (seconds, and for `relu6_to_relu` the float accuracy it changed).

Order: ReLU6 -> ReLU (only so that equalization can reach the pairs through them), cross-layer
equalization with high-bias absorption, AdaRound (on the equalized weights), then bias correction
(which must see the final weights; after AdaRound the weights are on the grid and it has little left).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..models.edits import Edit
from ..models.store import TrackedModel
from .adaround import adaround
from .bias_correction import correct_biases, correct_biases_analytic
from .equalize import absorb_high_biases, equalize, find_pairs
from .int8sim import simulated

Loader = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


@torch.no_grad()
def _logits(module: nn.Module, loader: Loader) -> tuple[torch.Tensor, torch.Tensor]:
    module.eval()
    outputs, labels = [], []
    for x, y in loader():
        outputs.append(module(x))
        labels.append(y)
    return torch.cat(outputs), torch.cat(labels)


def _measure(module: nn.Module, loader: Loader, calibration: torch.Tensor, per_channel: bool,
             reference: torch.Tensor) -> dict[str, float]:
    """Float and simulated-int8 test accuracy of `module`, and the int8 top-1 agreement with `reference`."""
    float_logits, labels = _logits(module, loader)
    with simulated(module, calibration, per_channel) as quantized:
        int8_logits, _ = _logits(quantized, loader)
    return {
        "float_accuracy": round(float((float_logits.argmax(1) == labels).float().mean()), 6),
        "int8_accuracy": round(float((int8_logits.argmax(1) == labels).float().mean()), 6),
        "int8_agreement": round(float((int8_logits.argmax(1) == reference.argmax(1)).float().mean()), 6),
    }


def replace_relu6(model: TrackedModel) -> list[str]:
    """Every nn.ReLU6 module becomes nn.ReLU, recorded as an edit (so the saved model reloads)."""
    edit = Edit("relu6_to_relu")
    paths = [name for name, m in model.module.named_modules() if isinstance(m, nn.ReLU6) and name]
    for path in paths:
        edit.replace(model.module, path, nn.ReLU(inplace=bool(getattr(model.module.get_submodule(path), "inplace", False))))
    if paths:
        edit.summary = {"replaced": len(paths)}
        model.edits.append(edit)
    return paths


def equalize_in_place(module: nn.Module) -> dict[str, Any]:
    """Cross-layer equalization, then high-bias absorption, on `module` (same float function)."""
    report = equalize(module)
    absorbed = absorb_high_biases(module, find_pairs(module)[0])
    return {"pairs": report.pairs, "skipped": report.skipped, "iterations": report.iterations, "absorbed": absorbed}


def prepare_for_int8(model: TrackedModel, *, equalize_pairs: bool, relu6_to_relu: bool, bias_correction: str,
                     calibration: torch.Tensor, test_loader: Loader, per_channel: bool,
                     learned_rounding: dict[str, Any] | None = None, seed: int = 0) -> tuple[TrackedModel, list[dict[str, Any]]]:
    """A prepared copy of `model` and one record per step (the first, `ptq`, is the model as it came)."""
    prepared = model.copy()
    module = prepared.module.eval()
    reference, _ = _logits(module, test_loader)
    steps: list[dict[str, Any]] = [{"method": "ptq", "seconds": 0.0, **_measure(module, test_loader, calibration, per_channel, reference)}]

    def step(method: str, apply: Callable[[], dict[str, Any]]) -> None:
        started = time.perf_counter()
        facts = apply()
        seconds = round(time.perf_counter() - started, 3)
        steps.append({"method": method, "seconds": seconds, **facts,
                      **_measure(module, test_loader, calibration, per_channel, reference)})

    if relu6_to_relu:
        step("relu6_to_relu", lambda: {"replaced": len(replace_relu6(prepared))})
    if equalize_pairs:
        step("equalize", lambda: equalize_in_place(module))
    if learned_rounding is not None:
        step("adaround", lambda: adaround(module, calibration, per_channel, seed=seed, **learned_rounding))
    if bias_correction == "empirical":
        step("bias_correction", lambda: correct_biases(module, calibration, per_channel))
    elif bias_correction == "analytic":
        step("bias_correction", lambda: correct_biases_analytic(module, per_channel))
    return prepared, steps
