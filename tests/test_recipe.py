"""Recipe loading: valid recipes, every kind of bad input, --set overrides, the resolved recipe."""

from __future__ import annotations

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
    ("unknown key", GOOD.replace("lr: 0.05}", "lr: 0.05, epoch: 3}"), 6,
     "stages[0].train.epoch: unknown key 'epoch' (did you mean 'epochs'?)"),
    ("wrong type", GOOD.replace("epochs: 3, lr: 0.05", "epochs: two, lr: 0.05"), 6,
     "stages[0].train.epochs: must be an integer, got 'two'"),
    ("out of range", GOOD.replace("ratio: 0.5", "ratio: 1.5"), 8, "stages[2].prune.ratio: must be < 1, got 1.5"),
    ("duplicate key", GOOD.replace("seed: 0\n", "seed: 0\nseed: 1\n"), 3, "seed: duplicate key 'seed' (first defined on line 2)"),
    ("unknown stage", GOOD.replace("  - prune:", "  - prunee:"), 8,
     "stages[2].prunee: unknown stage 'prunee' (did you mean 'prune'?)"),
    ("unknown model", GOOD.replace("arch: vgg_small", "arch: vgg_smal"), 4,
     "model.arch: unknown model 'vgg_smal' (did you mean 'vgg_small'?)"),
    ("unknown torchvision model", GOOD.replace("arch: vgg_small", "arch: 'torchvision:resnet19'"), 4,
     "unknown torchvision classifier 'resnet19'"),
    ("missing dataset path", GOOD.replace("dataset: digits,", "dataset: imagefolder, path: /nonexistent/images,"), 3,
     "data.path: folder '/nonexistent/images' does not exist"),
    ("dataset without path", GOOD.replace("dataset: digits,", "dataset: cifar10,"), 3, "data: dataset 'cifar10' needs `path:`"),
    ("yaml syntax", GOOD.replace("lr: 0.05}", "lr: 0.05"), 7, "YAML syntax error"),
    ("bad teacher", GOOD.replace("teacher: train", "teacher: finetune"), 9,
     "stages[3].finetune.distill.teacher: 'finetune' is not an earlier model stage"),
    ("stage needs model", TINY_HEAD + "stages:\n  - prune: {ratio: 0.5}\n", 6,
     "stages[0].prune: needs an earlier stage that produces a model"),
    ("duplicate stage name", GOOD + "  - finetune: {epochs: 1}\n", 10, "duplicate stage name 'finetune'"),
    ("not a mapping stage", GOOD + "  - 42\n", 10, "stages[4]: each stage is a one-key mapping"),
    ("bad literal", GOOD.replace("method: l1", "method: l3"), 8,
     "stages[2].prune.method: must be one of 'l1', 'l2', 'bn_scale', 'taylor', 'random' or 'magnitude', got 'l3'"),
    ("unknown device", GOOD + "  - quantize: {}\n  - export: {}\n  - profile: {devices: [toaster]}\n", 12,
     "unknown device 'toaster'"),
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
    assert any("stages[0].train.epochs: must be >= 0, got -1" in line for line in lines)
    assert any("stages[2].prune.ratio: must be < 1" in line for line in lines)


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


# -- hostile recipes (issue 11.7, 11.8): bounded loading, one error line each ----------------------


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs": nine nested aliases of nine items each expand to 9**9 strings."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghij"
    for prev, name in zip(names, names[1:levels]):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n" + GOOD


