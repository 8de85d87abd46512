"""Where the export stage's time goes, and before/after ratios against another commit (issue 13).

For each torchvision model (random init, BatchNorm statistics estimated on random inputs so int8
calibration sees realistic ranges) at `--size` px on 3-channel digits, a real recipe runs
`train: {epochs: 0}` (loads the weights), `quantize: {}` (defaults: int8, 256 calibration samples)
and `export: {target_devices: [host]}` (the runtime check a `profile: {devices: [host]}` stage
asks for) through the CLI, exactly as a user's run would. Only the export stage is timed:
its total from the manifest, and each step by wrapping the functions the export runner calls
(ONNX export + simplification, the onnxruntime check, the conversion worker with onnx2tf and each
precision inside it, the torch reference, inspection, load checks, evaluation, diagnosis,
compatibility, the bundle).

`--compare-to REF` extracts REF with `git archive` (no worktree, no index change) and runs the same
measurements with that tree's `edge_pipeline` on PYTHONPATH, interleaved with this tree's (A, B, A,
B, ...: both see the same machine load), then prints medians, per-step ratios (before / after) and
whether every .tflite file is byte-identical between the two trees.

    .venv/bin/python benchmarks/export_time.py [--models resnet18,mobilenet_v2] [--size 128]
        [--repeats 2] [--compare-to HEAD]
Prints progress on stderr and one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODELS = ["resnet18", "mobilenet_v2"]

# Functions the export runner calls, by the name it imports them under -> the step they belong to.
# A name a tree does not have is skipped, so the same table times the old and the new runner.
TIMED = {
    "export_onnx": "onnx_export+simplify",
    "compare_onnx_to_torch": "onnxruntime_check",
    "run_conversion": "conversion_worker",
    "predict": "torch_reference",
    "inspect_tflite": "inspect",
    "ensure_loadable": "load_checks",
    "ensure_all_loadable": "load_checks",
    "tflite_logits": "evaluate",
    "evaluate_files": "evaluate",
    "_diagnose": "diagnose",
    "_compatibility": "device_compatibility",
    "_bundle": "bundle",
    "export_chain": "early_exit_chain",
}


def recipe_text(model: str, size: int, weights: Path) -> str:
    return f"""\
name: export-time-{model.replace('_', '-')}
seed: 0
data: {{dataset: digits, image_size: {size}, channels: 3, batch_size: 64}}
model: {{arch: "torchvision:{model}", weights: "{weights}"}}
stages:
  - train: {{epochs: 0}}
  - quantize: {{}}
  - export: {{target_devices: [host]}}
"""


def make_weights(model: str, size: int, path: Path) -> None:
    """Random init with BatchNorm statistics averaged over random inputs (not a momentum of the init)."""
    import torch
    from safetensors.torch import save_file

    from edge_pipeline.models.tv import build_torchvision

    torch.manual_seed(0)
    net = build_torchvision(model, num_classes=10, in_channels=3, image_size=size)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.randn(8, 3, size, size))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))


# -- child: one run of the recipe with the export runner's functions timed -------------------------------


def child(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    import edge_pipeline.stages.runners.export as runner
    from edge_pipeline.cli import main

    steps: dict[str, float] = {}
    worker: dict[str, float] = {}
    nested: list[float] = []  # per open timed call: seconds spent in timed calls inside it

    def timed(step: str, fn):
        """Exclusive time: a timed call inside another (a file evaluated while the conversion is
        awaited) counts for its own step only, so the steps add up to the stage's wall time."""
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            nested.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                inner = nested.pop()
                steps[step] = steps.get(step, 0.0) + elapsed - inner
                if nested:
                    nested[-1] += elapsed

        return wrapper

    for name, step in TIMED.items():
        if hasattr(runner, name):
            original = getattr(runner, name)
            if name == "run_conversion":
                original = _recording_worker_seconds(original, worker)
            setattr(runner, name, timed(step, original))
    pending = getattr(importlib.import_module("edge_pipeline.convert.tflite_convert"), "PendingConversion", None)
    if pending is not None:  # the conversion runs while the runner does other work: time the wait for it
        pending.result = timed("conversion_worker", _recording_worker_seconds(pending.result, worker))
    argv = ["run", spec["recipe"], "--out", spec["out"], "--force", "export"]
    code = main(argv)
    out = Path(spec["out"])
    metrics = json.loads((out / "metrics.json").read_text())
    export = next(s for s in metrics["stages"] if s["type"] == "export")
    folder = next(p for p in out.iterdir() if p.is_dir() and p.name.endswith("-export"))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tflite"))}
    details = json.loads((folder / "details.json").read_text())
    precisions = {p: {k: v.get(k) for k in ("accuracy", "agreement", "cosine_mean", "max_rel_error")}
                  for p, v in details["precisions"].items()}
    Path(spec["result"]).write_text(json.dumps({
        "code": code, "total": export["seconds"], "steps": steps, "worker": worker, "files": files,
        "fidelity": precisions, "module": runner.__file__}))
    return 0


