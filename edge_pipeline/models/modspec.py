"""Modules as plain data: `module_spec(m)` -> dict, `build_module(spec)` -> a fresh nn.Module.

This is how a changed architecture is saved without pickles: every structural edit records the
spec of each module it put in place, and loading rebuilds those modules before loading weights
with `strict=True`. Supported: the standard layers our transforms and pruning produce, nn.Sequential
of them, and our own modules registered with `@buildable` (which expose `spec_args()`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

from torch import nn

_CUSTOM: dict[str, Callable[..., nn.Module]] = {}


class Buildable(Protocol):
    """What a `@buildable` class provides besides being an nn.Module."""

    def spec_args(self) -> dict[str, Any]: ...


def buildable(cls):
    """Register one of our module classes; it must define `spec_args() -> dict` of its __init__ kwargs."""
    if cls.__name__ in _CUSTOM:
        raise ValueError(f"duplicate buildable module {cls.__name__}")
    _CUSTOM[cls.__name__] = cls
    return cls


def _conv_args(m: nn.Conv2d) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": list(m.kernel_size),
        "stride": list(m.stride), "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None, "padding_mode": m.padding_mode,
    }


def _bn_args(m: nn.modules.batchnorm._BatchNorm) -> dict[str, Any]:
    return {"num_features": m.num_features, "eps": m.eps, "momentum": m.momentum, "affine": m.affine,
            "track_running_stats": m.track_running_stats}


# type name -> (class, function reading its constructor args)
_STANDARD: dict[str, tuple[type[nn.Module], Callable[[Any], dict[str, Any]]]] = {
    "Conv2d": (nn.Conv2d, _conv_args),
    "Linear": (nn.Linear, lambda m: {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}),
    "BatchNorm2d": (nn.BatchNorm2d, _bn_args),
    "BatchNorm1d": (nn.BatchNorm1d, _bn_args),
    "Identity": (nn.Identity, lambda m: {}),
    "ReLU": (nn.ReLU, lambda m: {"inplace": m.inplace}),
    "ReLU6": (nn.ReLU6, lambda m: {"inplace": m.inplace}),
    "Hardswish": (nn.Hardswish, lambda m: {"inplace": m.inplace}),
    "Hardsigmoid": (nn.Hardsigmoid, lambda m: {"inplace": m.inplace}),
    "SiLU": (nn.SiLU, lambda m: {"inplace": m.inplace}),
    "Sigmoid": (nn.Sigmoid, lambda m: {}),
    "Flatten": (nn.Flatten, lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim}),
    "Dropout": (nn.Dropout, lambda m: {"p": m.p, "inplace": m.inplace}),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, lambda m: {"output_size": m.output_size}),
    "MaxPool2d": (nn.MaxPool2d, lambda m: {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding}),
}


def module_spec(module: nn.Module) -> dict[str, Any]:
    name = type(module).__name__
    if name in _CUSTOM and type(module) is _CUSTOM[name]:
        return {"type": name, "args": cast(Buildable, module).spec_args()}  # registered with @buildable
    if type(module) is nn.Sequential:
        return {"type": "Sequential", "children": [module_spec(child) for child in module]}
    if name in _STANDARD and type(module) is _STANDARD[name][0]:
        return {"type": name, "args": _STANDARD[name][1](module)}
    raise TypeError(
        f"cannot record module type {type(module).__module__}.{name} as data; "
        "register it with @buildable or use standard layers"
    )


def build_module(spec: dict[str, Any]) -> nn.Module:
    kind = spec["type"]
    if kind == "Sequential":
        return nn.Sequential(*(build_module(child) for child in spec["children"]))
    args = dict(spec.get("args", {}))
    if kind in _CUSTOM:
        return _CUSTOM[kind](**args)
    if kind in _STANDARD:
        cls = _STANDARD[kind][0]
        if kind == "Conv2d":
            for key in ("kernel_size", "stride", "dilation"):
                args[key] = tuple(args[key])
            if not isinstance(args["padding"], str):
                args["padding"] = tuple(args["padding"])
        return cls(**args)
    raise ValueError(f"unknown module type {kind!r} in saved structure (written by a newer edge-pipeline?)")
