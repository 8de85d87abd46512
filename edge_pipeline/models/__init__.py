"""Model registry: `build_model(BaseSpec)` for zoo names and `torchvision:<name>`.

A BaseSpec is the plain-data description of the architecture before any edit (it is stored in
every saved model's structure.json), so a model can always be rebuilt without pickles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from .names import TORCHVISION_PREFIX, ZOO, check_arch


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
        return cls(**data)


def build_model(spec: BaseSpec):
    """A freshly initialized model (deterministic under torch.manual_seed)."""
    problem = check_arch(spec.arch)
    if problem:
        raise UserError(f"model.arch: {problem}")
    if spec.arch.startswith(TORCHVISION_PREFIX):
        from .tv import build_torchvision

        return build_torchvision(spec.arch[len(TORCHVISION_PREFIX):], spec.num_classes, spec.in_channels)
    from .zoo import BUILDERS

    try:
        return BUILDERS[spec.arch](spec.num_classes, spec.in_channels, spec.image_size, width=spec.width)
    except ValueError as exc:
        raise UserError(f"model.arch: {spec.arch}: {exc}") from None


def load_initial_weights(model, weights: str, arch: str) -> list[str]:
    """Load user weights from disk into `model`; return the keys left at init (shape mismatch).

    Keys whose shapes differ (a new classifier for a different class count, a first conv for a
    different channel count) keep their fresh init: that is the usual fine-tuning setup.
    """
    from .tv import resolve_torchvision_weights
    from ..artifacts import read_state_dict

    path = Path(weights).expanduser()
    if not path.is_file():
        if arch.startswith(TORCHVISION_PREFIX):
            path = resolve_torchvision_weights(arch[len(TORCHVISION_PREFIX):], weights)
        else:
            raise UserError(f"model.weights: file {weights!r} not found; pass a local .safetensors or .pth file")
    state = read_state_dict(path)
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    unknown = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    if len(unknown) > len(own) // 2 or not any(k in own for k in state):
        raise UserError(f"model.weights: {path} does not fit {arch}: {len(unknown)} unknown keys, e.g. {unknown[:3]}")
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return sorted(skipped + missing)


__all__ = ["BaseSpec", "build_model", "load_initial_weights", "ZOO"]
