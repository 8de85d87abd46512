"""`edge-pipeline stages`: every stage's recipe options, generated from the config classes.

The reference is read from the same pydantic models that validate recipes, so it cannot drift from
what `validate` accepts: nested blocks (a restructure transform, `distill.features`) are listed
with dotted keys, each with its type, default and description.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


@dataclass(frozen=True)
class Option:
    key: str  # dotted path under the stage's key
    type: str
    default: str  # "" when the option is required
    description: str


def stage_options(config: type[BaseModel]) -> list[Option]:
    """Every option of a config class, nested blocks flattened to dotted keys, in declaration order."""
    return list(_options(config, ""))


def _options(model: type[BaseModel], prefix: str):
    for name, field in model.model_fields.items():
        if field.exclude:  # internal fields, never written in a recipe
            continue
        key = prefix + name
        nested = _nested_models(field.annotation)
        if nested:  # a block: its keys follow; optional blocks are off unless written
            optional = field.default is None
            yield Option(key, "mapping, optional" if optional else "mapping", "", field.description or "")
        else:
            yield Option(key, type_name(field.annotation), _default(field), field.description or "")
        for model in nested:
            yield from _options(model, key + ".")


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _nested_models(arg)]


def _default(field) -> str:
    if field.default_factory is not None:
        return repr(field.default_factory())
    if field.default is PydanticUndefined:
        return ""
    return repr(field.default)


def type_name(annotation: Any) -> str:
    """A short, recipe-oriented spelling: Literal['a', 'b'] -> a|b, X | None -> X | None."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list[{', '.join(type_name(a) for a in args if a is not Ellipsis)}]"
    if origin is dict:
        return f"dict[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def summary(stage_cls) -> str:
    """The first line of a stage module's docstring, without the leading "`name`:"."""
    import sys

    doc = (sys.modules[stage_cls.__module__].__doc__ or "").strip().splitlines()
    line = doc[0] if doc else ""
    return line.split(":", 1)[1].strip() if line.startswith("`") and ":" in line else line


def render(names: list[str]) -> str:
    from .stages import STAGES

    blocks = []
    for name in names:
        stage = STAGES.get(name)
        options = stage_options(stage.Config)
        width = max(len(o.key) for o in options)
        type_width = min(max(len(o.type) for o in options), 34)
        lines = [f"{name}: {summary(stage)}"]
        for o in options:
            default = f" = {o.default}" if o.default else "" if o.type.startswith("mapping") else " (required)"
            lines.append(f"  {o.key:<{width}}  {o.type:<{type_width}}{default}".rstrip())
            if o.description:
                lines.append(f"  {'':<{width}}    {o.description}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
