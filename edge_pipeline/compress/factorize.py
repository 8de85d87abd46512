"""Asymmetric factorization (Inception v3): a kxk conv becomes a kx1 conv then a 1xk conv.

With r intermediate channels, the pair computes the kernel K[o, c, h, w] = sum_m A[m, c, h] B[o, m, w],
i.e. the matrix M[(c, h), (o, w)] = W[o, c, h, w] written as a product of a (in*k x r) and a
(r x out*k) factor. Truncated SVD of M gives the best such pair at rank r (Eckart-Young), and at
full rank (min(in, out) * k) the pair reproduces the layer exactly, borders included: the vertical
conv has no bias and the horizontal one zero-pads exactly where the original would have read zeros.

Weights and MACs per output pixel go from out*in*k*k to r*k*(in + out): r = out (Inception v3's
choice, the default) saves a third for in == out and k = 3. A layer whose factorized form would
not have fewer weights is skipped (listed with the reason) unless `only_if_smaller=False`.

`activation: none` (default) keeps the pair linear, so the SVD start is the exact rank-r kernel;
with an activation, BN + activation go in between (Inception v3's layout; the BN starts as the
identity) and ReLU cuts the negative half of the intermediate maps, so the start is approximate.
`init: random` keeps PyTorch's default init.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.edits import Edit
from .batchnorm import calibrate_identity
from .depthwise import make_activation
from .select import Selection, channels_ok, selected
from .svd import balanced, energy_kept, rank_for, svd


def is_factorizable(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"
        and module.kernel_size[0] > 1 and module.kernel_size[1] > 1
    )


def kernel_matrix(conv: nn.Conv2d) -> torch.Tensor:
    """M[(c, h), (o, w)] = W[o, c, h, w]."""
    cout, cin, kh, kw = conv.weight.shape
    return conv.weight.detach().permute(1, 2, 0, 3).reshape(cin * kh, cout * kw)


def _split(value, vertical: bool, fill: int):
    if isinstance(value, str):
        return value
    return (value[0], fill) if vertical else (fill, value[1])


def factorized_from(conv: nn.Conv2d, rank: int, activation: str, init: str,
                    factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> nn.Sequential:
    cout, cin, kh, kw = conv.weight.shape
    vertical = nn.Conv2d(cin, rank, (kh, 1), _split(conv.stride, True, 1), _split(conv.padding, True, 0),
                         _split(conv.dilation, True, 1), bias=False)
    horizontal = nn.Conv2d(rank, cout, (1, kw), _split(conv.stride, False, 1), _split(conv.padding, False, 0),
                           _split(conv.dilation, False, 1), bias=conv.bias is not None)
    if init == "svd":
        u, s, vh = factors or svd(kernel_matrix(conv))
        left, right = balanced(u, s, vh, rank, conv.weight.dtype)
        with torch.no_grad():
            vertical.weight.copy_(left.T.reshape(rank, cin, kh, 1))
            horizontal.weight.copy_(right.reshape(rank, cout, kw).permute(1, 0, 2).reshape(cout, rank, 1, kw))
            if conv.bias is not None:
                assert horizontal.bias is not None  # made with a bias when `conv` has one
                horizontal.bias.copy_(conv.bias)
    if activation == "none":
        return nn.Sequential(vertical, horizontal)
    return nn.Sequential(vertical, nn.BatchNorm2d(rank), make_activation(activation), horizontal)


def factorize(
    model: nn.Module,
    selection: Selection,
    rank: int | None = None,
    energy: float | None = None,
    activation: str = "none",
    init: str = "svd",
    only_if_smaller: bool = True,
    inputs: torch.Tensor | None = None,
) -> Edit:
    """`rank` and `energy` both None: r = the layer's output channels (Inception v3)."""
    edit = Edit("factorize", {"rank": rank, "energy": energy, "activation": activation, "init": init})
    layers, skipped, bns = [], [], []
    targets = list(selected(model, selection, lambda m: is_factorizable(m) and channels_ok(m, selection.min_channels)))
    for name, conv in targets:
        assert isinstance(conv, nn.Conv2d)  # is_factorizable
        cout, cin, kh, kw = conv.weight.shape
        factors = svd(kernel_matrix(conv))
        singular = factors[1]
        r = rank_for(singular, rank if (rank or energy) else cout, energy)
        if only_if_smaller and r * (cin * kh + cout * kw) >= conv.weight.numel():
            skipped.append({"path": name, "reason": f"rank {r} of {len(singular)} would not save weights"})
            continue
        new = factorized_from(conv, r, activation, init, factors)
        bns += [m for m in new.modules() if isinstance(m, nn.BatchNorm2d)]
        edit.replace(model, name, new)
        layers.append({"path": name, "kernel": [kh, kw], "in": cin, "out": cout, "rank": r, "full_rank": len(singular),
                       "energy_kept": round(energy_kept(singular, r), 4)})
    if init != "random":
        calibrate_identity(model, bns, inputs)
    edit.summary = {"count": len(layers), "layers": layers, "skipped": skipped}
    return edit
