"""Low-rank factorization of Linear layers and convolutions by truncated SVD.

- Linear (out x in): W ~ U_r S_r V_r^T becomes Linear(in, r, no bias) -> Linear(r, out, bias).
- Conv kxk (groups 1): W reshaped to out x (in*k*k) ~ U_r S_r V_r^T becomes a kxk conv with r output
  channels (same stride/padding/dilation, no bias) -> a 1x1 conv (r -> out, bias).
The rank is `rank` (capped at the full rank) or the smallest rank keeping `energy` of the squared
singular values. At full rank the pair reproduces the layer exactly. A layer whose factorized form
would not have fewer weights is skipped (listed with the reason) unless `only_if_smaller=False`.

Initialization `svd` is the truncated SVD (balanced: sqrt(S) on each side); `random` keeps
PyTorch's default init at the same shapes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.edits import Edit
from .select import Selection, channels_ok, selected
from .svd import balanced, energy_kept, rank_for, svd

KINDS = ("conv", "linear")


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros":
        return "conv"
    return None


def _matrix(module: nn.Conv2d | nn.Linear) -> torch.Tensor:
    w = module.weight.detach()
    return w.reshape(w.shape[0], -1)


def _factorized_params(module: nn.Conv2d | nn.Linear, rank: int) -> int:
    rows, cols = _matrix(module).shape
    return rank * (rows + cols)


def factorized_from(module: nn.Conv2d | nn.Linear, rank: int, init: str,
                    factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> nn.Sequential:
    """The two-layer replacement of `module` at `rank`; `factors` = svd(matrix) if already computed."""
    bias = module.bias is not None
    first: nn.Linear | nn.Conv2d
    second: nn.Linear | nn.Conv2d
    if isinstance(module, nn.Linear):
        first = nn.Linear(module.in_features, rank, bias=False)
        second = nn.Linear(rank, module.out_features, bias=bias)
    else:
        # The stubs type a conv's kernel_size/stride/padding/dilation as tuple[int, ...]; a Conv2d's are pairs.
        geometry = (module.kernel_size, module.stride, module.padding, module.dilation)
        first = nn.Conv2d(module.in_channels, rank, *geometry, bias=False)  # type: ignore[arg-type]
        second = nn.Conv2d(rank, module.out_channels, 1, bias=bias)
    if init == "svd":
        u, s, vh = factors or svd(_matrix(module))
        left, right = balanced(u, s, vh, rank, module.weight.dtype)
        with torch.no_grad():
            first.weight.copy_(right.reshape(first.weight.shape))
            second.weight.copy_(left.reshape(second.weight.shape))
            if module.bias is not None:  # then `second` has a bias too
                assert second.bias is not None
                second.bias.copy_(module.bias)
    return nn.Sequential(first, second)


def low_rank(
    model: nn.Module,
    selection: Selection,
    rank: int | None = None,
    energy: float | None = None,
    kinds: tuple[str, ...] = KINDS,
    init: str = "svd",
    only_if_smaller: bool = True,
) -> Edit:
    edit = Edit("low_rank", {"rank": rank, "energy": energy, "kinds": list(kinds), "init": init})
    layers, skipped = [], []
    accept = lambda m: _kind(m) in kinds and channels_ok(m, selection.min_channels)
    for name, module in list(selected(model, selection, accept)):
        assert isinstance(module, (nn.Conv2d, nn.Linear))  # what `accept` lets through
        matrix = _matrix(module)
        factors = svd(matrix)
        singular = factors[1]
        r = rank_for(singular, rank, energy)
        params = matrix.numel()
        if only_if_smaller and _factorized_params(module, r) >= params:
            skipped.append({"path": name, "reason": f"rank {r} of {len(singular)} would not save weights"})
            continue
        new = factorized_from(module, r, init, factors)
        edit.replace(model, name, new)
        layers.append({
            "path": name, "kind": _kind(module), "shape": list(matrix.shape), "rank": r, "full_rank": len(singular),
            "energy_kept": round(energy_kept(singular, r), 4),
        })
    edit.summary = {"count": len(layers), "layers": layers, "skipped": skipped}
    return edit
