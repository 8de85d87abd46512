"""MobileNet-style depthwise-separable replacement of standard convolutions.

kxk conv (groups=1)  ->  depthwise kxk (same stride/padding/dilation) + BN + activation + pointwise 1x1.

Initialization `svd`: for each input channel c, the slice W[:, c] (out_channels x k*k) is replaced by
its best rank-1 approximation s1 * u1 v1^T; v1 (scaled by sqrt(s1)) becomes the depthwise kernel of
channel c and u1 (scaled by sqrt(s1)) the pointwise column c. With `activation: none` the
replacement equals that approximation (BN starts as the identity); with an activation in between it
is a starting point that fine-tuning refines. `random` keeps PyTorch's default init.
"""

from __future__ import annotations

import torch
from torch import nn

from .edits import Edit
from .select import Selection, channels_ok, selected

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "none": None}


def is_standard_conv(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.kernel_size[0] > 1
        and module.kernel_size[0] == module.kernel_size[1]
        and module.padding_mode == "zeros"
    )


def separable_from(conv: nn.Conv2d, activation: str, init: str) -> nn.Sequential:
    cin, cout = conv.in_channels, conv.out_channels
    dw = nn.Conv2d(cin, cin, conv.kernel_size, conv.stride, conv.padding, conv.dilation, groups=cin, bias=False)
    bn = nn.BatchNorm2d(cin)
    pw = nn.Conv2d(cin, cout, 1, bias=conv.bias is not None)
    layers: list[nn.Module] = [dw, bn]
    if ACTIVATIONS[activation] is not None:
        layers.append(ACTIVATIONS[activation](inplace=True) if activation != "hardswish" else nn.Hardswish())
    layers.append(pw)
    if init == "svd":
        _init_rank1(conv, dw, pw)
    return nn.Sequential(*layers)


@torch.no_grad()
def _init_rank1(conv: nn.Conv2d, dw: nn.Conv2d, pw: nn.Conv2d) -> None:
    w = conv.weight.detach()  # cout, cin, k, k
    cout, cin, kh, kw = w.shape
    slices = w.permute(1, 0, 2, 3).reshape(cin, cout, kh * kw)  # per input channel: cout x k*k
    u, s, vh = torch.linalg.svd(slices, full_matrices=False)
    root = s[:, 0].sqrt()  # cin
    dw.weight.copy_((vh[:, 0, :] * root[:, None]).reshape(cin, 1, kh, kw))
    pw.weight.copy_((u[:, :, 0] * root[:, None]).T.reshape(cout, cin, 1, 1))
    if conv.bias is not None:
        pw.bias.copy_(conv.bias)


def depthwise_separable(model: nn.Module, selection: Selection, activation: str = "relu", init: str = "svd") -> Edit:
    """Replace every selected standard conv in place; the Edit records what was put where."""
    edit = Edit("depthwise_separable", {"activation": activation, "init": init})
    replaced = []
    targets = list(selected(model, selection, lambda m: is_standard_conv(m) and channels_ok(m, selection.min_channels)))
    for name, conv in targets:
        edit.replace(model, name, separable_from(conv, activation, init))
        replaced.append(name)
    edit.summary = {"replaced": replaced, "count": len(replaced)}
    return edit
