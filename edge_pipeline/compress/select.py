"""Which layers a transform may touch: name globs, channel minimums, first conv and classifier."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from torch import nn


@dataclass
class Selection:
    include: list[str] = field(default_factory=lambda: ["*"])
    exclude: list[str] = field(default_factory=list)
    min_channels: int = 16
    skip_first: bool = True
    skip_classifier: bool = True

    def matches(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, g) for g in self.include) and not any(
            fnmatch.fnmatchcase(name, g) for g in self.exclude
        )


def first_conv(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name
    return None


def classifier(model: nn.Module) -> str | None:
    """The last Linear (or, in all-conv nets, the last Conv2d): the layer that emits the logits."""
    last_linear = last_conv = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_linear = name
        elif isinstance(module, nn.Conv2d):
            last_conv = name
    return last_linear or last_conv


def selected(model: nn.Module, selection: Selection, accept: Callable[[nn.Module], bool]) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) pairs the transform should replace, in module order (a stable list)."""
    skip = set()
    if selection.skip_first and (name := first_conv(model)) is not None:
        skip.add(name)
    if selection.skip_classifier and (name := classifier(model)) is not None:
        skip.add(name)
    for name, module in list(model.named_modules()):
        if name and name not in skip and selection.matches(name) and accept(module):
            yield name, module


def channels_ok(module: nn.Module, minimum: int) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.in_channels >= minimum and module.out_channels >= minimum
    if isinstance(module, nn.Linear):
        return module.in_features >= minimum and module.out_features >= minimum
    return False
