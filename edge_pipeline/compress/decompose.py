"""Spatial decomposition (Inception v2): a kxk conv (k = 5, 7, ...) becomes (k-1)/2 stacked 3x3 convs.

The stack has the same receptive field: two 3x3 convs see 5x5, three see 7x7. Channels go
in -> m -> ... -> m -> out with m = round(mid_ratio * min(in, out)) (for in == out and ratio 1,
Inception v2's choice). The last conv carries the stride, which makes the stack the exact
composition of its kernels (a stride on an earlier conv would dilate the later ones). Weights and
MACs per pixel go from in*out*k*k to 9*(in*m + (n-2)*m*m + m*out). A layer whose stack would not
have fewer weights is skipped (listed with the reason) unless `only_if_smaller=False`.

Initialization `fit`: a linear stack of convs is one conv whose kernel is the full convolution of
the stacked kernels (summed over the middle channels). There is no closed form (SVD) for the best
stack of a given width (the problem is a non-convex polynomial factorization), so the stacked
kernels are fitted to the original kernel by L-BFGS on the relative squared error, from the seeded
default init (data-free, deterministic). The error reached is reported as `kernel_fit_error`; on
trained kernels it is far from zero (about 0.5 at middle width = min(in, out)), because a stack of
that width cannot hold an arbitrary 5x5 kernel: expect to fine-tune. Even a perfect kernel fit differs from the original within
(k-1)/2 pixels of the border when the convs pad, because the intermediate maps are zero-padded
where the single conv would have read real values; the reconstruction error on calibration data
includes that. `activation: none` (default) keeps the stack linear (the fit is then the start);
with an activation, BN (starting as the identity) + activation go between the convs
(Inception v2's layout) and ReLU cuts the negative parts. `random` keeps PyTorch's default init.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.edits import Edit
from .batchnorm import calibrate_identity
from .depthwise import make_activation
from .select import Selection, channels_ok, selected


def is_decomposable(module: nn.Module) -> bool:
    if not isinstance(module, nn.Conv2d) or module.groups != 1 or module.padding_mode != "zeros":
        return False
    kh, kw = module.kernel_size
    return kh == kw and kh >= 5 and kh % 2 == 1


def _paddings(padding, dilation: int, count: int) -> list:
    """Split a conv's padding over `count` 3x3 convs (each takes at most its own dilation)."""
    if isinstance(padding, str):
        return [padding] * count
    out, left = [], list(padding)
    for _ in range(count):
        step = [min(dilation, p) for p in left]
        left = [p - s for p, s in zip(left, step)]
        out.append(tuple(step))
    out[-1] = tuple(s + p for s, p in zip(out[-1], left))  # whatever is left (padding > (k-1)/2 * d)
    return out


def stack_convs(conv: nn.Conv2d, mid: int) -> list[nn.Conv2d]:
    count = (conv.kernel_size[0] - 1) // 2
    d = conv.dilation[0]
    pads = _paddings(conv.padding, d, count)
    channels = [conv.in_channels] + [mid] * (count - 1) + [conv.out_channels]
    convs = []
    for i in range(count):
        last = i == count - 1
        # The stubs type a conv's stride/dilation as tuple[int, ...]; a Conv2d's are pairs.
        convs.append(nn.Conv2d(channels[i], channels[i + 1], 3, conv.stride if last else 1, pads[i], conv.dilation,  # type: ignore[arg-type]
                               bias=last and conv.bias is not None))
    return convs


def compose(kernels: list[torch.Tensor]) -> torch.Tensor:
    """The kernel of the linear stack (first conv first): (out, in, k, k) with k = 1 + 2 * len(kernels)."""
    total = kernels[0]  # (m, in, a, a)
    for nxt in kernels[1:]:  # (o, m, 3, 3)
        # Full convolution of every (m -> in) kernel with every (o -> m) kernel, summed over m:
        # conv2d cross-correlates, so the second kernel is flipped.
        total = F.conv2d(total.permute(1, 0, 2, 3), nxt.flip(2, 3), padding=2).permute(1, 0, 2, 3)
    return total


def fit_kernels(convs: list[nn.Conv2d], target: torch.Tensor, steps: int = 150) -> float:
    """Fit the stacked kernels to `target` in place; return the relative error reached.

    L-BFGS on the relative squared error of the composed kernel, from the convs' seeded default
    init. Measured on the trained convnet_5x5 (digits): 5x5 32->64 reaches 0.46 and 7x7 64->96
    0.53 in 150 steps (a few seconds); alternating least squares (exact per-factor steps) and a
    start from the kernel's central 3x3 both ended higher, and slower.
    """
    target = target.detach()
    params = [c.weight for c in convs]
    norm = target.pow(2).sum().clamp_min(1e-30)
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        loss = (compose(params) - target).pow(2).sum() / norm
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    for p in params:
        p.grad = None
    with torch.no_grad():
        return float(((compose(params) - target).pow(2).sum() / norm).sqrt())


def decomposed_from(conv: nn.Conv2d, mid: int, activation: str, init: str) -> tuple[nn.Sequential, float | None]:
    convs = stack_convs(conv, mid)
    error = None
    if init == "fit":
        error = fit_kernels(convs, conv.weight)
        if conv.bias is not None:
            assert convs[-1].bias is not None  # stack_convs gives the last conv a bias when `conv` has one
            with torch.no_grad():
                convs[-1].bias.copy_(conv.bias)
    layers: list[nn.Module] = []
    for i, c in enumerate(convs):
        layers.append(c)
        if i < len(convs) - 1 and activation != "none":
            layers += [nn.BatchNorm2d(c.out_channels), make_activation(activation)]
    return nn.Sequential(*layers), error


def stack_params(conv: nn.Conv2d, mid: int) -> int:
    return sum(c.weight.numel() for c in stack_convs(conv, mid))


def decompose(
    model: nn.Module,
    selection: Selection,
    mid_ratio: float = 1.0,
    activation: str = "none",
    init: str = "fit",
    only_if_smaller: bool = True,
    inputs: torch.Tensor | None = None,
) -> Edit:
    edit = Edit("decompose", {"mid_ratio": mid_ratio, "activation": activation, "init": init})
    layers, skipped, bns = [], [], []
    targets = list(selected(model, selection, lambda m: is_decomposable(m) and channels_ok(m, selection.min_channels)))
    for name, conv in targets:
        assert isinstance(conv, nn.Conv2d)  # is_decomposable
        mid = max(1, round(mid_ratio * min(conv.in_channels, conv.out_channels)))
        if only_if_smaller and stack_params(conv, mid) >= conv.weight.numel():
            skipped.append({"path": name, "reason": f"{mid} middle channels would not save weights"})
            continue
        new, error = decomposed_from(conv, mid, activation, init)
        bns += [m for m in new.modules() if isinstance(m, nn.BatchNorm2d)]
        edit.replace(model, name, new)
        info: dict[str, Any] = {"path": name, "kernel": conv.kernel_size[0], "in": conv.in_channels, "out": conv.out_channels,
                "convs_3x3": (conv.kernel_size[0] - 1) // 2, "mid": mid}
        if error is not None:
            info["kernel_fit_error"] = round(error, 5)
        layers.append(info)
    if init != "random":
        calibrate_identity(model, bns, inputs)
    edit.summary = {"count": len(layers), "layers": layers, "skipped": skipped}
    return edit
