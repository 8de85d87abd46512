"""Leaf module: what ships inside the package: the device catalog and the example recipes.

The files live in `edge_pipeline/catalog/devices/*.yaml` and `edge_pipeline/catalog/recipes/*.yaml`
(package data, found with importlib.resources), so an installed wheel has them as well as the
checkout, where the top-level `devices/` and `recipes/` are symlinks to these folders. Nothing here
imports torch or TensorFlow: `edge-pipeline recipes` and `init` answer at once.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from ..errors import PipelineError, UserError

SUMMARY_WIDTH = 100


def _shipped_folder(kind: str) -> Path:
    # A wheel installs as plain files, so the resource is a real folder (a zipped package is not
    # supported: device files are read by path and shown to the user by path).
    folder = resources.files(__name__).joinpath(kind)
    if not isinstance(folder, Path):
        raise PipelineError(f"edge_pipeline is installed zipped ({folder}); install it as files (pip install)")
    return folder


def devices_dir() -> Path:
    """The folder of the built-in device profiles."""
    return _shipped_folder("devices")


def recipes_dir() -> Path:
    return _shipped_folder("recipes")


def shipped_recipes() -> dict[str, Path]:
    """Recipe name (file stem) -> file, sorted by name."""
    return {path.stem: path for path in sorted(recipes_dir().glob("*.yaml"))}


def recipe_summary(text: str) -> str:
    """The first sentence of a recipe's leading comment block (its one-line description)."""
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    prose = " ".join(part for part in comment if part)
    match = re.match(r"(.+?[.!?])(?:\s|$)", prose)
    sentence = match.group(1) if match else prose or "(no description)"
    if len(sentence) > SUMMARY_WIDTH:  # keep `edge-pipeline recipes` one line per recipe on a terminal
        sentence = sentence[: SUMMARY_WIDTH - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return sentence


def shipped_recipe(name: str) -> Path:
    recipes = shipped_recipes()
    if name not in recipes:
        raise UserError(f"unknown recipe {name!r}; shipped recipes: {', '.join(recipes) or 'none'} "
                        "(see `edge-pipeline recipes`)")
    return recipes[name]


def copy_recipe(name: str, out: Path) -> Path:
    """Write the shipped recipe `name` to `out`; an existing file (or symlink) there is never replaced."""
    data = shipped_recipe(name).read_bytes()
    try:
        # O_EXCL: fails if anything exists at `out`, a dangling symlink included; never truncates.
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise UserError(f"{out}: already exists; choose another file with --out, or remove it first") from None
    except OSError as exc:
        raise UserError(f"{out}: cannot create it ({exc.strerror}); choose another path with --out") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        out.unlink(missing_ok=True)  # the half-written file is ours
        raise UserError(f"{out}: cannot write it ({exc.strerror}); choose another path with --out") from None
    return out
