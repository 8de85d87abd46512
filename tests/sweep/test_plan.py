"""Planning a sweep: variants as complete recipes, invalid ones recorded, the plan file round-trips."""

from __future__ import annotations

import json
import subprocess

import pytest

from edge_pipeline.errors import UserError
from edge_pipeline.recipe import load_recipe, parse_recipe
from edge_pipeline.rundir import RunDir
from edge_pipeline.sweep.grid import make_axis, parse_axis
from edge_pipeline.sweep.plan import (
    INVALID,
    PLAN_FILE,
    PLANNED,
    SLURM_FILE,
    Constraints,
    make_plan,
    read_plan,
    read_sweep_file,
    write_plan,
)

from ..conftest import REPO, TINY_HEAD, write

STAGES = """\
stages:
  - train: {epochs: 1}
  - prune: {method: l1, ratio: 0.5}
  - export: {format: tflite}
"""


@pytest.fixture
def recipe(tmp_path):
    return write(tmp_path / "tiny.yaml", TINY_HEAD + STAGES)


def plan_of(recipe, *grids, devices=None, zipped=False):
    return make_plan(recipe, [parse_axis(g) for g in grids], zipped, devices, Constraints(), "store")


def test_every_valid_variant_is_a_complete_recipe_and_invalid_ones_are_recorded(recipe, tmp_path):
    plan, texts = plan_of(recipe, "stages.prune.ratio=[0.3, 1.5]", "stages.train.epochs=[1, 2]")
    assert [v.id for v in plan.variants] == ["v0", "v1", "v2", "v3"]
    assert [v.status for v in plan.variants] == [PLANNED, PLANNED, INVALID, INVALID]
    assert plan.variants[2].error == "stages[1].prune.ratio: must be < 1, got 1.5"
    assert set(texts) == {"v0", "v1"}
    variant = load_recipe(write(tmp_path / "v1.yaml", texts["v1"]))
    assert variant.name == "tiny-v1"
    assert variant.stage("prune").config.ratio == 0.3 and variant.stage("train").config.epochs == 2


def test_a_sweep_measures_on_devices(recipe):
    _, texts = plan_of(recipe, "stages.prune.ratio=[0.3]")
    assert parse_recipe(texts["v0"], "v0").stage("profile").config.devices == ["host"]  # a profile stage is added
    _, texts = plan_of(recipe, "stages.prune.ratio=[0.3]", devices=["host", "qemu-aarch64"])
    assert parse_recipe(texts["v0"], "v0").stage("profile").config.devices == ["host", "qemu-aarch64"]


def test_unknown_device_makes_every_variant_invalid_which_is_the_users_error(recipe):
    with pytest.raises(UserError, match="no valid variant.*nosuchboard"):
        plan_of(recipe, "stages.prune.ratio=[0.3]", devices=["nosuchboard"])


def test_a_grid_path_that_names_nothing_stops_the_sweep(recipe):
    with pytest.raises(UserError, match="no item 'quantize'"):
        plan_of(recipe, "stages.quantize.mode=[int8]")


def test_relative_data_paths_become_absolute(tmp_path, monkeypatch):
    images = tmp_path / "images"
    for cls in ("a", "b"):
        (images / cls).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    recipe = write(tmp_path / "folder.yaml", TINY_HEAD.replace("dataset: digits", "dataset: imagefolder, path: images") + STAGES)
    _, texts = plan_of(recipe, "stages.prune.ratio=[0.3]")
    assert f"path: {images}" in texts["v0"]


def test_plan_round_trips_and_writes_a_slurm_array(recipe, tmp_path):
    plan, texts = plan_of(recipe, "stages.prune.ratio=[0.3, 0.5, 1.5]")
    folder = tmp_path / "sweep"
    RunDir(folder).claim()
    write_plan(folder, plan, texts)
    again = read_plan(folder)
    assert again == plan
    assert (folder / "variants" / "v0.yaml").is_file() and not (folder / "variants" / "v2.yaml").exists()
    script = (folder / SLURM_FILE).read_text()
    assert "#SBATCH --array=0-1" in script and "ids=(v0 v1)" in script
    assert subprocess.run(["bash", "-n", str(folder / SLURM_FILE)], check=False).returncode == 0


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(format=99), "not a sweep plan of this version"),
    (lambda d: d.pop("variants"), "damaged sweep plan"),
    (lambda d: d["variants"][0].update(run_dir="../../elsewhere"), "leaves the sweep folder"),
    (lambda d: d["variants"][0].update(recipe="/etc/passwd"), "leaves the sweep folder"),
    (lambda d: d["variants"][0].update(id="../../v0"), "is not one sweep makes"),
    (lambda d: d.update(constraints={"min_accuracy": 7}), "damaged sweep plan"),
])
def test_a_damaged_plan_is_refused(recipe, tmp_path, change, message):
    plan, texts = plan_of(recipe, "stages.prune.ratio=[0.3]")
    folder = tmp_path / "sweep"
    RunDir(folder).claim()
    write_plan(folder, plan, texts)
    data = json.loads((folder / PLAN_FILE).read_text())
    change(data)
    (folder / PLAN_FILE).write_text(json.dumps(data))
    with pytest.raises(UserError, match=message):
        read_plan(folder)


def test_sweep_file_names_its_recipe_relative_to_itself(recipe, tmp_path):
    path = write(tmp_path / "sweeps" / "s.yaml", "recipe: ../tiny.yaml\ngrid:\n  stages.prune.ratio: [0.3, 0.5]\njobs: 2\n")
    spec, base = read_sweep_file(path)
    assert base == recipe.resolve() and spec.jobs == 2 and spec.grid == {"stages.prune.ratio": [0.3, 0.5]}
    bad = write(tmp_path / "bad.yaml", "recipe: tiny.yaml\ngrid: {}\njobs: 0\n")
    with pytest.raises(UserError, match="bad.yaml:2: grid"):
        read_sweep_file(bad)


@pytest.mark.parametrize("path", sorted((REPO / "recipes" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_plans_only_valid_variants(path):
    spec, recipe = read_sweep_file(path)
    axes = [make_axis(p, v, p) for p, v in spec.grid.items()]
    plan, texts = make_plan(recipe, axes, spec.zip, spec.devices, spec.constraints, "store")
    assert len(texts) == len(plan.variants) > 1
    assert all(v.status == PLANNED for v in plan.variants)
