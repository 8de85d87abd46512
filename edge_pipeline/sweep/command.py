"""`edge-pipeline sweep`: plan, run and collect (or only plan, or only collect)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from ..errors import UserError
from ..report.sweep_report import print_sweep, write_sweep_report
from ..rundir import RunDir
from ..stagestore import StageStore
from .collect import DONE, collect, write_best, write_sweep_json
from .execute import run_variants
from .grid import Axis, make_axis, parse_axis
from .plan import STORE_DIR, Constraints, SweepFile, is_sweep_file, make_plan, read_plan, read_sweep_file, store_path, write_plan

SWEEPS_DIR = "sweeps"


def sweep_command(args: argparse.Namespace) -> int:
    if args.collect:
        folder = Path(args.collect)
        if args.source or args.grid:
            raise UserError("sweep --collect DIR: takes no recipe or --grid (the plan in DIR has them)")
        plan = read_plan(folder)  # first: a missing or foreign folder is one line, and gets no lock file
        with RunDir(folder).lock():
            return _collect_and_report(folder, plan, None)
    if not args.source:
        raise UserError("sweep: give a recipe (or a sweep file), e.g. edge-pipeline sweep recipe.yaml --grid stages.prune.ratio=[0.3,0.5]")
    source = Path(args.source)
    if not source.is_file():
        raise UserError(f"{source}: file not found; pass a recipe or a sweep file (.yaml)")
    spec, recipe_path = (read_sweep_file(source) if is_sweep_file(source) else (None, source))
    axes = _axes(spec, args.grid)
    devices = _devices(args.devices) or (spec.devices if spec else None)
    constraints = _constraints(spec, args)
    jobs = args.jobs if args.jobs is not None else (spec.jobs if spec else 1)
    if not 1 <= jobs <= 64:
        raise UserError(f"--jobs {jobs}: must be 1..64 (variants run at once on this machine)")
    zipped = args.zip or bool(spec and spec.zip)
    plan, texts = make_plan(recipe_path, axes, zipped, devices, constraints, str(Path(args.store).resolve()) if args.store else STORE_DIR)
    folder = Path(args.plan or args.out or Path(SWEEPS_DIR) / plan.name)
    RunDir(folder).claim()
    with RunDir(folder).lock():  # one sweep per folder at a time
        write_plan(folder, plan, texts)
        planned = sum(1 for v in plan.variants if v.id in texts)
        if args.plan:
            print(f"planned {planned} variants in {folder} ({len(plan.variants) - planned} invalid): "
                  f"run each with `edge-pipeline run {folder}/variants/<id>.yaml --out {folder}/runs/<id> --store STORE`, "
                  f"or `sbatch {folder}/slurm-array.sh`; then `edge-pipeline sweep --collect {folder}`")
            return 0
        StageStore(store_path(folder, plan)).claim()  # a foreign --store fails here, once, not in every variant
        print(f"sweep {plan.name}: {planned} variants, {jobs} at a time -> {folder}")
        outcomes = run_variants(folder, plan, jobs)
        return _collect_and_report(folder, plan, outcomes)


def _collect_and_report(folder: Path, plan, outcomes) -> int:
    sweep = collect(folder, plan, outcomes)
    write_sweep_json(folder, sweep)
    best_files = write_best(folder, plan, sweep)
    written = write_sweep_report(folder, sweep)
    print_sweep(sweep)
    done = sum(1 for v in sweep["variants"] if v["status"] == DONE)
    runs = sweep["stage_runs"]
    print(f"{done} of {len(sweep['variants'])} variants done; stages computed {runs['computed']}, reused {runs['cached']}")
    print(f"sweep folder: {folder}  (sweep.json, {written['markdown'].name}, {written['html'].name}, plots/"
          + (f", {', '.join(p.name for p in best_files)}" if best_files else "") + ")")
    return 0 if done else 1


def _axes(spec: SweepFile | None, grid_args: list[str]) -> list[Axis]:
    axes = [make_axis(path, values, f"sweep file: grid.{path}") for path, values in (spec.grid.items() if spec else [])]
    axes += [parse_axis(text) for text in grid_args]
    return axes


def _devices(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"--devices {text!r}: give device names separated by commas, e.g. --devices host,qemu-aarch64")
    return names


def _constraints(spec: SweepFile | None, args: argparse.Namespace) -> Constraints:
    base = spec.constraints.model_dump() if spec else {}
    given = {"max_latency_ms": args.max_latency_ms, "device": args.device, "min_accuracy": args.min_accuracy,
             "max_size_kb": args.max_size_kb}
    merged = {**base, **{k: v for k, v in given.items() if v is not None}}
    try:
        return Constraints.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]).replace("_", "-")
        raise UserError(f"--{field}: {err['msg']}, got {err.get('input')!r}") from None
