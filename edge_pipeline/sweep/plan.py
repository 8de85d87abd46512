"""A sweep's plan: the variants of a recipe, each a complete recipe file, and where each one runs.

```
sweeps/<name>/
  .edge-pipeline-run    marker (the folder is ours; see rundir.py)
  plan.json             the axes, constraints, devices and every variant: id, settings, recipe, run folder
  variants/<id>.yaml    the variant as a complete, resolved recipe (runs anywhere: `edge-pipeline run`)
  runs/<id>/            the variant's run folder
  store/                the stage store the variants share (unless --store names another one)
  logs/<id>.log         what the variant's run printed (when the sweep ran it)
  slurm-array.sh        the same variants as a Slurm job array (see README "Sweeps")
  sweep.json  sweep.md  report.html  plots/  best.yaml  best-<device>.yaml   (written by collect)
```

A variant whose recipe is invalid (a grid value the schema refuses) is planned as `invalid` with
the error, and the others still run. A grid path that names nothing in the recipe is the user's
error for the whole sweep (exit 2), since every variant would fail the same way.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from ..artifacts import LIMIT_YAML, atomic_write_json, atomic_write_text, read_json, read_text_bounded
from ..errors import UserError
from ..recipe import parse_recipe
from ..schema import NAME_MAX_LENGTH, NAME_PATTERN, Strict
from ..yamlio import dump, load_located
from .grid import Axis, apply_settings, combinations

PLAN_FILE = "plan.json"
PLAN_FORMAT = 1
VARIANTS_DIR = "variants"
RUNS_DIR = "runs"
STORE_DIR = "store"
LOGS_DIR = "logs"
SLURM_FILE = "slurm-array.sh"
PLANNED, INVALID = "planned", "invalid"


class Constraints(Strict):
    max_latency_ms: float | None = Field(None, gt=0, description="Budget on the measured median latency (ms).")
    device: str | None = Field(None, pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH,
                               description="The device the latency budget is for (default: every device).")
    min_accuracy: float | None = Field(None, ge=0, le=1, description="Lowest acceptable test accuracy (0..1).")
    max_size_kb: float | None = Field(None, gt=0, description="Largest acceptable file, KB of 1024 bytes (as the reports show sizes).")


class SweepFile(Strict):
    """A sweep written down: `edge-pipeline sweep FILE` (command-line options add to it)."""

    recipe: str = Field(description="The recipe to vary; relative to this file.")
    grid: dict[str, list[Any]] = Field(min_length=1, description="PATH: [values], as --grid takes them.")
    zip: bool = False
    devices: list[str] | None = Field(None, min_length=1)
    constraints: Constraints = Field(default_factory=Constraints)
    jobs: int = Field(1, ge=1, le=64)


@dataclass
class Variant:
    id: str
    settings: dict[str, Any]
    recipe: str  # relative to the sweep folder
    run_dir: str  # relative to the sweep folder
    status: str = PLANNED
    error: str | None = None


@dataclass
class Plan:
    name: str
    source: str  # the base recipe, absolute
    axes: list[dict[str, Any]]
    zip: bool
    devices: list[str] | None
    constraints: dict[str, Any]
    store: str
    variants: list[Variant] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, **asdict(self)}


def read_sweep_file(path: Path) -> tuple[SweepFile, Path]:
    """(the sweep file, its base recipe's path) for `sweep FILE`."""
    located = load_located(read_text_bounded(path, LIMIT_YAML, "sweep file (.yaml)"), str(path))
    try:
        spec = SweepFile.model_validate(located.data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        raise UserError(f"{path}:{located.line_of(loc) or 1}: {'.'.join(map(str, loc)) or 'sweep'}: {err['msg']}") from None
    recipe = (path.parent / spec.recipe).resolve()
    return spec, recipe


def is_sweep_file(path: Path) -> bool:
    """A YAML mapping with a `grid:` key is a sweep file; anything else is taken for a recipe."""
    data = load_located(read_text_bounded(path, LIMIT_YAML, "recipe or sweep file (.yaml)"), str(path)).data
    return isinstance(data, dict) and "grid" in data


def make_plan(recipe_path: Path, axes: list[Axis], zipped: bool, devices: list[str] | None,
              constraints: Constraints, store: str) -> tuple[Plan, dict[str, str]]:
    """The plan and each valid variant's recipe text (id -> YAML)."""
    if not recipe_path.is_file():
        raise UserError(f"{recipe_path}: recipe file not found; pass a recipe (.yaml) or a sweep file")
    text = read_text_bounded(recipe_path, LIMIT_YAML, "recipe (.yaml)")
    base = parse_recipe(text, str(recipe_path))  # the base recipe must be valid before any variant is made
    raw = load_located(text, str(recipe_path)).data
    raw.setdefault("name", base.name)
    plan = Plan(base.name, str(recipe_path.resolve()), [{"path": a.path, "values": list(a.values)} for a in axes],
                zipped, devices, constraints.model_dump(mode="json"), store)
    texts: dict[str, str] = {}
    width = len(str(max(0, len(combinations(axes, zipped)) - 1)))
    for number, settings in enumerate(combinations(axes, zipped)):
        vid = f"v{number:0{width}d}"
        variant = Variant(vid, settings, f"{VARIANTS_DIR}/{vid}.yaml", f"{RUNS_DIR}/{vid}")
        data = apply_settings(raw, settings)  # a path that names nothing: UserError for the whole sweep
        data["name"] = f"{base.name[: NAME_MAX_LENGTH - len(vid) - 1]}-{vid}"
        _with_devices(data, devices)
        _absolute_paths(data, Path.cwd())
        try:
            recipe = parse_recipe(dump(data), vid)
        except UserError as exc:
            # "v4:16: stages[1].prune.ratio: must be < 1, got 1.5": the line is of a generated file, drop it.
            variant.status, variant.error = INVALID, re.sub(rf"^{vid}:\d+: ", "", str(exc).splitlines()[0])
        else:
            texts[vid] = recipe.resolved_yaml()
        plan.variants.append(variant)
    if not texts:
        raise UserError(f"sweep: no valid variant; the first one fails with: {plan.variants[0].error}")
    return plan, texts


def _with_devices(data: dict[str, Any], devices: list[str] | None) -> None:
    """Every profile stage measures on `devices`. A sweep compares files measured on devices: a recipe
    without a profile stage gets one (and an export stage before it, if it has none)."""
    stages = data.get("stages")
    if not isinstance(stages, list):
        return
    profiles = [s for s in stages if isinstance(s, dict) and "profile" in s]
    if not profiles:
        if not any(isinstance(s, dict) and "export" in s for s in stages):
            stages.append({"export": {}})
        stages.append({"profile": {"devices": list(devices or ["host"])}})
        return
    if devices:
        for stage in profiles:
            body = stage["profile"] if isinstance(stage["profile"], dict) else {}
            stage["profile"] = {**body, "devices": list(devices)}


def _absolute_paths(data: dict[str, Any], cwd: Path) -> None:
    """Paths a recipe takes relative to the working folder, made absolute: a variant's recipe runs
    from anywhere (a cluster job starts in its own folder)."""
    block = data.get("data")
    if isinstance(block, dict) and isinstance(block.get("path"), str):
        block["path"] = str((cwd / Path(block["path"]).expanduser()).resolve())
    model = data.get("model")
    weights = model.get("weights") if isinstance(model, dict) else None
    if isinstance(model, dict) and isinstance(weights, str) and (cwd / Path(weights).expanduser()).is_file():
        model["weights"] = str((cwd / Path(weights).expanduser()).resolve())


def write_plan(folder: Path, plan: Plan, texts: dict[str, str]) -> None:
    """Into a claimed sweep folder (rundir.RunDir.claim): the variants' recipes, the plan, the Slurm array."""
    for variant in plan.variants:
        if variant.id in texts:
            atomic_write_text(folder / variant.recipe, texts[variant.id])
    atomic_write_json(folder / PLAN_FILE, plan.to_json())
    atomic_write_text(folder / SLURM_FILE, slurm_script(folder, plan))


def read_plan(folder: Path) -> Plan:
    path = folder / PLAN_FILE
    if not path.is_file():
        raise UserError(f"{folder}: no {PLAN_FILE}; make one with `edge-pipeline sweep RECIPE --grid ... --plan {folder}`")
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise UserError(f"{path}: not a sweep plan of this version (format {PLAN_FORMAT}); plan the sweep again")
    try:
        variants = [Variant(**v) for v in data["variants"]]
        plan = Plan(data["name"], data["source"], data["axes"], data["zip"], data["devices"], data["constraints"],
                    data["store"], variants)
        Constraints.model_validate(plan.constraints)
    except (KeyError, TypeError, ValidationError) as exc:
        raise UserError(f"{path}: damaged sweep plan ({type(exc).__name__}: {exc}); plan the sweep again") from None
    for variant in plan.variants:  # names and paths from the file stay inside the sweep folder
        if not re.fullmatch(r"v\d{1,4}", variant.id):
            raise UserError(f"{path}: variant id {variant.id!r} is not one sweep makes (v0, v1, ...); plan the sweep again")
        for rel in (variant.recipe, variant.run_dir):
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise UserError(f"{path}: variant {variant.id}: path {rel!r} leaves the sweep folder; plan the sweep again")
    return plan


def store_path(folder: Path, plan: Plan) -> Path:
    store = Path(plan.store)
    return store if store.is_absolute() else folder / store


def slurm_script(folder: Path, plan: Plan) -> str:
    """A Slurm job array running every valid variant; each task runs one variant into its run folder."""
    valid = [v for v in plan.variants if v.status == PLANNED]
    ids = " ".join(v.id for v in valid)
    home = folder.resolve()
    store = store_path(home, plan)
    return f"""#!/usr/bin/env bash
# The variants of sweep {plan.name!r} as a Slurm job array: one task per variant.
#   sbatch {SLURM_FILE}                          (this folder and the store on a file system every node shares)
#   edge-pipeline sweep --collect {shlex.quote(str(home))}   (when every task has ended: table, Pareto fronts, best.yaml)
# Stages the variants share are computed once: the store is locked per stage key.
#SBATCH --job-name=edge-sweep-{plan.name}
#SBATCH --array=0-{len(valid) - 1}
#SBATCH --cpus-per-task=2
#SBATCH --chdir={home}
#SBATCH --output={home}/{LOGS_DIR}/task-%a.log
set -euo pipefail
cd {shlex.quote(str(home))}
ids=({ids})
id="${{ids[$SLURM_ARRAY_TASK_ID]}}"
exec edge-pipeline run "{VARIANTS_DIR}/$id.yaml" --out "{RUNS_DIR}/$id" --store {shlex.quote(str(store))}
"""
