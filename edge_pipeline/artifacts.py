"""Files: atomic writes, hashing, JSON, and safe model persistence.

A saved model is a folder with
- `structure.json`: the base architecture (BaseSpec) + the ordered structural edits as data;
- `model.safetensors`: the weights (shared tensors stored once).
Loading rebuilds the base, replays the edits, then loads the weights with `strict=True`.
Nothing is pickled; the only `torch.load` (user-supplied .pth files) uses `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from .compress.edits import Edit
    from .models import BaseSpec

STRUCTURE_FILE = "structure.json"
WEIGHTS_FILE = "model.safetensors"
STRUCTURE_FORMAT = 1


# ---------------------------------------------------------------------------------------------
# Bytes on disk


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); the file is corrupt, delete it or rerun") from None


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


# ---------------------------------------------------------------------------------------------
# Models


@dataclass
class TrackedModel:
    """An nn.Module plus how to rebuild it: its base architecture and the edits applied since."""

    module: "nn.Module"
    base: "BaseSpec"
    edits: list["Edit"] = field(default_factory=list)
    # Normalization and class names travel with the model into the export metadata.
    meta: dict[str, Any] = field(default_factory=dict)

    def structure(self) -> dict[str, Any]:
        return {
            "format": STRUCTURE_FORMAT,
            "base": self.base.to_dict(),
            "edits": [e.to_dict() for e in self.edits],
            "meta": self.meta,
        }

    def copy(self) -> "TrackedModel":
        import copy

        return TrackedModel(copy.deepcopy(self.module), self.base, list(self.edits), dict(self.meta))


def save_model(model: TrackedModel, folder: str | os.PathLike) -> list[Path]:
    from safetensors.torch import save_model as save_weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    tmp = folder / f".{WEIGHTS_FILE}.tmp"
    save_weights(model.module, str(tmp))
    os.replace(tmp, weights)
    structure = folder / STRUCTURE_FILE
    atomic_write_json(structure, model.structure())
    return [structure, weights]


def load_model(folder: str | os.PathLike) -> TrackedModel:
    """Rebuild a saved model; a missing, corrupt or mismatched file is a `UserError` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_weights

    from .compress.edits import Edit, replay
    from .models import BaseSpec, build_model

    folder = Path(folder)
    data = read_json(folder / STRUCTURE_FILE)
    if not isinstance(data, dict) or data.get("format") != STRUCTURE_FORMAT:
        raise UserError(f"{folder / STRUCTURE_FILE}: unknown structure format {data.get('format') if isinstance(data, dict) else data!r}")
    try:
        base = BaseSpec.from_dict(data["base"])
        edits = [Edit.from_dict(e) for e in data["edits"]]
        module = replay(build_model(base), edits)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{folder / STRUCTURE_FILE}: cannot rebuild the model: {exc}") from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{weights}: weights file missing")
    try:
        missing, unexpected = load_weights(module, str(weights), strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
        reason = " ".join(lines[:2])[:300] if lines else type(exc).__name__
        raise UserError(f"{weights}: cannot load weights ({reason}); the file is corrupt or does not match structure.json") from None
    module.eval()
    return TrackedModel(module, base, edits, data.get("meta", {}))


def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Weights from a user file: safetensors, or a torch checkpoint read with weights_only=True."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or unsafe file: one clear line
        raise UserError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state
