"""Predicted milliseconds of a torch model's layers as functions of their channel counts (for pruning).

From the ops the export would produce (`torch_ops`), each conv / depthwise / linear layer's ops (the
layer, timed with a PAD in front of it as one unit) are re-shaped to other channel counts and priced on a grid, on the
device, through its latency table:
- the grid: the layer's own width and up to `POINTS` counts below it down to what `max_ratio` allows,
  each a multiple of the device's channel tile (`preferred_multiple`; a count inside a tile costs
  what the whole tile costs, as the kernels compute whole tiles);
- two axes, output channels at full input and input channels at full output, combined as
  t(kin, kout) = t(kin, C_out) * t(C_in, kout) / t(C_in, C_out) (the work of a conv is a product of the
  two), linearly interpolated between grid points; a depthwise layer has one axis.
Everything else (adds, pooling, the head's reshapes) is priced once at the model's own widths.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from .devices import DeviceProfile
from .latency_table import LatencyTable, measure
from .opmodels import generate
from .opsig import TIMED_WITH_CONSUMER, OpSig, TensorSig, Unit, unit_key
from .predict import Prediction, predict_signatures, price, weights_of

POINTS = 6  # grid points per axis below the full width
LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _last(t: TensorSig, channels: int) -> TensorSig:
    return TensorSig(t.shape[:-1] + (channels,), t.dtype, t.const, t.quant, t.values)


def _first(t: TensorSig, channels: int) -> TensorSig:
    return TensorSig((channels,) + t.shape[1:], t.dtype, t.const, t.quant, t.values)


def channels_of(sig: OpSig) -> tuple[int, int]:
    """(input channels, output channels) of a layer op or a PAD (NHWC: the last dimension)."""
    return int(sig.inputs[0].shape[-1]), int(sig.outputs[0].shape[-1])


def resized(sig: OpSig, kin: int, kout: int) -> OpSig:
    """`sig` with `kin` input and `kout` output channels (a PAD keeps kin on both sides)."""
    x, out = sig.inputs[0], sig.outputs[0]
    if sig.op == "PAD":
        return sig.with_shapes((_last(x, kin),) + sig.inputs[1:], (_last(out, kin),))
    rest = list(sig.inputs[1:])
    if sig.op == "CONV_2D":  # filter [out, kh, kw, in / groups]
        cin = int(x.shape[-1])
        groups = max(1, cin // int(rest[0].shape[-1]))
        rest[0] = _last(_first(rest[0], kout), max(1, kin // groups))
    elif sig.op == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, out]
        rest[0] = _last(rest[0], kout)
    elif sig.op == "FULLY_CONNECTED":  # weights [out, in]
        rest[0] = _last(_first(rest[0], kout), kin)
    else:
        raise ValueError(f"{sig.op} is not a layer op")
    if len(rest) > 1 and rest[1].dtype != "none":  # bias [out]
        rest[1] = _first(rest[1], kout)
    return sig.with_shapes((_last(x, kin), *rest), (_last(out, kout),))


def _grid(full: int, floor: int, multiple: int) -> list[int]:
    """Up to POINTS multiples of `multiple` in [floor, full), spread evenly, and `full` itself."""
    lowest = max(multiple, int(math.ceil(max(floor, 1) / multiple)) * multiple)
    candidates = list(range(lowest, full, multiple))
    if len(candidates) > POINTS:
        picks = np.linspace(0, len(candidates) - 1, POINTS).round().astype(int)
        candidates = [candidates[i] for i in sorted(set(picks.tolist()))]
    return sorted(set(candidates + [full]))


@dataclass
class Curve:
    """One layer's predicted ms on its grid: along outputs (inputs full) and along inputs (outputs full)."""
    cin: int
    cout: int
    depthwise: bool
    out_grid: list[int]
    out_ms: list[float]
    in_grid: list[int]
    in_ms: list[float]
    multiple: int

    @property
    def full_ms(self) -> float:
        return self.out_ms[-1]

    def __call__(self, kin: int, kout: int) -> float:
        kout = min(self.cout, _round_up(kout, self.multiple))
        along_out = float(np.interp(kout, self.out_grid, self.out_ms))
        if self.depthwise:
            return along_out
        kin = min(self.cin, _round_up(kin, self.multiple))
        along_in = float(np.interp(kin, self.in_grid, self.in_ms))
        return along_out * along_in / self.full_ms if self.full_ms > 0 else 0.0


