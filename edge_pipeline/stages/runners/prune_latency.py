"""The prune stage's latency side: the device's latency model, `round_to: auto`, and latency targets.

A latency target is met in closed loop: each round prices the current model's layers on a channel
grid (`profiling.layer_latency`), allocates channels against that model, then predicts the pruned
model exactly (its own ops, from the latency table) and, if the layer model's approximation (ops
between layers priced at fixed width, interpolation between grid points) left it off the round's
goal by more than `TOLERANCE`, corrects the allocation goal by the ratio and tries again. The
attempts are recorded in the stage's details.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from torch import nn

from ... import procs
from ...compress.pruning import Target
from ...convert.nhwc import fold_flatten_linear
from ...convert.onnx_export import export_onnx
from ...convert.tflite_convert import convert_to_tflite
from ...errors import UserError
from ...profiling.devices import DeviceProfile, get_device
from ...profiling.layer_latency import layer_latency, preferred_multiple, torch_units
from ...profiling.predict import Prediction, learn_from, predict_file, predict_signatures
from ...profiling.runner import profile_model
from ...profiling.torch_ops import UnsupportedLayer, torch_ops
from ...ui import console
from ..prune import priced_precision

TOLERANCE = 0.02  # accept a pruned model within 2 % of the round's goal (at or below it)
ATTEMPTS = 4
CALIBRATION_SAMPLES = 64  # int8 calibration of the measured candidates
MEASURED_TOLERANCE = 0.05  # latency_from: measured: within 5 % of the goal's fraction, as measured
MEASURED_ATTEMPTS = 3  # conversions + device timings per round (besides the incoming model's)


@dataclass
class LatencyPlan:
    device: DeviceProfile
    precision: str
    input_shape: tuple[int, ...]
    max_ratio: float
    round_to: int | None = None
    tile_evidence: dict[str, Any] | None = None
    incoming: Prediction | None = None
    target_ms: float | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    measure: Callable[[nn.Module, str], float] | None = None  # latency_from: measured (see `measured_latency`)
    incoming_measured: float | None = None

    @classmethod
    def for_stage(cls, stage, ctx, module: nn.Module) -> LatencyPlan | None:
        cfg = stage.config
        name = cfg.latency_device
        if name is None:
            return None
        plan = cls(get_device(name), priced_precision(cfg, ctx.recipe), tuple(ctx.data.input_shape), cfg.max_ratio)
        if cfg.round_to == "auto":
            plan.round_to, plan.tile_evidence = preferred_multiple(plan.device, plan.precision)
            console.print(f"  round_to auto: {plan.round_to} ({plan.precision} conv kernels on {name} compute channels "
                          f"in tiles of {plan.round_to}, as measured)" if plan.round_to > 1 else
                          f"  round_to auto: 1 (no channel tile measurable in {plan.precision} on {name})")
        elif isinstance(cfg.round_to, int):
            plan.round_to = cfg.round_to
        if cfg.latency_target:
            if cfg.latency_from == "measured":
                plan.measure = partial(measured_latency, ctx, plan)
            plan.incoming = plan.predict(module)
            plan.target_ms = (cfg.target_latency * plan.incoming.ms if cfg.target_latency is not None
                              else cfg.target_latency_ms)
            console.print(f"  latency on {name} ({plan.precision}): incoming model {plan.incoming.ms:.4f} ms predicted "
                          f"(table {plan.incoming.table}), target {plan.target_ms:.4f} ms")
        return plan

    def ops(self, module: nn.Module) -> list:
        try:
            return torch_ops(module.eval(), self.input_shape, self.precision)
        except UnsupportedLayer as exc:
            raise UserError(f"prune: the latency model cannot price this model ({exc}); use target_macs or "
                            "target_params instead of a latency target") from None

    def predict(self, module: nn.Module) -> Prediction:
        return predict_signatures([unit for _, unit in torch_units(self.ops(module))], self.device, what="ops of the model")

    def prune_round(self, module: nn.Module, step: int, steps: int,
                    prune: Callable[[nn.Module, Target, tuple], Any]):
        """Prune `module` in place to this round's share of the way to the target; return the Edit."""
        assert self.incoming is not None and self.target_ms is not None
        goal = self.incoming.ms - (self.incoming.ms - self.target_ms) * step / steps
        layers = layer_latency(self.ops(module), self.device, max_ratio=self.max_ratio, multiple=self.round_to or 1)
        allocation_goal = self._predicted_goal(module, goal, step, layers, prune)
        if self.measure is not None:
            allocation_goal = self._measured_goal(module, goal, step, layers, prune, allocation_goal)
        return prune(module, Target("latency", allocation_goal), (layers, layers.rest_ms))

    def _predicted_goal(self, module: nn.Module, goal: float, step: int, layers, prune, start: float | None = None) -> float:
        """The allocation goal whose pruned model the exact prediction puts at `goal` (closed loop on
        the prediction: the layer model prices ops between layers at fixed width)."""
        allocation_goal, tried = start or goal, []  # type: float, list[tuple[float, float]]
        for _ in range(ATTEMPTS):
            trial = copy.deepcopy(module)
            try:
                prune(trial, Target("latency", allocation_goal), (layers, layers.rest_ms))
            except UserError:
                if tried:  # a corrected goal out of reach: keep what was reached
                    break
                raise
            predicted = self.predict(trial).ms
            tried.append((allocation_goal, predicted))
            self.attempts.append({"round": step, "attempt": len(self.attempts) + 1, "goal_ms": round(goal, 5),
                                  "allocation_goal_ms": round(allocation_goal, 5), "predicted_ms": round(predicted, 5)})
            if abs(predicted / goal - 1) <= TOLERANCE:
                break
            allocation_goal *= goal / predicted
        within = [t for t in tried if t[1] <= goal * (1 + TOLERANCE)]
        return (max(within, key=lambda t: t[1]) if within else min(tried, key=lambda t: t[1]))[0]

    def _measured_goal(self, module: nn.Module, goal: float, step: int, layers, prune, allocation_goal: float) -> float:
        """`latency_from: measured`: convert each candidate and time it on the device; the goal's
        fraction of the incoming model must hold as measured (within MEASURED_TOLERANCE), the
        allocation goal is corrected by the measured miss."""
        assert self.measure is not None and self.incoming is not None
        if self.incoming_measured is None:
            self.incoming_measured = self.measure(module, "incoming")
        wanted = goal / self.incoming.ms  # the fraction of the incoming model, as measured
        best: tuple[float, float] | None = None
        for _ in range(MEASURED_ATTEMPTS):
            trial = copy.deepcopy(module)
            prune(trial, Target("latency", allocation_goal), (layers, layers.rest_ms))
            ratio = self.measure(trial, f"round {step} candidate") / self.incoming_measured
            self.attempts[-1]["measured_ratio"] = round(ratio, 4)
            if best is None or abs(ratio / wanted - 1) < abs(best[1] / wanted - 1):
                best = (allocation_goal, ratio)
            if abs(ratio / wanted - 1) <= MEASURED_TOLERANCE:
                break
            corrected = goal * wanted / ratio  # what to ask the prediction for, so the measurement lands on `wanted`
            allocation_goal = self._predicted_goal(module, corrected, step, layers, prune, start=allocation_goal * wanted / ratio)
        assert best is not None
        return best[0]

    def summary(self, module: nn.Module) -> dict[str, Any]:
        out: dict[str, Any] = {"device": self.device.name, "precision": self.precision, "round_to": self.round_to}
        if self.tile_evidence is not None:
            out["tile"] = self.tile_evidence
        if self.incoming is not None:
            final = self.predict(module)
            if self.incoming_measured is not None:
                out["incoming_measured_ms"] = round(self.incoming_measured, 5)
            out.update({"table": final.table, "incoming_ms": round(self.incoming.ms, 5),
                        "target_ms": round(self.target_ms or 0.0, 5), "predicted_ms": round(final.ms, 5),
                        "predicted_ratio": round(final.ms / self.incoming.ms, 4) if self.incoming.ms else None,
                        "attempts": self.attempts})
        return out

    def describe(self, summary: dict[str, Any]) -> str:
        if "predicted_ms" not in summary:
            return f"round_to {summary['round_to']} from the {self.precision} kernel tile on {self.device.name}"
        return (f"latency on {self.device.name} ({self.precision}, predicted): {summary['incoming_ms']:.4f} ms -> "
                f"{summary['predicted_ms']:.4f} ms ({summary['predicted_ratio']:.1%}; target {summary['target_ms']:.4f} ms)")


def measured_latency(ctx, plan: LatencyPlan, module: nn.Module, what: str) -> float:
    """Median latency of `module` on the plan's device, converted as the export converts it (ONNX,
    onnx2tf in the worker; int8 calibrated on the recipe's training data); the measurement also
    teaches the device's latency table (`predict.learn_from`)."""
    data = ctx.data
    samples = data.sample("train", CALIBRATION_SAMPLES).permute(0, 2, 3, 1).numpy()
    mean, std = np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
    with procs.temp_dir("prunemeasure") as tmp:
        exported, _ = fold_flatten_linear(copy.deepcopy(module).eval(), data.input_shape)
        export_onnx(exported, data.input_shape, tmp / "model.onnx", scopes=getattr(exported, "export_scopes", None))
        files = convert_to_tflite(tmp / "model.onnx", tmp, [plan.precision], samples * std + mean,
                                  samples if plan.precision == "int8" else None)
        profile = profile_model(files[plan.precision], plan.device)
        prediction = predict_file(files[plan.precision], plan.device)
        learn_from(plan.device, profile, prediction)
    median = float(profile["latency_ms"]["median"])
    console.print(f"  {what}: {median:.4f} ms measured on {plan.device.name} (predicted {prediction.ms:.4f} ms)")
    return median
