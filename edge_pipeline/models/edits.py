"""Structural edits as replayable data.

An `Edit` says which transform ran with which config, and lists primitive ops:
- `replace`: put a module built from a spec at a dotted path;
- `share`: make a path refer to the same module object as another path (parameter sharing);
- `attach`: add a module at a new path (modules the forward does not call, e.g. exit branches).
Replaying the ops of every edit, in order, on a freshly built base model gives exactly the
edited architecture; the weights then load with `strict=True`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from .modspec import build_module, module_spec


@dataclass
class Edit:
    transform: str
    config: dict[str, Any] = field(default_factory=dict)
    ops: list[dict[str, Any]] = field(default_factory=list)
    # Facts about the edit for reports (replaced layers, kept channels, errors): not replayed.
    summary: dict[str, Any] = field(default_factory=dict)

    def replace(self, model: nn.Module, path: str, new: nn.Module) -> None:
        """Apply and record one replacement (at every path that shares the module, see `_replace`)."""
        _replace(model, path, new)
        self.ops.append({"op": "replace", "path": path, "module": module_spec(new)})

    def attach(self, model: nn.Module, path: str, new: nn.Module) -> None:
        """Apply and record a new submodule at a path the model does not have yet (exit branches)."""
        _attach(model, path, new)
        self.ops.append({"op": "attach", "path": path, "module": module_spec(new)})

    def share(self, model: nn.Module, path: str, source: str) -> None:
        model.set_submodule(path, model.get_submodule(source))
        self.ops.append({"op": "share", "path": path, "source": source})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Edit:
        return cls(**data)


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put `new` at `path` and at every other path holding the same module object.

    A module shared by `share` is one object under several names; pruning resizes it in place (so
    all its uses change) but records one replace op at its first name. Replacing the object wherever
    it is used keeps the sharing on replay.
    """
    old = model.get_submodule(path)
    paths = [name for name, m in model.named_modules(remove_duplicate=False) if m is old and name] or [path]
    for name in dict.fromkeys([path, *paths]):
        model.set_submodule(name, new)


def _attach(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    owner = model.get_submodule(parent)
    if not name.isidentifier() or hasattr(owner, name):
        raise ValueError(f"cannot attach a module at {path!r}: the name is taken or not an identifier")
    owner.add_module(name, new)


def replay(model: nn.Module, edits: list[Edit]) -> nn.Module:
    for edit in edits:
        for op in edit.ops:
            if op["op"] == "replace":
                _replace(model, op["path"], build_module(op["module"]))
            elif op["op"] == "attach":
                _attach(model, op["path"], build_module(op["module"]))
            elif op["op"] == "share":
                model.set_submodule(op["path"], model.get_submodule(op["source"]))
            else:
                raise ValueError(f"unknown edit op {op['op']!r} in saved structure")
    return model
