"""MobileNet-style replacements of standard kxk convolutions.

Two blocks:
- separable (MobileNet v1 / Xception): depthwise kxk (same stride/padding/dilation) -> pointwise 1x1,
  with BN + activation in between unless `activation: none`.
- inverted residual (MobileNet v2): expand 1x1 (x `expansion`) -> BN -> act -> depthwise kxk -> BN ->
  act -> project 1x1 (a linear bottleneck: no activation after it), plus the block's input when the
  shapes allow (stride 1, in == out channels, size-preserving padding).

Initialization `svd`, per input channel c: the slice W[:, c] (out_channels x k*k) is a matrix whose
truncated SVD s_i u_i v_i^T gives the best rank-r approximation; v_i (x sqrt s_i) becomes a depthwise
kernel and u_i (x sqrt s_i) the matching pointwise column.
- separable: rank 1 per input channel. With `activation: none` the block *is* that approximation;
  with an activation in between, ReLU cuts the negative half of each depthwise output, so the start
  is only approximate (the sign of each (u, v) pair is chosen so the depthwise kernel sums to >= 0,
  which keeps more of the signal for the non-negative inputs of a conv after a ReLU).
- inverted residual: the expand layer copies each input channel `expansion` times; each copy then
  carries one component. Because f(z) - f(-z) = z for ReLU (and hard-swish), a component is split
  into a (+v, +u) and a (-v, -u) channel pair, so the activation after the depthwise loses nothing.
  The activation after the expand passes the copies unchanged when they are >= 0, as the input of
  any conv after a ReLU is. So with ReLU the block reproduces the rank-(expansion/2) approximation
  exactly on such inputs (ReLU6: while values stay <= 6; hard-swish bends inputs below 3, so its
  start is approximate). With a residual, the identity is subtracted from the kernel first (the
  block learns W - I). Surplus channels get a zero pointwise column: silent at the start, but they
  still receive gradients.
Inserted BatchNorms start as the identity at the calibration statistics (see `identity.py`).
`random` keeps PyTorch's default init everywhere.
"""

from __future__ import annotations

import torch
from torch import nn

from .edits import Edit
from .batchnorm import calibrate_identity
from .modspec import buildable
from .select import Selection, channels_ok, selected

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "none": None}


def make_activation(name: str) -> nn.Module:
    if ACTIVATIONS[name] is None:
        return nn.Identity()
    return nn.Hardswish() if name == "hardswish" else ACTIVATIONS[name](inplace=True)


def is_standard_conv(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.kernel_size[0] > 1
        and module.kernel_size[0] == module.kernel_size[1]
        and module.padding_mode == "zeros"
    )


