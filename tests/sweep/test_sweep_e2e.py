"""A real sweep (2x2 on 16 px digits, tiny epochs, a short-budget host device): shared stages run once,
the table, fronts and best.yaml follow from the runs, a failing variant does not stop the others,
plan/collect gives the same result, and best.yaml reproduces the winner."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from edge_pipeline.cli import main
from edge_pipeline.recipe import load_recipe
from edge_pipeline.sweep.pareto import Point, front

from ..conftest import TINY_HEAD, write

STAGES = """\
stages:
  - train: {{epochs: 1, lr: 0.05}}
  - prune: {{method: l1, ratio: 0.5, round_to: 4}}
  - finetune: {{epochs: 1, lr: 0.01}}
  - export: {{format: tflite}}
  - profile: {{devices: ['{device}'], outputs_check: 0, baseline: false}}
"""
GRID = ["--grid", "stages.prune.ratio=[0.3, 0.6]", "--grid", "stages.finetune.epochs=[1, 2]"]
DEVICE = "fast-host"


def sweep_json(folder):
    return json.loads((folder / "sweep.json").read_text())


def manifest(run):
    return json.loads((run / "manifest.json").read_text())["stages"]


def model_figures(run):
    """What a run's stages produced, timing aside: per stage, the model's and every file's facts."""
    out = []
    for stage in json.loads((run / "metrics.json").read_text())["stages"]:
        out.append((stage["name"], stage.get("model"), [(a["precision"], a["size_bytes"], a.get("accuracy"))
                                                       for a in stage.get("artifacts", [])]))
    return out


@pytest.fixture(scope="module")
def swept(tmp_path_factory, fast_device):
    root = tmp_path_factory.mktemp("sweep")
    recipe = write(root / "tiny.yaml", TINY_HEAD + STAGES.format(device=fast_device))
    out = root / "out"
    assert main(["sweep", str(recipe), *GRID, "--jobs", "2", "--out", str(out)]) == 0
    return root, recipe, out


@pytest.mark.e2e
@pytest.mark.slow
def test_shared_stages_run_once_and_every_variant_is_measured(swept):
    _, _, out = swept
    sweep = sweep_json(out)
    assert [v["status"] for v in sweep["variants"]] == ["done"] * 4
    # train is shared by all four, prune by the pairs with one ratio: 1 + 2 computed, 3 + 2 reused.
    trains = [s for v in sweep["variants"] for s in manifest(out / v["run_dir"]) if s["name"] == "train"]
    assert sorted(s["status"] for s in trains) == ["cached", "cached", "cached", "done"]
    assert {s["key"] for s in trains} == {trains[0]["key"]}
    assert all(s.get("source") == "store" for s in trains if s["status"] == "cached")
    prunes = [s for v in sweep["variants"] for s in manifest(out / v["run_dir"]) if s["name"] == "prune"]
    assert sorted(s["status"] for s in prunes) == ["cached", "cached", "done", "done"]
    assert sweep["stage_runs"] == {"computed": 4 * 5 - 5, "cached": 5}
    for v in sweep["variants"]:
        entry = v["profiles"][DEVICE]
        assert entry["file"].startswith(v["run_dir"] + "/") and (out / entry["file"]).is_file()
        assert entry["median_ms"] > 0 and 0 < entry["accuracy"] <= 1 and entry["size_bytes"] > 0
        assert v["macs"] > 0
    # Fewer channels, fewer MACs: the sweep's numbers come from the right runs.
    macs = {v["set"]["stages.prune.ratio"]: v["macs"] for v in sweep["variants"]}
    assert macs[0.6] < macs[0.3]


