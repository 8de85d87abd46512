"""The runner: contract files, caching, partial reruns, corruption, resume after a kill, --force."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_pipeline.cli import main
from edge_pipeline.errors import UserError
from edge_pipeline.pipeline import Pipeline
from edge_pipeline.recipe import load_recipe
from edge_pipeline.rundir import RunDir

from .conftest import REPO, TINY_HEAD, write


def run(recipe: Path, out: Path, *extra: str) -> dict[str, str]:
    assert main(["run", str(recipe), "--out", str(out), *extra]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    return {s["name"]: s["status"] for s in metrics["stages"]}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """One real run of the tiny recipe, shared: each test gets a copy of its run folder."""
    from .conftest import TINY_TORCH_STAGES

    root = tmp_path_factory.mktemp("base")
    recipe = write(root / "tiny.yaml", TINY_HEAD + TINY_TORCH_STAGES)
    statuses = run(recipe, root / "run")
    return recipe, root / "run", statuses


@pytest.fixture
def first_run(base_run, tmp_path):
    recipe, out, statuses = base_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    return recipe, copy, statuses


def test_first_run_writes_the_contract_files(first_run):
    _, out, statuses = first_run
    assert statuses == {"train": "done", "restructure": "done", "prune": "done", "finetune": "done"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"] == "tiny" and metrics["version"] == "0.1.0"
    for entry in metrics["stages"]:
        assert set(entry) == {"name", "type", "status", "seconds", "model"}
        assert set(entry["model"]) == {"params", "macs", "size_bytes", "accuracy"}
        assert 0 <= entry["model"]["accuracy"] <= 1
    models = {e["name"]: e["model"] for e in metrics["stages"]}
    assert models["restructure"]["macs"] < models["train"]["macs"]
    assert models["prune"]["params"] < models["restructure"]["params"]
    assert models["finetune"]["accuracy"] > 0.5  # distillation recovers a model made random by restructure/prune
    for name in ("01-train", "02-restructure", "03-prune", "04-finetune"):
        assert {"model.safetensors", "structure.json", "stage.json", "details.json"} <= {p.name for p in (out / name).iterdir()}
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["dir"] for s in manifest["stages"]] == ["01-train", "02-restructure", "03-prune", "04-finetune"]
    assert all(len(s["key"]) == 64 and s["outputs"] for s in manifest["stages"])
    assert manifest["stages"][1]["inputs"]["key"] == manifest["stages"][0]["key"]
    assert (out / "recipe.resolved.yaml").is_file() and (out / "report.md").is_file() and (out / "report.html").is_file()
    assert set(manifest["versions"]) >= {"edge-pipeline", "torch", "tensorflow", "onnx2tf"}


def test_rerun_unchanged_reuses_every_stage(first_run):
    recipe, out, _ = first_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}
    assert set(run(recipe, out).values()) == {"cached"}
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}


def test_changing_prune_ratio_reruns_prune_and_after_only(first_run):
    recipe, out, _ = first_run
    statuses = run(recipe, out, "--set", "stages.prune.ratio=0.25")
    assert statuses == {"train": "cached", "restructure": "cached", "prune": "done", "finetune": "done"}


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_artifact_is_recomputed_not_used(first_run, damage):
    recipe, out, _ = first_run
    weights = out / "03-prune" / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        weights.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        weights.unlink()
    statuses = run(recipe, out)
    assert statuses["train"] == statuses["restructure"] == "cached"
    assert statuses["prune"] == "done"
    assert weights.read_bytes() == data  # deterministic recompute gives the same bytes


def test_force_reruns_the_stage_and_identical_output_keeps_the_rest_cached(first_run):
    recipe, out, _ = first_run
    statuses = run(recipe, out, "--force", "restructure")
    assert statuses == {"train": "cached", "restructure": "done", "prune": "cached", "finetune": "cached"}


def test_force_unknown_stage_is_bad_input(tiny_recipe, tmp_path):
    with pytest.raises(UserError, match="--force nope: no such stage"):
        Pipeline(load_recipe(tiny_recipe), tmp_path, ["nope"])


def test_a_second_run_on_the_same_folder_is_refused(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    RunDir(out).claim()  # a folder of ours that another run holds
    with open(out / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="another edge-pipeline run"):
            Pipeline(load_recipe(tiny_recipe), out).run()


def test_removed_stages_leave_no_stale_folders(first_run, tmp_path):
    recipe, out, _ = first_run
    shorter = write(tmp_path / "short.yaml", recipe.read_text().split("  - prune:")[0])
    assert run(shorter, out) == {"train": "cached", "restructure": "cached"}
    assert not (out / "03-prune").exists() and not (out / "04-finetune").exists()


def test_run_killed_mid_stage_resumes(tmp_path):
    """SIGKILL during finetune: the next run reuses train/restructure/prune and redoes finetune."""
    recipe = write(tmp_path / "long.yaml", TINY_HEAD + """\
stages:
  - train: {epochs: 1}
  - restructure: {depthwise_separable: {min_channels: 8}}
  - prune: {ratio: 0.5}
  - finetune: {epochs: 5, distill: {teacher: train}}
""")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_pipeline.cli", "run", str(recipe), "--out", str(out)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "04-finetune" in line and "running" in line:
            break
    time.sleep(0.5)  # well inside the first of 5 epochs
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / ".04-finetune.tmp").exists() and not (out / "04-finetune").exists()
    statuses = run(recipe, out)
    assert statuses == {"train": "cached", "restructure": "cached", "prune": "cached", "finetune": "done"}
    assert not (out / ".04-finetune.tmp").exists()


def test_editing_a_device_file_reruns_what_depends_on_it(tmp_path):
    """Profiles are measured under a device's settings and the export's runtime check uses its
    runtime: both are part of the cache keys, so an edited device file is not served stale results."""
    from .conftest import FAST_DEVICE

    device = write(tmp_path / "dev.yaml", FAST_DEVICE)
    recipe = write(tmp_path / "r.yaml", TINY_HEAD + f"stages:\n  - train: {{epochs: 1}}\n  - quantize: {{}}\n"
                   f"  - export: {{}}\n  - profile: {{devices: ['{device}']}}\n")

    def keys() -> dict[str, str]:
        pipeline = Pipeline(load_recipe(recipe), tmp_path / "run")
        return {s.name: pipeline.stage_key(s, {"root": "same upstream"}) for s in pipeline.recipe.stages}

    before = keys()
    assert keys() == before  # deterministic
    device.write_text(device.read_text().replace("threads: 1", "threads: 2"))
    threads = keys()
    assert threads["profile"] != before["profile"]
    assert {k: v for k, v in threads.items() if k != "profile"} == {k: v for k, v in before.items() if k != "profile"}
    device.write_text(device.read_text().replace("runtime: {name: ai-edge-litert}", "runtime: {name: tflite-runtime, version: '2.14'}"))
    runtime = keys()
    assert runtime["export"] != threads["export"] and runtime["profile"] != threads["profile"]
    assert runtime["train"] == before["train"] and runtime["quantize"] == before["quantize"]
