"""User weights (`model.weights`): load a .safetensors/.pth file or a torchvision weights name from
the hub cache into a freshly built model, under the recipe's `model.strict` rule."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .names import TORCHVISION_PREFIX


def load_initial_weights(model, weights: str, arch: str, strict: bool = True) -> list[str]:
    """Load user weights from disk into `model`; return the model's keys left at their fresh init.

    A tensor loads when the file has one of the same name and shape. Keys whose shapes differ (a
    new classifier for a different class count, a first conv for a different channel count) keep
    their fresh init: that is the usual fine-tuning setup. With `strict` (the recipe's
    `model.strict`, default true) the file must fit the model: at least half of the model's
    tensors load, and at least half of the file's tensors are used. Otherwise a file for another
    architecture or width would silently train from scratch.
    """
    from .store import load_state, read_state_dict  # torch: imported when weights are loaded
    from .tv import resolve_torchvision_weights

    path = Path(weights).expanduser()
    if not path.is_file():
        if arch.startswith(TORCHVISION_PREFIX):
            path = resolve_torchvision_weights(arch[len(TORCHVISION_PREFIX):], weights)
        else:
            raise UserError(f"model.weights: file {weights!r} not found; pass a local .safetensors or .pth file")
    state = read_state_dict(path)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    unused = [k for k in state if k not in usable]
    if strict:
        _check_fit(path, arch, own, state, usable, unused)
    elif not usable:
        from ..ui import console

        console.print(f"  [yellow]warning[/]: model.weights: no tensor of {path} fits {arch}; training from scratch")
    load_state(model, usable, strict=False)
    return sorted(k for k in own if k not in usable)


def _check_fit(path: Path, arch: str, own: dict, state: dict, usable: dict, unused: list[str]) -> None:
    if 2 * len(usable) >= len(own) and 2 * len(unused) <= len(state):
        return
    mismatched = [k for k in unused if k in own]
    example = (f"e.g. {mismatched[0]}: {tuple(state[mismatched[0]].shape)} in the file, {tuple(own[mismatched[0]].shape)} "
               "in the model" if mismatched else f"e.g. {unused[0]!r} is not in the model" if unused else "")
    raise UserError(
        f"model.weights: {path} does not fit {arch}: {len(usable)} of the model's {len(own)} tensors match by name and "
        f"shape ({len(mismatched)} differ in shape, {len(unused) - len(mismatched)} unknown; {example}); use weights "
        "of this architecture and width, or set `model.strict: false` to load whatever matches"
    )
