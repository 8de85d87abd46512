"""The model registry: `build_model(BaseSpec)` for zoo names and `torchvision:<name>`.

A BaseSpec is the plain-data description of the architecture before any edit (it is stored in
every saved model's structure.json), so a model can always be rebuilt without pickles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from .names import TORCHVISION_PREFIX, check_arch

# Bounds of a saved BaseSpec (the recipe's own bounds; num_classes: ImageNet-21k has 21,841).
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class BaseSpec:
    arch: str
    num_classes: int
    in_channels: int
    image_size: int
    width: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BaseSpec":
        """The spec from a structure.json; a value out of the recipe's bounds is a ValueError (a
        hand-edited `num_classes: 10**9` must not allocate a 4 GB head before anything says no)."""
        if not isinstance(data, dict):
            raise TypeError(f"base must be a mapping, got {type(data).__name__}")
        spec = cls(**data)
        _check_range("num_classes", spec.num_classes, 2, MAX_CLASSES)
        _check_range("in_channels", spec.in_channels, 1, 4)
        _check_range("image_size", spec.image_size, 8, 1024)
        if not isinstance(spec.arch, str):
            raise TypeError(f"arch must be a string, got {spec.arch!r}")
        if isinstance(spec.width, bool) or not isinstance(spec.width, (int, float)) or not 0 < spec.width <= 8:
            raise ValueError(f"width must be a number in (0, 8], got {spec.width!r}")
        return spec



def _check_range(name: str, value: Any, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def build_model(spec: BaseSpec):
    """A freshly initialized model (deterministic under torch.manual_seed)."""
    problem = check_arch(spec.arch)
    if problem:
        raise UserError(f"model.arch: {problem}")
    if spec.arch.startswith(TORCHVISION_PREFIX):
        from .tv import build_torchvision

        return build_torchvision(spec.arch[len(TORCHVISION_PREFIX):], spec.num_classes, spec.in_channels, spec.image_size)
    from .zoo import BUILDERS

    try:
        return BUILDERS[spec.arch](spec.num_classes, spec.in_channels, spec.image_size, width=spec.width)
    except ValueError as exc:
        raise UserError(f"model.arch: {spec.arch}: {exc}") from None


def load_initial_weights(model, weights: str, arch: str, strict: bool = True) -> list[str]:
    """Load user weights from disk into `model`; return the model's keys left at their fresh init.

    A tensor loads when the file has one of the same name and shape. Keys whose shapes differ (a
    new classifier for a different class count, a first conv for a different channel count) keep
    their fresh init: that is the usual fine-tuning setup. With `strict` (the recipe's
    `model.strict`, default true) the file must fit the model: at least half of the model's
    tensors load, and at least half of the file's tensors are used. Otherwise a file for another
    architecture or width would silently train from scratch.
    """
    from .store import load_state, read_state_dict
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
