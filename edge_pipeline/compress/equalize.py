"""Cross-layer equalization and high-bias absorption (Nagel et al. 2019, "Data-Free Quantization").

For a chain `first -> [BatchNorm] -> f -> second` in which `f` is positively scale-equivariant
(f(x / s) = f(x) / s for s > 0: ReLU, LeakyReLU, a one-slope PReLU, the identity), dividing output
channel i of `first` by s_i and multiplying input channel i of `second` by s_i leaves the network's
function unchanged. With s_i = sqrt(r1_i / r2_i), where r1_i is the range of output channel i of
`first` (as the converter will see it: BatchNorm folded in) and r2_i the range of input channel i of
`second`, both become sqrt(r1_i * r2_i): a depthwise convolution whose channels differ by orders of
magnitude, which per-tensor int8 (and its per-channel activations) cannot represent, stops doing so.

High-bias absorption then moves the part of each BatchNorm shift that a ReLU never clips
(c_i = max(0, beta_i - 3 |gamma_i|): the pre-activation is ~N(beta_i, gamma_i^2)) into the next
layer's bias, which narrows the activation range int8 has to cover. It is exact where that layer has
no zero padding (a 1x1 convolution, a Linear, or padding 0) and the activation is above c_i, which
is why it is only done there.

Why not a library: torch.ao's private `_equalize` handles neither depthwise/grouped second layers
nor BatchNorm between the pair nor bias absorption. aimet-torch (2.42, pure Python, installable on
our torch) has all of it, but would pull ~20 packages into the tool's runtime (bokeh, holoviews,
hvplot, cvxpy, osqp, tensorboard, pandas...) for ~250 lines of tensor arithmetic, and works through
its own QuantSim model rather than on our plain modules. The pairs are found with torch.fx, so a
model that fx cannot trace is refused with a clear error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import PipelineError
from ..fxpatterns import PASS_THROUGH, module_path

WEIGHTED = (nn.Conv2d, nn.Linear)
EQUIVARIANT_MODULES = (nn.ReLU, nn.LeakyReLU)
EQUIVARIANT_FUNCTIONS = {F.relu, torch.relu, F.leaky_relu}
# Bounded activations: f(x / s) != f(x) / s, so a pair through them is left alone (and reported).
BOUNDED_MODULES = (nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.GELU)
EPS = 1e-12


@dataclass
class Pair:
    """Two weighted layers joined by at most a BatchNorm and one scale-equivariant activation."""

    first: str
    second: str
    norm: str | None = None
    activation: str = "identity"
    relu_like: bool = False  # the activation is ReLU/LeakyReLU/PReLU: bias absorption applies


@dataclass
class EqualizeReport:
    pairs: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    iterations: int = 0
    absorbed: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Finding the pairs


def trace(model: nn.Module, what: str) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, NotImplementedError...)
        raise PipelineError(
            f"quantize.{what}: torch.fx cannot trace this model ({type(exc).__name__}: {str(exc)[:160]}); "
            f"drop {what} for this model") from exc


def find_pairs(model: nn.Module) -> tuple[list[Pair], list[dict[str, str]]]:
    """Every `first -> [BatchNorm] -> [activation] -> second` chain whose intermediate results have
    no other user, and why the other weighted-layer chains were left out."""
    graph = trace(model, "equalize")
    modules = dict(graph.named_modules())
    calls: dict[str, int] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module":
            calls[module_path(node)] = calls.get(module_path(node), 0) + 1
    pairs, skipped = [], []
    for node in graph.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[module_path(node)], WEIGHTED):
            continue
        found = _chain_after(node, modules, calls)
        if isinstance(found, Pair):
            pairs.append(found)
        elif found:
            skipped.append({"layer": module_path(node), "reason": found})
    return pairs, skipped


def _chain_after(node: fx.Node, modules: dict[str, Any], calls: dict[str, int]) -> Pair | str | None:
    """The pair starting at `node`, a reason it cannot be equalized, or None (no weighted layer follows)."""
    first = module_path(node)
    if calls[first] > 1:
        return "the layer is called more than once"
    pair = Pair(first=first, second="")
    while True:
        if len(node.users) != 1:
            return None if not node.users else "its output has several users (a branch or a residual add)"
        (node,) = node.users
        if node.op == "call_module":
            path, module = module_path(node), modules[module_path(node)]
            if calls[path] > 1:
                return f"{path} is called more than once"
            if isinstance(module, WEIGHTED):
                return _finish(pair, path, modules)
            if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)) and pair.norm is None and pair.activation == "identity":
                if not module.affine or module.running_var is None:
                    return f"{path} has no affine parameters or running statistics"
                pair.norm = path
                continue
            if isinstance(module, PASS_THROUGH):
                continue
            if pair.activation == "identity" and (isinstance(module, EQUIVARIANT_MODULES)
                                                 or (isinstance(module, nn.PReLU) and module.num_parameters == 1)):
                pair.activation, pair.relu_like = type(module).__name__, True
                continue
            if isinstance(module, BOUNDED_MODULES):
                return f"{path} ({type(module).__name__}) is not scale-equivariant"
            return None
        if node.op == "call_function" and node.target in EQUIVARIANT_FUNCTIONS and pair.activation == "identity":
            pair.activation, pair.relu_like = getattr(node.target, "__name__", "relu"), True
            continue
        if node.op == "call_method" and node.target in ("relu", "relu_") and pair.activation == "identity":
            pair.activation, pair.relu_like = "relu", True
            continue
        return None


def _finish(pair: Pair, second: str, modules: dict[str, Any]) -> Pair | str:
    a, b = modules[pair.first], modules[second]
    if isinstance(a, nn.Linear) != isinstance(b, nn.Linear):
        return f"{pair.first} -> {second} mixes a convolution and a Linear"
    if _out_channels(a) != _in_channels(b):
        return f"{pair.first} -> {second}: channel counts differ"
    pair.second = second
    return pair


def _out_channels(m: Any) -> int:
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def _in_channels(m: Any) -> int:
    return m.in_channels if isinstance(m, nn.Conv2d) else m.in_features


# ---------------------------------------------------------------------------------------------
# Ranges and scaling


def norm_factor(norm: Any, channels: int) -> torch.Tensor:
    """gamma / sqrt(var + eps) per channel: what folding the BatchNorm multiplies the weights by."""
    if norm is None:
        return torch.ones(channels)
    return norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)


def output_ranges(first: Any, norm: Any) -> torch.Tensor:
    """max |w| of each output channel of `first`, BatchNorm folded in (the converter folds it)."""
    w = first.weight.detach().flatten(1).abs().amax(1)
    return w * norm_factor(norm, w.numel()).abs()


def _input_columns(second: Any) -> list[tuple[slice, int]]:
    """For input channel i of `second`: (the output rows that read it, its column in the weight)."""
    if isinstance(second, nn.Linear):
        return [(slice(None), i) for i in range(second.in_features)]
    per_group_in = second.in_channels // second.groups
    per_group_out = second.out_channels // second.groups
    return [(slice((i // per_group_in) * per_group_out, (i // per_group_in + 1) * per_group_out), i % per_group_in)
            for i in range(second.in_channels)]


def input_ranges(second: Any) -> torch.Tensor:
    w = second.weight.detach().abs()
    return torch.stack([w[rows, column].max() for rows, column in _input_columns(second)])


@torch.no_grad()
def _scale_pair(first: Any, norm: Any, second: Any, scale: torch.Tensor) -> None:
    """Output channel i of `first` (or its BatchNorm) divided by scale[i]; input channel i of `second` multiplied."""
    if norm is not None:
        norm.weight.div_(scale)
        norm.bias.div_(scale)
    else:
        first.weight.div_(scale.view(-1, *[1] * (first.weight.dim() - 1)))
        if first.bias is not None:
            first.bias.div_(scale)
    for i, (rows, column) in enumerate(_input_columns(second)):
        second.weight[rows, column].mul_(scale[i])


def equalization_scale(first: Any, norm: Any, second: Any) -> torch.Tensor:
    r1, r2 = output_ranges(first, norm), input_ranges(second)
    scale = torch.sqrt(r1 / r2.clamp_min(EPS))
    # A dead channel (zero range on either side) has nothing to balance.
    return torch.where((r1 > EPS) & (r2 > EPS), scale, torch.ones_like(scale))


@torch.no_grad()
def equalize(model: nn.Module, max_iterations: int = 20, tolerance: float = 1e-3) -> EqualizeReport:
    """Equalize every pair of `model` in place (iterated: a layer in two pairs moves twice)."""
    pairs, skipped = find_pairs(model)
    report = EqualizeReport(skipped=skipped)
    modules = dict(model.named_modules())
    before = {p.first: _spread(modules, p) for p in pairs}
    for report.iterations in range(1, max_iterations + 1):
        worst = 0.0
        for p in pairs:
            first, norm, second = modules[p.first], modules.get(p.norm) if p.norm else None, modules[p.second]
            scale = equalization_scale(first, norm, second)
            _scale_pair(first, norm, second, scale)
            worst = max(worst, float(scale.log().abs().max()) if scale.numel() else 0.0)
        if worst < tolerance:
            break
    report.pairs = [{**asdict(p), "spread_before": before[p.first], "spread_after": _spread(modules, p)} for p in pairs]
    return report


def _spread(modules: dict[str, Any], pair: Pair) -> float:
    """max / min channel range of `first` (BatchNorm folded): how far apart its channels are."""
    r = output_ranges(modules[pair.first], modules.get(pair.norm) if pair.norm else None)
    r = r[r > EPS]
    return round(float(r.max() / r.min()), 3) if r.numel() else 1.0


# ---------------------------------------------------------------------------------------------
# High-bias absorption


@torch.no_grad()
def absorb_high_biases(model: nn.Module, pairs: list[Pair], sigmas: float = 3.0) -> list[dict[str, Any]]:
    """Move c = max(0, beta - sigmas * |gamma|) of each BatchNorm before a ReLU-like activation into
    the next layer (its bias, or the running mean of the BatchNorm after it). Only where that is
    exact: `second` has no zero padding."""
    modules = dict(model.named_modules())
    graph = trace(model, "equalize")
    absorbed = []
    for p in pairs:
        if not (p.norm and p.relu_like):
            continue
        norm, second = modules[p.norm], modules[p.second]
        if _padded(second):
            continue
        shift = (norm.bias - sigmas * norm.weight.abs()).clamp_min(0)
        if not bool((shift > 0).any()):
            continue
        target = bias_target(graph, modules, p.second)
        if target is None:
            continue
        delta = _propagate_constant(second, shift)
        norm.bias.sub_(shift)
        target(delta)
        absorbed.append({"layer": p.norm, "into": p.second, "channels": int((shift > 0).sum()),
                         "mean_shift": round(float(shift.mean()), 6)})
    return absorbed


def _propagate_constant(second: Any, shift: torch.Tensor) -> torch.Tensor:
    """What a constant `shift` on each input channel adds to each output of `second` (no padding)."""
    w = second.weight.detach()
    if isinstance(second, nn.Linear):
        return w @ shift
    out = torch.zeros(second.out_channels)
    for i, (rows, column) in enumerate(_input_columns(second)):
        out[rows] += w[rows, column].flatten(1).sum(1) * shift[i]
    return out


def _padded(layer: Any) -> bool:
    """Does the layer read zero padding (where an absorbed constant would be missing)?"""
    if not isinstance(layer, nn.Conv2d):
        return False
    if isinstance(layer.padding, str):
        return layer.padding != "valid" and any(k > 1 for k in layer.kernel_size)
    return any(layer.padding)


def bias_target(graph: fx.GraphModule, modules: dict[str, Any], path: str):
    """A function adding a per-channel constant to the output of layer `path`: its bias, else the
    running mean of a BatchNorm that is its only user; None when neither exists."""
    layer = modules[path]
    if layer.bias is not None:
        return lambda delta: layer.bias.add_(delta)
    norm = following_norm(graph, modules, path)
    if norm is None:
        return None
    return lambda delta: norm.running_mean.sub_(delta)


def following_norm(graph: fx.GraphModule, modules: dict[str, Any], path: str) -> Any:
    """The BatchNorm (with running statistics) that is the only user of layer `path`'s output."""
    for node in graph.graph.nodes:
        if node.op == "call_module" and node.target == path and len(node.users) == 1:
            (user,) = node.users
            if user.op == "call_module":
                norm = modules[module_path(user)]
                if isinstance(norm, (nn.BatchNorm2d, nn.BatchNorm1d)) and norm.running_mean is not None:
                    return norm
    return None
