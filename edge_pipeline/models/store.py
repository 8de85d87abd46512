"""Model persistence: a saved model is a folder with
- `structure.json`: the base architecture (BaseSpec) + the ordered structural edits as data;
- `model.safetensors`: the weights (shared tensors stored once).
Loading rebuilds the base, replays the edits, then loads the weights with `strict=True`.
Nothing is pickled; the only `torch.load` (user-supplied .pth files) uses `weights_only=True`.
"""

from __future__ import annotations

import copy
import os
import re
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save_model as save_weights
from torch import nn

from ..artifacts import LIMIT_WEIGHTS, atomic_write_json, check_regular_file, read_json, write_refused
from ..errors import UserError
from . import exit_branches, layers  # noqa: F401  (registers our own layers, which saved structures name)
from .base import BaseSpec, build_model
from .edits import Edit, replay
from .modspec import build_module

STRUCTURE_FILE = "structure.json"
WEIGHTS_FILE = "model.safetensors"
STRUCTURE_FORMAT = 1


@dataclass
class TrackedModel:
    """An nn.Module plus how to rebuild it: its base architecture and the edits applied since."""

    module: nn.Module
    base: BaseSpec
    edits: list[Edit] = field(default_factory=list)
    # Normalization and class names travel with the model into the export metadata.
    meta: dict[str, Any] = field(default_factory=dict)

    def structure(self) -> dict[str, Any]:
        return {
            "format": STRUCTURE_FORMAT,
            "base": self.base.to_dict(),
            "edits": [e.to_dict() for e in self.edits],
            "meta": self.meta,
            "module_versions": module_versions(self.module),
        }

    def copy(self) -> TrackedModel:
        return TrackedModel(copy.deepcopy(self.module), self.base, list(self.edits), dict(self.meta))


def save_model(model: TrackedModel, folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    tmp = folder / f".{WEIGHTS_FILE}.tmp"
    try:
        save_weights(model.module, str(tmp))
    except SafetensorError as exc:  # the writer is Rust: a full disk arrives as text, "... (os error 28)"
        tmp.unlink(missing_ok=True)
        refused = write_refused(_os_error_of(exc, tmp), weights)
        if refused is None:
            raise
        raise refused from None
    os.replace(tmp, weights)
    structure = folder / STRUCTURE_FILE
    atomic_write_json(structure, model.structure())
    return [structure, weights]


def _os_error_of(exc: SafetensorError, path: Path) -> OSError | None:
    match = re.search(r"os error (\d+)", str(exc))
    return OSError(int(match.group(1)), os.strerror(int(match.group(1))), str(path)) if match else None


def load_model(folder: str | os.PathLike) -> TrackedModel:
    """Rebuild a saved model; a missing, corrupt, tampered or mismatched file is a `UserError` naming it."""
    folder = Path(folder)
    structure = folder / STRUCTURE_FILE
    data = read_json(structure)
    if not isinstance(data, dict) or data.get("format") != STRUCTURE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{structure}: unknown structure format {found!r}; give a folder saved by edge-pipeline")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{weights}: weights file missing")
    base, edits, module, meta, versions = _rebuild(data, structure, weights)
    _load_weights(module, weights, versions)
    module.eval()
    return TrackedModel(module, base, edits, meta)


def _rebuild(data: dict[str, Any], structure: Path, weights: Path):
    """(base, edits, module, meta, versions) from a structure.json; whatever is wrong with the
    (possibly hand-edited) data is one UserError naming the file, never a traceback."""
    with _damaged(structure):
        base = BaseSpec.from_dict(data["base"])
        edits = [Edit.from_dict(e) for e in data["edits"]]
        meta = data.get("meta", {})
        versions = _versions_from(data.get("module_versions"))
        if not isinstance(meta, dict):
            raise TypeError(f"meta must be a mapping, got {type(meta).__name__}")
    _check_edit_sizes(edits, structure, weights)
    with _damaged(structure):
        module = replay(build_model(base), edits)
    return base, edits, module, meta, versions


@contextmanager
def _damaged(structure: Path) -> Iterator[None]:
    try:
        yield
    except UserError as exc:
        raise UserError(f"{structure}: cannot rebuild the model: {exc}") from None
    except Exception as exc:  # KeyError, TypeError, IndexError, torch errors...: the file was edited or damaged
        raise UserError(f"{structure}: cannot rebuild the model ({_reason(exc)}); the file is damaged or was not "
                        "written by edge-pipeline: restore it or rerun the stage that wrote it") from None


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2])[:200] if lines else ""
    if isinstance(exc, KeyError):
        text = f"missing key {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _versions_from(raw: Any) -> dict[str, int] | None:
    if raw is None:  # written before versions were recorded: the current classes' versions apply
        return None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and type(v) is int for k, v in raw.items()):
        raise TypeError("module_versions must map module names to integers")
    return raw


