"""Recipe loading: valid recipes, every kind of bad input, --set overrides, the resolved recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_pipeline.cli import main
from edge_pipeline.errors import UserError
from edge_pipeline.recipe import load_recipe, parse_recipe

from .conftest import REPO, TINY_HEAD, TINY_TORCH_STAGES, write

GOOD = TINY_HEAD + TINY_TORCH_STAGES


def test_quickstart_parses_with_defaults_filled():
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml")
    assert [s.type for s in recipe.stages] == ["train", "restructure", "prune", "finetune", "quantize", "export", "profile"]
    assert [s.dirname for s in recipe.stages][:2] == ["01-train", "02-restructure"]
    prune = recipe.stage("prune").config
    assert (prune.method, prune.ratio, prune.round_to) == ("l1", 0.5, 8)
    assert recipe.stage("finetune").config.distill.teacher == "train"
    assert recipe.data.in_channels == 1


def test_resolved_recipe_round_trips():
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml")
    again = parse_recipe(recipe.resolved_yaml(), "resolved.yaml")
    assert again.resolved() == recipe.resolved()


# (name, recipe text, expected line, expected fragment of the message)
BAD = [
    ("unknown key", GOOD.replace("lr: 0.05}", "lr: 0.05, epoch: 3}"), 6, "stages[0].train.epoch: unknown key 'epoch' (did you mean 'epochs'?)"),
    ("wrong type", GOOD.replace("epochs: 3, lr: 0.05", "epochs: two, lr: 0.05"), 6, "stages[0].train.epochs: must be an integer, got 'two'"),
    ("out of range", GOOD.replace("ratio: 0.5", "ratio: 1.5"), 8, "stages[2].prune.ratio: must be < 1, got 1.5"),
    ("duplicate key", GOOD.replace("seed: 0\n", "seed: 0\nseed: 1\n"), 3, "seed: duplicate key 'seed' (first defined on line 2)"),
    ("unknown stage", GOOD.replace("  - prune:", "  - prunee:"), 8, "stages[2].prunee: unknown stage 'prunee' (did you mean 'prune'?)"),
    ("unknown model", GOOD.replace("arch: vgg_small", "arch: vgg_smal"), 4, "model.arch: unknown model 'vgg_smal' (did you mean 'vgg_small'?)"),
    ("unknown torchvision model", GOOD.replace("arch: vgg_small", "arch: 'torchvision:resnet19'"), 4, "unknown torchvision classifier 'resnet19'"),
    ("missing dataset path", GOOD.replace("dataset: digits,", "dataset: imagefolder, path: /nonexistent/images,"), 3, "data.path: folder '/nonexistent/images' does not exist"),
    ("dataset without path", GOOD.replace("dataset: digits,", "dataset: cifar10,"), 3, "data: dataset 'cifar10' needs `path:`"),
    ("yaml syntax", GOOD.replace("lr: 0.05}", "lr: 0.05"), 7, "YAML syntax error"),
    ("bad teacher", GOOD.replace("teacher: train", "teacher: finetune"), 9, "stages[3].finetune.distill.teacher: 'finetune' is not an earlier model stage"),
    ("stage needs model", TINY_HEAD + "stages:\n  - prune: {ratio: 0.5}\n", 6, "stages[0].prune: needs an earlier stage that produces a model"),
    ("duplicate stage name", GOOD + "  - finetune: {epochs: 1}\n", 10, "duplicate stage name 'finetune'"),
    ("not a mapping stage", GOOD + "  - 42\n", 10, "stages[4]: each stage is a one-key mapping"),
    ("bad literal", GOOD.replace("method: l1", "method: l3"), 8, "stages[2].prune.method: must be one of 'l1', 'l2', 'bn_scale', 'taylor', 'random' or 'magnitude', got 'l3'"),
    ("unknown device", GOOD + "  - quantize: {}\n  - export: {}\n  - profile: {devices: [toaster]}\n", 12, "unknown device 'toaster'"),
]


@pytest.mark.parametrize("name,text,line,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_recipe_gives_one_error_line_with_file_line_and_exit_2(tmp_path, capsys, name, text, line, fragment):
    assert text != GOOD, "the case's edit did not apply to the base recipe"
    path = write(tmp_path / "bad.yaml", text)
    code = main(["validate", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {path}:{line}: "), err[0]
    assert fragment in err[0], err[0]
    assert "Traceback" not in err[0]


def test_every_problem_is_reported_at_once(tmp_path):
    text = GOOD.replace("ratio: 0.5", "ratio: 1.5").replace("epochs: 3, lr: 0.05", "epochs: -1, lr: 0.05")
    assert text.count("1.5") == 1 and "-1" in text
    with pytest.raises(UserError) as info:
        parse_recipe(text, "r.yaml")
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert any("stages[0].train.epochs: must be >= 0, got -1" in l for l in lines)
    assert any("stages[2].prune.ratio: must be < 1" in l for l in lines)


def test_missing_recipe_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err


@pytest.mark.parametrize("override,check", [
    ("stages.2.prune.ratio=0.3", lambda r: r.stage("prune").config.ratio == 0.3),
    ("stages.prune.ratio=0.25", lambda r: r.stage("prune").config.ratio == 0.25),
    ("stages.finetune.distill.alpha=0.5", lambda r: r.stage("finetune").config.distill.alpha == 0.5),
    ("data.image_size=24", lambda r: r.data.image_size == 24),
    ("stages.0.train.optimizer=adamw", lambda r: r.stage("train").config.optimizer == "adamw"),
    ("name=other", lambda r: r.name == "other"),
])
def test_set_overrides(override, check):
    assert check(parse_recipe(GOOD, "r.yaml", [override]))


@pytest.mark.parametrize("override,fragment", [
    ("stages.2.prune.ratio=2", "--set stages.2.prune.ratio=2: stages[2].prune.ratio: must be < 1, got 2"),
    ("stages.9.prune.ratio=0.3", "--set stages.9.prune.ratio=0.3: no item '9' in stages (it has 4 items)"),
    ("stages.prune.ratioo=0.3", "--set stages.prune.ratioo=0.3: stages[2].prune.ratioo: unknown key 'ratioo'"),
    ("stages.prune.ratio", "expected PATH=VALUE"),
])
def test_bad_overrides_name_the_flag(override, fragment):
    with pytest.raises(UserError) as info:
        parse_recipe(GOOD, "r.yaml", [override])
    assert fragment in str(info.value)


def test_validate_does_not_import_torch_or_tensorflow(tmp_path):
    """`validate` must answer in about a second: it may not pull in the heavy frameworks."""
    import subprocess
    import sys

    code = (
        "import sys; from edge_pipeline.cli import main; "
        f"rc = main(['validate', {str(REPO / 'recipes' / 'quickstart.yaml')!r}]); "
        "heavy = [m for m in ('torch', 'tensorflow', 'onnx', 'torchvision') if m in sys.modules]; "
        "print(rc, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "0 []"


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe):
    assert load_recipe(recipe).stages