def _round_up(k: int, multiple: int) -> int:
    return int(math.ceil(k / multiple)) * multiple if multiple > 1 else k


class LayerLatency:
    """`(path, kin, kout) -> ms` for the pruning problem, and `rest_ms` for the other ops."""

    def __init__(self, base: Prediction, curves: dict[str, Curve], rest_ms: float, unpriced: list[str]) -> None:
        self.base, self.curves, self.rest_ms = base, curves, rest_ms
        self.unpriced_layers = unpriced  # layers priced at their own width only (see `layer_latency`)

    def __call__(self, path: str, kin: int, kout: int) -> float:
        curve = self.curves.get(path)
        return curve(kin, kout) if curve is not None else 0.0


def torch_units(ops: list) -> list[tuple[str | None, Unit]]:
    """The ops of `torch_ops` grouped into timing units as `opsig.units` groups a file's: a PAD in
    front of a conv is timed with it. Each unit with the layer path it belongs to (None: no layer)."""
    out: list[tuple[str | None, Unit]] = []
    i = 0
    while i < len(ops):
        op = ops[i]
        following = ops[i + 1] if i + 1 < len(ops) else None
        if (op.sig.op in TIMED_WITH_CONSUMER and op.role == "pad" and following is not None
                and following.layer == op.layer and following.sig.op in TIMED_WITH_CONSUMER[op.sig.op]):
            out.append((op.layer, (op.sig, following.sig)))
            i += 2
            continue
        out.append((op.layer, (op.sig,)))
        i += 1
    return out


def layer_latency(ops: list, device: DeviceProfile, threads: int | None = None, max_ratio: float = 0.9,
                  multiple: int = 1) -> LayerLatency:
    """Build the layer curves for the ops of a torch model (`torch_ops.torch_ops`), timing on the device
    whatever its table lacks (the model's own ops first, then the grid). A layer the export writes as
    several layer ops (a grouped conv split per group, a Linear followed by Hardswish) keeps its own
    width's price: it is not resized."""
    grouped = torch_units(ops)
    base = predict_signatures([u for _, u in grouped], device, threads, what="ops of the model")
    by_layer: dict[str, list[Unit]] = {}
    for path, unit in grouped:
        if path is not None:
            by_layer.setdefault(path, []).append(unit)
    plans: dict[str, tuple[int, int, bool, list[int], list[int], list[Unit]]] = {}
    requests: dict[str, Callable[[], bytes]] = {}
    unpriced = []
    for path, layer_units in by_layer.items():
        mains = [sig for unit in layer_units for sig in unit if sig.op in LAYER_OPS]
        if len(mains) != 1:
            unpriced.append(path)
            continue
        cin, cout = channels_of(mains[0])
        depthwise = mains[0].op == "DEPTHWISE_CONV_2D"
        out_grid = _grid(cout, math.ceil((1 - max_ratio) * cout), multiple)
        in_grid = [cin] if depthwise else _grid(cin, math.ceil((1 - max_ratio) * cin), multiple)
        plans[path] = (cin, cout, depthwise, out_grid, in_grid, layer_units)
        for kin, kout in _points(cin, cout, depthwise, out_grid, in_grid):
            for unit in layer_units:
                variant = _variant(unit, kin, kout)
                requests.setdefault(unit_key(variant), partial(generate, variant))
    table = measure(device, requests, threads, what="channel variants of the layers")
    per_mb = base.ms_per_weight_mb  # the learned in-model cost of weights, for this model's weight type
    curves = {path: _curve(plan, table, multiple, per_mb) for path, plan in plans.items()}
    rest = base.ms - sum(c.full_ms for c in curves.values())
    return LayerLatency(base, curves, rest, unpriced)


def _points(cin: int, cout: int, depthwise: bool, out_grid: list[int], in_grid: list[int]) -> list[tuple[int, int]]:
    if depthwise:
        return [(k, k) for k in out_grid]
    return [(cin, k) for k in out_grid] + [(k, cout) for k in in_grid]


def _variant(unit: Unit, kin: int, kout: int) -> Unit:
    return tuple(resized(sig, kin, kin if sig.op == "PAD" else kout) for sig in unit)