def _recording_worker_seconds(fn, worker: dict[str, float]):
    """The conversion's own per-step seconds (onnx2tf, each precision) from its result."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        for step, seconds in (getattr(result, "seconds", None) or {}).items():
            worker[step] = worker.get(step, 0.0) + float(seconds)
        return result

    return wrapper


# -- parent: trees, interleaved runs, medians, ratios -----------------------------------------------------


def extract_tree(ref: str, into: Path) -> Path:
    """REF's files (git archive: the repository, its index and worktree list stay untouched)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref],
                             check=True, capture_output=True).stdout
    tree = into / f"tree-{ref.replace('/', '_')}"
    tree.mkdir(parents=True)
    tar_path = into / "tree.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(tree, filter="data")
    tar_path.unlink()
    return tree


def run_child(tree: Path, recipe: Path, out: Path, work: Path) -> dict[str, Any]:
    spec_path = work / f"spec-{os.getpid()}-{time.monotonic_ns()}.json"
    result_path = spec_path.with_suffix(".result.json")
    spec_path.write_text(json.dumps({"recipe": str(recipe), "out": str(out), "result": str(result_path)}))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    log = out.parent / f"{out.name}.log"
    with open(log, "a") as fh:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                              env=env, cwd=work, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not result_path.is_file():
        raise SystemExit(f"benchmark run failed (exit {proc.returncode}); see {log}")
    result = json.loads(result_path.read_text())
    if result["code"] != 0:
        raise SystemExit(f"the recipe run failed (exit {result['code']}); see {log}")
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    steps = sorted({s for r in runs for s in r["steps"]})
    worker = sorted({s for r in runs for s in r["worker"]})
    summary = {
        "total": round(statistics.median(r["total"] for r in runs), 2),
        "steps": {s: round(statistics.median(r["steps"].get(s, 0.0) for r in runs), 2) for s in steps},
        "worker": {s: round(statistics.median(r["worker"].get(s, 0.0) for r in runs), 2) for s in worker},
        "runs": [r["total"] for r in runs],
    }
    summary["steps"]["other"] = round(summary["total"] - sum(summary["steps"].values()), 2)
    return summary


def ratios(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 2) if b > 0.05 else None

    steps = sorted(set(before["steps"]) | set(after["steps"]))
    return {"total": ratio(before["total"], after["total"]),
            "steps": {s: ratio(before["steps"].get(s, 0.0), after["steps"].get(s, 0.0)) for s in steps}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated torchvision names")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="export runs per model and tree (median reported)")
    parser.add_argument("--compare-to", metavar="GIT_REF", help="also measure this commit's code, interleaved")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (run folders, logs)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    sys.path.insert(0, str(REPO))  # make_weights: this tree's model builder
    work = Path(args.keep or tempfile.mkdtemp(prefix="export-time-"))
    work.mkdir(parents=True, exist_ok=True)
    trees = {"after": REPO}
    if args.compare_to:
        trees = {"before": extract_tree(args.compare_to, work), "after": REPO}
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {m: {t: [] for t in trees} for m in models}
    recipes = {}
    for model in models:
        weights = work / f"{model}-{args.size}.safetensors"
        if not weights.is_file():
            make_weights(model, args.size, weights)
        recipes[model] = work / f"{model}.yaml"
        recipes[model].write_text(recipe_text(model, args.size, weights))
    # Every run forces the export stage. The first run of a model computes train + quantize too (not
    # timed); the other tree starts from a copy of that folder, so it only recomputes them if its cache
    # keys differ. Trees interleaved: A, B, A, B.
    for repeat in range(args.repeats):
        for model in models:
            for name, tree in trees.items():
                out = work / f"run-{model}-{name}"
                first = work / f"run-{model}-{next(iter(trees))}"
                if not out.exists() and first.exists():
                    shutil.copytree(first, out, symlinks=True)
                result = run_child(tree, recipes[model], out, work=work)
                print(f"{model} {name} run {repeat + 1}: export {result['total']:.1f}s "
                      f"{json.dumps({k: round(v, 1) for k, v in result['steps'].items()})}", file=sys.stderr, flush=True)
                results[model][name].append(result)
    report: dict[str, Any] = {"size": args.size, "repeats": args.repeats, "compare_to": args.compare_to, "models": {}}
    for model in models:
        entry: dict[str, Any] = {name: summarize(runs) for name, runs in results[model].items()}
        if "before" in entry:
            entry["ratio_before_over_after"] = ratios(entry["before"], entry["after"])
            before_files = results[model]["before"][0]["files"]
            after_files = results[model]["after"][0]["files"]
            entry["tflite_identical"] = {f: before_files.get(f) == after_files.get(f)
                                         for f in sorted(set(before_files) | set(after_files))}
            entry["fidelity"] = {name: results[model][name][0]["fidelity"] for name in trees}
        # Every repeat of one tree must give the same bytes too (determinism, not just equality once).
        entry["deterministic"] = all(len({json.dumps(r["files"], sort_keys=True) for r in runs}) == 1
                                     for runs in results[model].values())
        report["models"][model] = entry
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
