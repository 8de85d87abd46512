"""Grids of recipe values and the variants they make.

A grid axis is `PATH=[v1, v2, ...]`: PATH as `--set` takes it (`stages.prune.ratio`, `data.image_size`,
`stages.2.finetune.epochs`), the values a YAML flow list. The variants are the cartesian product of
the axes, or with `zip` the i-th value of every axis together (all axes then have one length).

A whole stage can be an axis too: `stages.restructure=[keep, drop]` runs the recipe with and without
that stage; a mapping replaces the stage's body (`stages.prune=[{ratio: 0.3}, {method: random}]`).
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..recipe import apply_override
from ..yamlio import load_value

MAX_VALUES = 64  # per axis
MAX_VARIANTS = 512  # in all: each one is a pipeline run
KEEP, DROP = "keep", "drop"


@dataclass(frozen=True)
class Axis:
    path: str
    values: tuple[Any, ...]

    @property
    def is_stage(self) -> bool:
        """`stages.<name or index>`: the axis switches or replaces a whole stage."""
        parts = self.path.split(".")
        return len(parts) == 2 and parts[0] == "stages"


def parse_axis(text: str, origin: str = "--grid") -> Axis:
    """`PATH=[v1, v2]` (a YAML flow list) -> Axis; one clear line for anything else."""
    path, sep, raw = text.partition("=")
    path = path.strip()
    if not sep or not path or not raw.strip():
        raise UserError(f"{origin} {text}: expected PATH=[v1, v2, ...], e.g. --grid stages.prune.ratio=[0.3,0.5,0.7]")
    values = load_value(raw, f"{origin} {text}")
    return make_axis(path, values, f"{origin} {text}")


def make_axis(path: str, values: Any, where: str) -> Axis:
    if not isinstance(values, list) or not values:
        raise UserError(f"{where}: the values must be a non-empty list, e.g. [0.3, 0.5]")
    if len(values) > MAX_VALUES:
        raise UserError(f"{where}: {len(values)} values; at most {MAX_VALUES} per axis")
    parts = path.split(".")
    if any(not p for p in parts):
        raise UserError(f"{where}: {path!r} is not a dotted path (e.g. stages.prune.ratio)")
    axis = Axis(path, tuple(values))
    if axis.is_stage:
        bad = [v for v in values if not (isinstance(v, dict) or v in (KEEP, DROP))]
        if bad:
            raise UserError(f"{where}: a whole-stage axis takes {KEEP!r}, {DROP!r} or a mapping (the stage's settings), "
                            f"got {bad[0]!r}")
    elif len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
        raise UserError(f"{where}: a value appears twice; each variant must differ")
    return axis


def combinations(axes: list[Axis], zipped: bool = False) -> list[dict[str, Any]]:
    """The variants' settings, in a stable order: {path: value} per variant."""
    if not axes:
        raise UserError("sweep: no grid; give at least one --grid PATH=[v1,v2]")
    paths = [a.path for a in axes]
    if len(set(paths)) != len(paths):
        dup = next(p for p in paths if paths.count(p) > 1)
        raise UserError(f"--grid {dup}: given twice; put every value in one list")
    if zipped:
        lengths = {len(a.values) for a in axes}
        if len(lengths) != 1:
            raise UserError("--zip: every --grid needs the same number of values; got "
                            + ", ".join(f"{a.path}: {len(a.values)}" for a in axes))
        rows = list(zip(*(a.values for a in axes), strict=True))
    else:
        total = 1
        for a in axes:
            total *= len(a.values)
        if total > MAX_VARIANTS:
            raise UserError(f"sweep: the grid makes {total} variants; at most {MAX_VARIANTS} (use --zip or fewer values)")
        rows = list(itertools.product(*(a.values for a in axes)))
    return [dict(zip(paths, row, strict=True)) for row in rows]


def apply_settings(data: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw recipe `data` with one variant's settings applied (stage drops last, so
    other paths may still name the dropped stage's neighbours by index as the base recipe has them)."""
    out = copy.deepcopy(data)
    drops = []
    for path, value in settings.items():
        if Axis(path, ()).is_stage:
            index = _stage_position(out, path)  # must exist, even if kept
            if value == DROP:
                drops.append(path)
            elif isinstance(value, dict):  # new settings for the stage; its type and name unchanged
                ((stage_type, body),) = out["stages"][index].items()
                name = body.get("name") if isinstance(body, dict) else None
                out["stages"][index] = {stage_type: {**({"name": name} if name else {}), **copy.deepcopy(value)}}
            continue
        # JSON is YAML: `--set` parses the value back to exactly this data.
        apply_override(out, f"{path}={json.dumps(value)}")
    for index in sorted((_stage_position(out, p) for p in drops), reverse=True):
        del out["stages"][index]
    return out


def _stage_position(data: dict[str, Any], path: str) -> int:
    loc, _ = apply_override(copy.deepcopy(data), f"{path}=null")  # resolves a name or an index to its position
    return int(loc[1])
