"""`edge-pipeline sweep`: bad input is one line and exit 2, before any variant runs."""

from __future__ import annotations

import pytest

from edge_pipeline.cli import main

from ..conftest import TINY_HEAD, write

STAGES = "stages:\n  - train: {epochs: 1}\n  - prune: {ratio: 0.5}\n"


@pytest.fixture
def recipe(tmp_path):
    return write(tmp_path / "tiny.yaml", TINY_HEAD + STAGES)


@pytest.mark.parametrize("args,message", [
    ([], "give a recipe"),
    (["missing.yaml", "--grid", "seed=[1,2]"], "missing.yaml: file not found"),
    (["RECIPE"], "no grid"),
    (["RECIPE", "--grid", "stages.prune.ratio"], "expected PATH=\\[v1, v2, ...\\]"),
    (["RECIPE", "--grid", "stages.quantize.mode=[int8]"], "no item 'quantize'"),
    (["RECIPE", "--grid", "seed=[1,2]", "--jobs", "0"], "--jobs 0: must be 1..64"),
    (["RECIPE", "--grid", "seed=[1,2]", "--max-latency-ms", "-1"], "--max-latency-ms: Input should be greater than 0"),
    (["RECIPE", "--grid", "seed=[1,2]", "--min-accuracy", "2"], "--min-accuracy: Input should be less than or equal to 1"),
    (["RECIPE", "--grid", "seed=[1,2]", "--devices", ","], "--devices ',': give device names"),
    (["RECIPE", "--grid", "seed=[1,2]", "--devices", "nosuchboard"], "no valid variant.*nosuchboard"),
    (["RECIPE", "--grid", "seed=[1,2]", "--zip", "--grid", "data.image_size=[16]"], "same number of values"),
    (["RECIPE", "--collect", "DIR"], "takes no recipe"),
])
def test_bad_input_is_one_line_and_exit_2(recipe, tmp_path, capsys, args, message):
    argv = [str(recipe) if a == "RECIPE" else str(tmp_path / "sw") if a == "DIR" else a for a in args]
    assert main(["sweep", *argv, "--out", str(tmp_path / "out")] if "--collect" not in argv else ["sweep", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    import re
    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "out" / "runs").exists()  # nothing ran


def test_collect_needs_a_plan(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["sweep", "--collect", str(tmp_path / "empty")]) == 2
    assert "no plan.json" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []  # no lock file left in a folder that is not ours
    assert main(["sweep", "--collect", str(tmp_path / "missing")]) == 2
    assert "no plan.json" in capsys.readouterr().err


def test_foreign_out_and_store_folders_are_refused_before_anything_runs(recipe, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["sweep", str(recipe), "--grid", "seed=[1,2]", "--out", str(mine)]) == 2
    assert "not created by edge-pipeline" in capsys.readouterr().err
    assert main(["sweep", str(recipe), "--grid", "seed=[1,2]", "--out", str(tmp_path / "out"), "--store", str(mine)]) == 2
    assert "not an edge-pipeline store" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert not (tmp_path / "out" / "runs").exists()


def test_plan_only_writes_the_variants(recipe, tmp_path, capsys):
    folder = tmp_path / "plan"
    assert main(["sweep", str(recipe), "--grid", "stages.prune.ratio=[0.3,0.5]", "--plan", str(folder)]) == 0
    assert sorted(p.name for p in (folder / "variants").iterdir()) == ["v0.yaml", "v1.yaml"]
    assert not (folder / "runs").exists() and "sweep --collect" in capsys.readouterr().out
    for name in ("v0", "v1"):
        assert main(["validate", str(folder / "variants" / f"{name}.yaml")]) == 0
