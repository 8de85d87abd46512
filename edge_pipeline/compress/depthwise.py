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

from typing import Any

import torch
from torch import nn

from ..models.edits import Edit
from ..models.layers import InvertedResidual, make_activation
from .batchnorm import calibrate_identity
from .select import Selection, channels_ok, selected


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
    # The stubs type a conv's kernel_size/stride/padding/dilation as tuple[int, ...]; a Conv2d's are pairs.
    dw = nn.Conv2d(cin, cin, conv.kernel_size, conv.stride, conv.padding, conv.dilation,  # type: ignore[arg-type]
                   groups=cin, bias=False)
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
        assert pw.bias is not None  # separable_from gives it a bias when `conv` has one
        pw.bias.copy_(conv.bias)


# ---------------------------------------------------------------------------------------------
# Inverted residual


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
        assert block.project.bias is not None  # inverted_residual_from gives it a bias when `conv` has one
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
        assert isinstance(conv, nn.Conv2d)  # is_standard_conv
        new: nn.Module
        info: dict[str, Any]
        if inverted_residual:
            block = inverted_residual_from(conv, expansion, activation, residual, init)
            info = {"block": "inverted_residual", "hidden": block.depthwise.out_channels, "residual": block.residual}
            if init == "svd":
                info["rank_per_channel"] = min(components_per_channel(expansion, activation), conv.out_channels, conv.kernel_size[0] ** 2)
            new = block
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