@pytest.mark.e2e
@pytest.mark.slow
def test_fronts_best_and_reports_follow_from_the_table(swept):
    _, _, out = swept
    sweep = sweep_json(out)
    points = [Point(v["id"], v["profiles"][DEVICE]["accuracy"], v["profiles"][DEVICE]["median_ms"],
                    v["profiles"][DEVICE]["size_bytes"]) for v in sweep["variants"]]
    assert sweep["pareto"][DEVICE] == front(points, "median_ms")
    assert sweep["pareto_size"][DEVICE] == front(points, "size_bytes")
    winner = sweep["best"][DEVICE]
    assert max(p.accuracy for p in points) == next(p.accuracy for p in points if p.variant == winner)
    assert sweep["best_reason"][DEVICE].startswith(f"{winner} on {DEVICE}: the most accurate of 4 variants")
    best = (out / "best.yaml").read_text()
    assert best.startswith(f"# Best variant on {DEVICE}") and (out / f"best-{DEVICE}.yaml").read_text() == best
    assert load_recipe(out / "best.yaml").name == f"tiny-{winner}"
    assert (out / "plots" / f"pareto_{DEVICE}.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert "Pareto fronts" in html and f"pareto_{DEVICE}.png" in html and winner in html
    assert "| v0" in (out / "sweep.md").read_text()


@pytest.mark.e2e
@pytest.mark.slow
def test_rerun_is_all_cached(swept, capsys):
    root, recipe, out = swept
    before = sweep_json(out)
    assert main(["sweep", str(recipe), *GRID, "--out", str(out)]) == 0
    after = sweep_json(out)
    assert after["stage_runs"] == {"computed": 0, "cached": 20}
    assert [v["profiles"] for v in after["variants"]] == [v["profiles"] for v in before["variants"]]


@pytest.mark.e2e
@pytest.mark.slow
def test_failed_variant_is_reported_and_the_others_finish(swept, tmp_path):
    root, recipe, out = swept
    folder = tmp_path / "failing"
    code = main(["sweep", str(recipe), "--zip", "--grid", "model.weights=[null, /nonexistent/w.safetensors]",
                 "--grid", "stages.prune.ratio=[0.3, 0.6]", "--store", str(out / "store"), "--out", str(folder)])
    assert code == 0
    good, bad = sweep_json(folder)["variants"]
    assert good["status"] == "done" and good["stage_runs"]["computed"] == 0  # all from the shared store
    assert bad["status"] == "failed" and "exit 2" in bad["error"] and "nonexistent" in bad["error"]
    assert "failed" in (folder / "sweep.md").read_text()


@pytest.mark.e2e
@pytest.mark.slow
def test_plan_then_collect_gives_the_same_table(swept, tmp_path):
    root, recipe, out = swept
    folder = tmp_path / "planned"
    assert main(["sweep", str(recipe), *GRID, "--plan", str(folder), "--store", str(out / "store")]) == 0
    plan = json.loads((folder / "plan.json").read_text())
    assert not (folder / "sweep.json").exists() and "#SBATCH --array=0-3" in (folder / "slurm-array.sh").read_text()
    for variant in plan["variants"]:  # what each task of a cluster's job array runs
        assert main(["run", str(folder / variant["recipe"]), "--out", str(folder / variant["run_dir"]),
                     "--store", str(out / "store")]) == 0
    assert main(["sweep", "--collect", str(folder)]) == 0
    ours, theirs = sweep_json(folder), sweep_json(out)
    assert [v["profiles"] for v in ours["variants"]] == [v["profiles"] for v in theirs["variants"]]
    assert ours["best"] == theirs["best"] and ours["pareto"] == theirs["pareto"]


@pytest.mark.e2e
@pytest.mark.slow
def test_best_yaml_reproduces_the_winner(swept, tmp_path):
    _, _, out = swept
    sweep = sweep_json(out)
    winner = next(v for v in sweep["variants"] if v["id"] == sweep["best"][DEVICE])
    assert main(["validate", str(out / "best.yaml")]) == 0
    again = tmp_path / "again"
    # A fresh run, no store, one thread per process as the sweep's two jobs had: the same numbers.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "edge_pipeline.cli", "run", str(out / "best.yaml"), "--out", str(again)],
                   env=env, check=True, capture_output=True)
    assert model_figures(again) == model_figures(out / winner["run_dir"])
    assert yaml.safe_load((out / "best.yaml").read_text())["stages"][1]["prune"]["ratio"] == winner["set"]["stages.prune.ratio"]
