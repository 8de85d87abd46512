"""The model registry: `build_model(BaseSpec)` for zoo names and `torchvision:<name>`.

A BaseSpec is the plain-data description of the architecture before any edit (it is stored in
every saved model's structure.json), so a model can always be rebuilt without pickles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import UserError
from .names import MAX_CLASSES, TORCHVISION_PREFIX, check_arch


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
    def from_dict(cls, data: dict[str, Any]) -> BaseSpec:
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
