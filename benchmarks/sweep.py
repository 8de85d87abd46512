#!/usr/bin/env python
"""What sharing stages saves in a sweep, measured in one run, as JSON.

Runs a sweep cold (fresh folder and store), then reruns it (everything cached), and compares the
sweep's wall time with the sum of the same variants run separately. "Separately" is each variant's
own wall time in the sweep plus the compute time of every stage it copied from the store instead
of computing (stage.json keeps the seconds it took when it was computed): what that variant would
have cost alone. `--check-separately K` also runs K variants alone, cold, in fresh folders, and
prints measured against that estimate.

Prints the table per device (accuracy, size, MACs, latency of the file each variant ships there),
the fronts and the best variant per device with its reason.

Usage: python benchmarks/sweep.py [--sweep recipes/sweeps/quickstart.yaml] [--jobs N] [--check-separately K]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge_pipeline.rundir import STAGE_RECORD

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edge_pipeline.cli", *args], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def reused_compute_seconds(run_dir: Path) -> float:
    """Compute seconds of the stages this run copied from the store (their records keep them)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    total = 0.0
    for stage in manifest["stages"]:
        if stage.get("source") == "store":
            record = json.loads((run_dir / stage["dir"] / STAGE_RECORD).read_text())
            total += float(record.get("seconds") or 0.0)
    return total


def summary(sweep: dict) -> dict:
    table = {}
    for device in sweep["devices"]:
        table[device] = {v["id"]: {"set": v["set"], "status": v["status"],
                                   **{k: v["profiles"].get(device, {}).get(k) for k in
                                      ("precision", "accuracy", "size_bytes", "median_ms", "peak_mb", "valid")},
                                   "macs": v["macs"]} for v in sweep["variants"]}
    return {"table": table, "pareto_latency": sweep["pareto"], "pareto_size": sweep["pareto_size"],
            "best": sweep["best"], "best_reason": sweep["best_reason"], "stage_runs": sweep["stage_runs"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default=str(REPO / "recipes" / "sweeps" / "quickstart.yaml"))
    parser.add_argument("--jobs", type=int, default=1,
                        help="variants at once (default 1: with more, a variant's wall time includes waiting for a "
                             "shared stage another job computes, and the 'separately' estimate counts that stage twice)")
    parser.add_argument("--out", help="sweep folder (default: a fresh temp folder, so the first run is cold)")
    parser.add_argument("--check-separately", type=int, default=0, metavar="K",
                        help="also run the first K variants alone, cold, to check the estimate")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-sweep-"))
    out = Path(args.out) if args.out else tmp / "sweep"
    jobs = ["--jobs", str(args.jobs)]
    try:
        cold = run_cli("sweep", args.sweep, "--out", str(out), *jobs)
        sweep = json.loads((out / "sweep.json").read_text())
        print(json.dumps({"cold_sweep_seconds": round(cold, 1)}), flush=True)
        done = [v for v in sweep["variants"] if v["status"] == "done"]
        # Before the rerun: it rewrites the manifests (every stage then cached from its own folder).
        separately = {v["id"]: round(v["seconds"] + reused_compute_seconds(out / v["run_dir"]), 1) for v in done}
        warm = run_cli("sweep", args.sweep, "--out", str(out), *jobs)
        rerun = json.loads((out / "sweep.json").read_text())["stage_runs"]
        result = {
            "sweep": args.sweep, "variants": len(sweep["variants"]), "done": len(done),
            "wall_seconds": {"sweep_cold": round(cold, 1), "sweep_rerun_all_cached": round(warm, 1),
                             "variants_separately_estimated": round(sum(separately.values()), 1)},
            "saving_ratio_separately_over_sweep": round(sum(separately.values()) / cold, 2),
            "rerun_stage_runs": rerun,
            **summary(sweep),
        }
        checks = {}
        for variant in done[: args.check_separately]:
            alone = run_cli("run", str(out / variant["recipe"]), "--out", str(tmp / f"alone-{variant['id']}"))
            checks[variant["id"]] = {"measured_alone": round(alone, 1), "estimated": separately[variant["id"]]}
        if checks:
            result["separately_checked"] = checks
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
