"""Gather a sweep's finished run folders into `sweep.json`, the fronts, the best variant per device
and `best.yaml` (see DESIGN.md, "Sweep contract").

Each variant contributes, per device, the file its profile stage chose to ship there (the fastest
precision that passes the gates and fits the device; see report/shipping.py), with that file's test
accuracy, size and measured latency and memory. `stage_runs` counts the stages the variants
computed and the ones they reused (from their own folder or the shared store): the saving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_json, atomic_write_text
from ..errors import UserError
from ..report.records import TORCH, model_facts, profile_records
from ..report.shipping import recommendations_of
from ..report.sweep_report import settings_text
from ..rundir import RunDir
from ..yamlio import load_located
from .pareto import Limits, Point, best, front
from .plan import INVALID, Plan

SWEEP_FILE = "sweep.json"
BEST_FILE = "best.yaml"
BEST_HEADER = "# Best variant on"
DONE, FAILED, NOT_RUN = "done", "failed", "not run"


def collect(folder: Path, plan: Plan, outcomes: dict[str, Any] | None = None) -> dict[str, Any]:
    """sweep.json's content; `outcomes` (id -> execute.Outcome) when this process ran the variants."""
    variants = [_variant_row(folder, plan, v, (outcomes or {}).get(v.id)) for v in plan.variants]
    devices = _devices(plan, variants)
    limits = Limits.of(plan.constraints)
    pareto, pareto_size, chosen, reasons = {}, {}, {}, {}
    for device in devices:
        points = [_point(row, device) for row in variants]
        pareto[device] = front(points, "median_ms")
        pareto_size[device] = front(points, "size_bytes")
        chosen[device], reasons[device] = best(points, device, limits)
    computed = sum(v["stage_runs"]["computed"] for v in variants)
    cached = sum(v["stage_runs"]["cached"] for v in variants)
    return {
        "name": plan.name, "recipe": plan.source, "axes": plan.axes, "zip": plan.zip, "constraints": plan.constraints,
        "devices": devices, "variants": variants, "pareto": pareto, "pareto_size": pareto_size,
        "best": chosen, "best_reason": reasons, "stage_runs": {"computed": computed, "cached": cached},
    }


def _devices(plan: Plan, variants: list[dict[str, Any]]) -> list[str]:
    found = dict.fromkeys(plan.devices or [])
    for row in variants:
        found.update(dict.fromkeys(row["profiles"]))
    return list(found)


def _point(row: dict[str, Any], device: str) -> Point:
    p = row["profiles"].get(device) or {}
    return Point(row["id"], p.get("accuracy"), p.get("median_ms"), p.get("size_bytes"),
                 ok=row["status"] == DONE and p.get("file") is not None)


def _variant_row(folder: Path, plan: Plan, variant, outcome) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": variant.id, "set": variant.settings, "recipe": variant.recipe, "run_dir": variant.run_dir,
        "status": NOT_RUN, "error": variant.error, "seconds": getattr(outcome, "seconds", None),
        "accuracy": None, "size_bytes": None, "macs": None, "params": None, "profiles": {},
        "stage_runs": {"computed": 0, "cached": 0},
    }
    if variant.status == INVALID:
        return {**row, "status": INVALID}
    if outcome is not None and outcome.code != 0:
        row.update(status=FAILED, error=outcome.error)
    run = RunDir(folder / variant.run_dir)
    if not run.metrics_path.is_file():
        return row
    try:
        metrics = run.read_metrics()
        _fill_from_run(row, run, metrics)
    except UserError as exc:  # a damaged run folder is that variant's failure, not the sweep's
        row.update(status=FAILED, error=str(exc).splitlines()[0])
    return row


def _fill_from_run(row: dict[str, Any], run: RunDir, metrics: dict[str, Any]) -> None:
    stages = run.read_manifest().get("stages", [])
    row["stage_runs"] = {"computed": sum(1 for s in stages if s.get("status") == "done"),
                         "cached": sum(1 for s in stages if s.get("status") == "cached")}
    torch_models = [r for r in model_facts(metrics) if r.runtime == TORCH]
    if torch_models:
        row["macs"], row["params"] = torch_models[-1].macs, torch_models[-1].params
    records = [r for r in profile_records(run, metrics) if not r.baseline]
    for rec in recommendations_of(metrics):
        device, ship = rec["device"], rec.get("ship")
        measured = next((r for r in records if r.device == device and (r.path == ship or r.file == Path(str(ship)).name)), None)
        entry: dict[str, Any] = {"file": None, "precision": rec.get("precision"), "reason": rec.get("reason")}
        if ship and measured is not None:
            entry.update(file=f"{row['run_dir']}/{ship}", accuracy=measured.accuracy, size_bytes=measured.size_bytes,
                         median_ms=measured.median_ms, p90_ms=measured.p90_ms, peak_mb=measured.peak_mb,
                         valid=measured.valid, emulated=measured.emulated)
        row["profiles"][device] = entry
    finished = len(stages) == len(metrics.get("stages", [])) and row["status"] != FAILED
    expected = _recipe_stage_count(run)
    if finished and (expected is None or len(stages) == expected):
        row["status"] = DONE
    elif row["status"] != FAILED:
        row.update(status=FAILED, error=row["error"] or "the run did not finish (rerun the sweep to resume it)")
    first: dict[str, Any] = next(iter(row["profiles"].values()), {})
    row["accuracy"], row["size_bytes"] = first.get("accuracy"), first.get("size_bytes")


def _recipe_stage_count(run: RunDir) -> int | None:
    text = run.read_resolved_recipe()
    if text is None:
        return None
    stages = load_located(text, str(run.resolved_recipe_path)).data.get("stages")
    return len(stages) if isinstance(stages, list) else None


def write_best(folder: Path, plan: Plan, sweep: dict[str, Any]) -> list[Path]:
    """best.yaml (for the budget's device, else the first device) and best-<device>.yaml for every
    device: the winner's complete recipe with the reason it won as a comment."""
    written = []
    devices = sweep["devices"]
    primary = plan.constraints.get("device") or (devices[0] if devices else None)
    by_id = {v.id: v for v in plan.variants}
    for device in devices:
        names = [f"best-{device}.yaml", *([BEST_FILE] if device == primary else [])]
        winner = sweep["best"].get(device)
        if winner is None:  # an earlier collect's winner no longer holds: its file must not outlive it
            _remove_ours(folder, names)
            continue
        text = (folder / by_id[winner].recipe).read_text(encoding="utf-8")
        header = f"{BEST_HEADER} {device} of sweep {plan.name!r}: {winner} ({settings_text(by_id[winner].settings)})\n" \
                 f"# Why: {sweep['best_reason'][device]}\n"
        for name in names:
            atomic_write_text(folder / name, header + text)
            written.append(folder / name)
    return written


def _remove_ours(folder: Path, names: list[str]) -> None:
    """Delete best files a previous collect wrote (recognised by their first line), nothing else."""
    for name in names:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            with open(path, encoding="utf-8", errors="replace") as fh:
                ours = fh.readline().startswith(BEST_HEADER)
            if ours:
                path.unlink()


def write_sweep_json(folder: Path, sweep: dict[str, Any]) -> Path:
    atomic_write_json(folder / SWEEP_FILE, sweep)
    return folder / SWEEP_FILE