def _curve(plan, table: LatencyTable, multiple: int, per_weight_mb: float) -> Curve:
    cin, cout, depthwise, out_grid, in_grid, layer_units = plan

    def ms(kin: int, kout: int) -> float:
        variants = [_variant(u, kin, kout) for u in layer_units]
        raw = price([unit_key(v) for v in variants], table).ms - (table.empty_ms or 0.0)
        return raw + per_weight_mb * weights_of(variants)[1]

    out_ms = [ms(k, k) if depthwise else ms(cin, k) for k in out_grid]
    in_ms = out_ms if depthwise else [ms(k, cout) for k in in_grid]
    return Curve(cin, cout, depthwise, out_grid, out_ms, in_grid if not depthwise else out_grid, in_ms, multiple)


# -- the device's channel tile ------------------------------------------------------------------------

PROBE_WIDTHS = range(33, 65)  # output channels 33..64: two 16-tiles, four 8-tiles
TILE_CANDIDATES = (16, 8, 4, 2)
FLAT, JUMP = 0.03, 1.05  # inside a tile: within 3 % of its median; between tiles: a step of 5 % or more


def probe_conv(cin: int, cout: int, size: int, kernel: int, precision: str) -> OpSig:
    """A stride-1 conv with fused ReLU, in the tensor types the export writes for `precision`."""
    int8 = precision == "int8"
    dtype, bias = ("int8", "int32") if int8 else ("float32", "float32")
    act, weight = ("pt", "pc") if int8 else ("", "")
    options = (("dilationHFactor", 1), ("dilationWFactor", 1), ("fusedActivationFunction", 1), ("padding", 0),
               ("quantizedBiasType", 0), ("strideH", 1), ("strideW", 1))
    return OpSig("CONV_2D", (TensorSig((1, size, size, cin), dtype, False, act),
                             TensorSig((cout, kernel, kernel, cin), dtype, True, weight),
                             TensorSig((cout,), bias, True, weight)),
                 (TensorSig((1, size, size, cout), dtype, False, act),), options, "Conv2DOptions")


def tile_of(series: dict[int, float]) -> int:
    """The largest channel multiple the times are a step function of (1: none found, or the times
    rise smoothly)."""
    widths = sorted(series)
    times = np.array([series[k] for k in widths])
    slope, intercept = np.polyfit(widths, times, 1)
    smooth = float(np.median(np.abs(times / (slope * np.array(widths) + intercept) - 1)))
    for m in TILE_CANDIDATES:
        blocks: dict[int, list[float]] = {}
        for k in widths:
            blocks.setdefault((k - 1) // m, []).append(series[k])
        medians = {b: float(np.median(v)) for b, v in blocks.items()}
        residual = float(np.median([abs(series[k] / medians[(k - 1) // m] - 1) for k in widths]))
        ordered = [medians[b] for b in sorted(medians)]
        jump = max((b / a for a, b in zip(ordered, ordered[1:]) if a > 0), default=1.0)
        # A step function fits, there is a step, and it fits clearly better than a straight line
        # (a smooth rise would pass the first two tests for any tile size).
        if residual <= FLAT and jump >= JUMP and residual <= 0.5 * smooth:
            return m
    return 1


def preferred_multiple(device: DeviceProfile, precision: str, threads: int | None = None) -> tuple[int, dict]:
    """The channel multiple the device's conv kernels prefer for `precision`, from two probe series
    (1x1 and 3x3 convs, 64 -> 33..64 channels at 28x28) timed through its latency table; the largest
    multiple both series agree on. Returns it with the evidence."""
    probes = {kernel: {k: probe_conv(64, k, 28, kernel, precision) for k in PROBE_WIDTHS} for kernel in (1, 3)}
    requests: dict[str, Callable[[], bytes]] = {s.key(): partial(generate, s) for series in probes.values()
                                               for s in series.values()}
    table = measure(device, requests, threads, what=f"{precision} channel-tile probes")
    tiles, evidence = [], {}
    for kernel, series in probes.items():
        ms = {k: table.ms(s.key()) for k, s in series.items()}
        timed = {k: v for k, v in ms.items() if v is not None}
        tile = tile_of(timed) if len(timed) == len(ms) else 1
        tiles.append(tile)
        evidence[f"conv{kernel}x{kernel}"] = {"tile": tile, "ms": {k: round(v, 5) for k, v in timed.items()}}
    return min(tiles), evidence