def _check_edit_sizes(edits: list[Edit], structure: Path, weights: Path) -> None:
    """Refuse modules far larger than the weights file before allocating them: a tampered spec
    (`Linear(10**6, 10**6)`) would otherwise take all memory before the shape check says no."""
    budget = weights.stat().st_size
    final: dict[Any, Any] = {}  # path -> the module spec that ends up there (a later edit replaces an earlier one)
    for edit in edits:
        for op in edit.ops if isinstance(edit.ops, list) else []:
            if isinstance(op, dict) and op.get("op") in ("replace", "attach"):
                final[str(op.get("path"))] = op.get("module")
    # Modules replaced inside an earlier replacement (pruning a low-rank pair) are part of it: count the
    # outermost ones, and each one on its own, so neither double counting nor a nested giant slips by.
    sizes = {path: _spec_numel(spec) for path, spec in final.items()}
    outermost = [p for p in sizes if not any(p.startswith(q + ".") for q in sizes)]
    total = max(sum(sizes[p] for p in outermost), max(sizes.values(), default=0))
    if total > budget:  # even at 1 byte per value the weights would not fit in the file
        raise UserError(f"{weights}: {budget} bytes, too small for the {total} values {structure.name} describes; "
                        "one of the two files is damaged: restore them or rerun the stage that wrote them")


def _spec_numel(spec: Any) -> int:
    """Parameters + buffers of a module spec, built on the meta device (no memory); 0 if unknown."""
    try:
        with torch.device("meta"):
            module = build_module(spec)
    except Exception:  # a bad spec fails again, with its reason, when the real module is built
        return 0
    return sum(t.numel() for t in module.state_dict().values())


def module_versions(module: nn.Module) -> dict[str, int]:
    """`_version` of each submodule whose version is not nn.Module's default (1), by state-dict prefix.

    Some modules read it back in `_load_from_state_dict` (torchvision's MNASNet refuses to load
    without it, BatchNorm uses it to upgrade old checkpoints); safetensors files do not keep it.
    """
    metadata = getattr(module.state_dict(), "_metadata", {}) or {}
    return {prefix: int(m["version"]) for prefix, m in metadata.items() if m.get("version", 1) != 1}


def load_state(module: nn.Module, state: dict[str, torch.Tensor], versions: dict[str, int] | None = None,
               strict: bool = True):
    """`module.load_state_dict(state)` with the per-module version metadata a plain dict lacks:
    `versions` as saved (prefixes not listed are version 1), else the state's own `_metadata`
    (a torch checkpoint keeps it), else the versions of the module's current classes."""
    own = getattr(state, "_metadata", None)
    metadata = copy.deepcopy(getattr(module.state_dict(), "_metadata", {}))
    for prefix, entry in metadata.items():
        if versions is not None:
            entry["version"] = versions.get(prefix, 1)
        elif own is not None and prefix in own and "version" in own[prefix]:
            entry["version"] = own[prefix]["version"]
    with_metadata = OrderedDict(state)
    with_metadata._metadata = metadata  # type: ignore[attr-defined]
    return module.load_state_dict(with_metadata, strict=strict)


def _load_weights(module: nn.Module, weights: Path, versions: dict[str, int] | None) -> None:
    check_regular_file(weights, LIMIT_WEIGHTS, "weights file (model.safetensors)")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise UserError(f"{weights}: cannot load weights ({_reason(exc)}); the file is corrupt") from None
    check_finite(state, weights)
    try:
        _, unexpected = load_state(module, state, versions, strict=False)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"{weights}: cannot load weights ({_reason(exc)}); the file is corrupt or does not match "
                        f"{STRUCTURE_FILE}") from None
    missing = _untied_missing(module, state)
    if missing or unexpected:
        what = [f"{len(missing)} missing, e.g. {missing[0]}"] if missing else []
        what += [f"{len(unexpected)} unexpected, e.g. {unexpected[0]}"] if unexpected else []
        raise UserError(f"{weights}: weights do not match {STRUCTURE_FILE} ({'; '.join(what)}); the file is corrupt "
                        "or from another model")


def _untied_missing(module: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Model entries the file does not hold, except tied ones (safetensors stores a shared tensor once)."""
    own = module.state_dict(keep_vars=True)
    loaded = {id(own[k]) for k in state if k in own}
    return [k for k, t in own.items() if k not in state and id(t) not in loaded]


def check_finite(state: dict[str, Any], path: str | os.PathLike) -> None:
    """A UserError naming the first floating-point tensor with a NaN or an infinity."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            kind = "NaN" if bool(torch.isnan(tensor).any()) else "infinite"
            raise UserError(f"{path}: tensor {name!r} has {kind} values; the weights are damaged or come from a "
                            "diverged training run: use other weights")


def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Weights from a user file: safetensors, or a torch checkpoint read with weights_only=True."""
    path = Path(path)
    check_regular_file(path, LIMIT_WEIGHTS, "weights file (.safetensors or .pth)")
    try:
        if path.suffix == ".safetensors":
            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or unsafe file: one clear line
        raise UserError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    expected = "expected a state dict (tensor name -> tensor), as torch.save(model.state_dict()) or safetensors write"
    for name, value in state.items():
        if not isinstance(name, str):
            raise UserError(f"{path}: key {name!r} is a {type(name).__name__}, not a tensor name; {expected}")
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; {expected}")
    check_finite(state, path)
    return state