def keeps_shape(conv: nn.Conv2d) -> bool:
    """True if the conv maps an HxW input to HxW (so `input + block(input)` is defined)."""
    if tuple(conv.stride) != (1, 1) or conv.in_channels != conv.out_channels:
        return False
    if conv.padding == "same":
        return True
    if isinstance(conv.padding, str):
        return False
    return all(k % 2 == 1 and p == d * (k - 1) // 2 for k, p, d in zip(conv.kernel_size, conv.padding, conv.dilation))


# ---------------------------------------------------------------------------------------------
# Separable


def separable_from(conv: nn.Conv2d, activation: str, init: str) -> nn.Sequential:
    cin, cout = conv.in_channels, conv.out_channels
    dw = nn.Conv2d(cin, cin, conv.kernel_size, conv.stride, conv.padding, conv.dilation, groups=cin, bias=False)
    pw = nn.Conv2d(cin, cout, 1, bias=conv.bias is not None)
    if init == "svd":
        _init_rank1(conv, dw, pw, nonnegative_kernels=activation != "none")
    if activation == "none":  # linear: a BN between two linear layers would only rescale
        return nn.Sequential(dw, pw)
    return nn.Sequential(dw, nn.BatchNorm2d(cin), make_activation(activation), pw)


def _channel_svd(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per input channel: SVD of W[:, c] (cout x k*k). Returns u (cin, cout, q), s (cin, q), vh (cin, q, k*k)."""
    cout, cin, kh, kw = weight.shape
    slices = weight.detach().double().permute(1, 0, 2, 3).reshape(cin, cout, kh * kw)
    u, s, vh = torch.linalg.svd(slices, full_matrices=False)
    return u, s, vh


@torch.no_grad()
def _init_rank1(conv: nn.Conv2d, dw: nn.Conv2d, pw: nn.Conv2d, nonnegative_kernels: bool) -> None:
    cout, cin, kh, kw = conv.weight.shape
    u, s, vh = _channel_svd(conv.weight)
    root = s[:, 0].sqrt()
    v = vh[:, 0, :] * root[:, None]  # cin x k*k
    col = u[:, :, 0] * root[:, None]  # cin x cout
    if nonnegative_kernels:
        sign = torch.where(v.sum(1) < 0, -1.0, 1.0).to(v.dtype)[:, None]
        v, col = v * sign, col * sign
    dw.weight.copy_(v.reshape(cin, 1, kh, kw))
    pw.weight.copy_(col.T.reshape(cout, cin, 1, 1))
    if conv.bias is not None:
        pw.bias.copy_(conv.bias)


# ---------------------------------------------------------------------------------------------
# Inverted residual


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


@buildable
class InvertedResidual(nn.Module):
    """A MobileNetV2 block standing in for one convolution (same input and output shapes)."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, kernel_size, stride, padding,
                 dilation, activation: str = "relu", residual: bool = True, bias: bool = False) -> None:
        super().__init__()
        kernel_size, stride, dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        padding = padding if isinstance(padding, str) else _pair(padding)
        self._args = {
            "in_channels": in_channels, "out_channels": out_channels, "hidden_channels": hidden_channels,
            "kernel_size": list(kernel_size), "stride": list(stride),
            "padding": padding if isinstance(padding, str) else list(padding), "dilation": list(dilation),
            "activation": activation, "residual": residual, "bias": bias,
        }
        linear = activation == "none"
        self.expand = nn.Conv2d(in_channels, hidden_channels, 1, bias=False)
        self.bn1 = nn.Identity() if linear else nn.BatchNorm2d(hidden_channels)
        self.act1 = make_activation(activation)
        self.depthwise = nn.Conv2d(hidden_channels, hidden_channels, kernel_size, stride, padding, dilation,
                                   groups=hidden_channels, bias=False)
        self.bn2 = nn.Identity() if linear else nn.BatchNorm2d(hidden_channels)
        self.act2 = make_activation(activation)
        self.project = nn.Conv2d(hidden_channels, out_channels, 1, bias=bias)
        self.residual = residual

    def spec_args(self) -> dict:
        return dict(self._args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.act2(self.bn2(self.depthwise(self.act1(self.bn1(self.expand(x)))))))
        return x + y if self.residual else y


def inverted_residual_from(conv: nn.Conv2d, expansion: int, activation: str, residual: bool, init: str) -> InvertedResidual:
    residual = residual and keeps_shape(conv)
    block = InvertedResidual(
        conv.in_channels, conv.out_channels, conv.in_channels * expansion, conv.kernel_size, conv.stride,
        conv.padding, conv.dilation, activation, residual, conv.bias is not None,
    )
    if init == "svd":
        _init_inverted(conv, block, expansion, split_signs=activation != "none")
    return block


def components_per_channel(expansion: int, activation: str) -> int:
    """How many SVD components per input channel the svd init of an inverted residual holds."""
    return expansion if activation == "none" else expansion // 2


@torch.no_grad()
def _init_inverted(conv: nn.Conv2d, block: InvertedResidual, t: int, split_signs: bool) -> None:
    cout, cin, kh, kw = conv.weight.shape
    weight = conv.weight.detach().double().clone()
    if block.residual:  # the block computes x + f(x): f must approximate W - I
        for c in range(cin):
            weight[c, c, kh // 2, kw // 2] -= 1.0
    u, s, vh = _channel_svd(weight)
    q = s.shape[1]
    terms = min(t // 2 if split_signs else t, q)
    root = s[:, :terms].sqrt()  # cin x terms
    kernels = vh[:, :terms, :] * root[:, :, None]  # cin x terms x k*k
    columns = u[:, :, :terms] * root[:, None, :]  # cin x cout x terms
    signs = [1.0, -1.0] if split_signs else [1.0]
    per = len(signs)

    expand = torch.zeros(cin * t, cin, dtype=torch.float64)
    for c in range(cin):
        expand[c * t : (c + 1) * t, c] = 1.0
    dw = block.depthwise.weight.detach().double().clone().reshape(cin, t, kh * kw)
    project = torch.zeros(cout, cin, t, dtype=torch.float64)
    for i in range(terms):
        for k, sign in enumerate(signs):
            slot = i * per + k
            dw[:, slot, :] = sign * kernels[:, i, :]
            project[:, :, slot] = sign * columns[:, :, i].T
    block.expand.weight.copy_(expand.reshape(cin * t, cin, 1, 1))
    block.depthwise.weight.copy_(dw.reshape(cin * t, 1, kh, kw))
    block.project.weight.copy_(project.reshape(cout, cin * t, 1, 1))
    if conv.bias is not None:
        block.project.bias.copy_(conv.bias)


# ---------------------------------------------------------------------------------------------
# The transform


def depthwise_separable(
    model: nn.Module,
    selection: Selection,
    activation: str = "none",
    init: str = "svd",
    inverted_residual: bool = False,
    expansion: int = 6,
    residual: bool = True,
    inputs: torch.Tensor | None = None,
) -> Edit:
    """Replace every selected standard conv in place; the Edit records what was put where."""
    config = {"activation": activation, "init": init, "inverted_residual": inverted_residual}
    if inverted_residual:
        config.update(expansion=expansion, residual=residual)
    edit = Edit("depthwise_separable", config)
    layers, bns = [], []
    targets = list(selected(model, selection, lambda m: is_standard_conv(m) and channels_ok(m, selection.min_channels)))
    for name, conv in targets:
        if inverted_residual:
            new = inverted_residual_from(conv, expansion, activation, residual, init)
            info = {"block": "inverted_residual", "hidden": new.depthwise.out_channels, "residual": new.residual}
            if init == "svd":
                info["rank_per_channel"] = min(components_per_channel(expansion, activation), conv.out_channels, conv.kernel_size[0] ** 2)
        else:
            new = separable_from(conv, activation, init)
            info = {"block": "separable"}
        bns += [m for m in new.modules() if isinstance(m, nn.BatchNorm2d)]
        edit.replace(model, name, new)
        layers.append({"path": name, "kernel": conv.kernel_size[0], "in": conv.in_channels, "out": conv.out_channels, **info})
    if init != "random":
        calibrate_identity(model, bns, inputs)
    edit.summary = {"count": len(layers), "layers": layers}
    return edit