LONG_NAME = "x" * 300
HOSTILE = [
    ("alias bomb", alias_bomb(), 6, "more than 100000 values once aliases are expanded (an alias bomb?)"),
    ("alias bomb in a stage", GOOD.replace("  - train: {epochs: 3, lr: 0.05}", "  - train: &t {epochs: 3, lr: 0.05}")
     + "".join(f"x{i}: &x{i} [" + ",".join([f"*{'x' + str(i - 1) if i else 't'}"] * 12) + "]\n" for i in range(6)), 13,
     "once aliases are expanded"),
    ("recursive alias", GOOD + "loop: &loop [*loop]\n", 10, "alias *loop refers to a node that contains it"),
    ("NUL byte", GOOD.replace("seed: 0\n", "seed: 0\x00\n"), 2, "contains a NUL byte; a recipe or device file is plain text"),
    ("control character", GOOD.replace("name: tiny", "name: ti\x1bny"), 1, "contains the non-printable character U+001B"),
    ("10,000 nested lists", GOOD + "deep: " + "[" * 10_000 + "]" * 10_000 + "\n", 10, "nested deeper than 100 levels"),
    ("10,000 nested mappings", GOOD + "deep: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n", 10, "nested deeper than 100 levels"),
    ("deep block nesting", GOOD + "deep:\n" + "".join(" " * (i + 1) + "- \n" for i in range(150)), 110,
     "nested deeper than 100 levels"),
    ("impossible date", GOOD.replace("seed: 0\n", "seed: 0\nwhen: 2024-13-45\n"), 3, "invalid value '2024-13-45' (month must be"),
    ("5000-digit integer", GOOD.replace("seed: 0", "seed: " + "9" * 5000), 2, "invalid value '99999"),
    ("seed 2**32", GOOD.replace("seed: 0", "seed: 4294967296"), 2, "seed: must be <= 4294967295, got 4294967296"),
    ("negative seed", GOOD.replace("seed: 0", "seed: -1"), 2, "seed: must be >= 0, got -1"),
    ("recipe name too long", GOOD.replace("name: tiny", f"name: {LONG_NAME}"), 1,
     "name: must be at most 64 characters (names become folder names), got 'xxxx"),
    ("stage name too long", GOOD.replace("{epochs: 3, lr: 0.05}", f"{{epochs: 3, lr: 0.05, name: {LONG_NAME}}}"), 6,
     "stages[0].train.name: must be at most 64 characters"),
    ("huge class count", GOOD.replace("width: 0.5}", "width: 0.5, num_classes: 1000000000}"), 4,
     "model.num_classes: must be <= 100000, got 1000000000"),
    ("python tag", GOOD.replace("seed: 0", "seed: !!python/object/apply:os.system ['touch /tmp/pwned']"), 2,
     "could not determine a constructor for the tag"),
]


@pytest.mark.parametrize("name,text,line,fragment", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_recipe_is_one_error_line(tmp_path, capsys, name, text, line, fragment):
    path = tmp_path / "hostile.yaml"
    path.write_bytes(text.encode("utf-8"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {path}:{line}: "), err[0][:300]
    assert fragment in err[0], err[0][:300]
    assert len(err[0]) < 400  # names what is wrong; never echoes the whole bomb


def test_oversized_recipe_is_refused_before_parsing(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text(GOOD + "# " + "x" * (2 << 20) + "\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}") and "1 MiB" in err[0], err


def test_recipe_name_from_a_too_long_file_name(tmp_path, capsys):
    path = tmp_path / ("r" * 100 + ".yaml")
    path.write_text(GOOD.replace("name: tiny\n", ""))
    assert main(["validate", str(path)]) == 2
    assert "name: must be at most 64 characters" in capsys.readouterr().err


def test_aliases_within_bounds_still_work(tmp_path):
    text = GOOD.replace("  - train: {epochs: 3, lr: 0.05}", "  - train: &base {epochs: 3, lr: 0.05}")
    text = text.replace("{epochs: 3, lr: 0.01, distill:", "{<<: *base, lr: 0.01, distill:")
    recipe = parse_recipe(text, "r.yaml")
    assert recipe.stage("finetune").config.epochs == 3 and recipe.stage("finetune").config.lr == 0.01


@pytest.mark.parametrize("value", [
    "&a [1,1,1,1,1,1,1,1,1]",  # an anchor is fine...
    "[" * 5000 + "]" * 5000,  # ...deep nesting in --set is not YAML we read: it stays a string, and the schema says no
])
def test_set_values_are_loaded_with_the_same_bounds(value):
    with pytest.raises(UserError) as info:
        parse_recipe(GOOD, "r.yaml", [f"seed={value}"])
    assert "--set seed=" in str(info.value) and "seed: must be an integer" in str(info.value)


@pytest.mark.parametrize("text,line,fragment", [
    (alias_bomb().split("name: tiny")[0] + "name: board\n", 6, "once aliases are expanded"),
    ("name: board\ntransport: " + "[" * 10_000 + "]" * 10_000 + "\n", 2, "nested deeper than 100 levels"),
    ("name: board\x00\n", 1, "contains a NUL byte"),
], ids=["alias bomb", "deep nesting", "NUL"])
def test_device_files_are_loaded_with_the_same_bounds(tmp_path, text, line, fragment):
    from edge_pipeline.profiling.devices import load_device_file

    path = tmp_path / "board.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_device_file(path)
    assert str(info.value).startswith(f"{path}:{line}: ") and fragment in str(info.value), str(info.value)
