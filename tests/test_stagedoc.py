"""`edge-pipeline stages`: the option reference is generated from the config classes, for every stage."""

import subprocess
import sys

import pytest

from edge_pipeline.cli import main
from edge_pipeline.stagedoc import stage_options
from edge_pipeline.stages import STAGES


@pytest.mark.parametrize("name", STAGES.names())
def test_every_option_of_every_stage_is_listed(name, capsys):
    assert main(["stages", name]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{name}: ")
    keys = [line.split()[0] for line in out.splitlines()[1:] if line.startswith("  ") and not line.startswith("    ")]
    expected = [n for n, f in STAGES.get(name).Config.model_fields.items() if not f.exclude]
    top_level = [k for k in keys if "." not in k]
    assert top_level == expected


MINIMAL = {"restructure": {"depthwise_separable": {}}}  # a restructure stage needs one transform


@pytest.mark.parametrize("name", STAGES.names())
def test_every_listed_default_is_what_validation_fills_in(name):
    """A listed default is the value a minimal config resolves to, or the option's description says
    how the default is computed (e.g. prune.ratio: 0.5 only when no MACs/params target is given)."""
    config_cls = STAGES.get(name).Config
    # Attributes, not model_dump: an option may stay out of the dump at its default (`exclude_if`).
    resolved = config_cls.model_validate(MINIMAL.get(name, {}))
    for option in stage_options(config_cls):
        if "." in option.key or option.type.startswith("mapping") or option.key == "order":
            continue
        value = getattr(resolved, option.key)
        if option.default != repr(value):
            assert "default" in option.description.lower(), (option.key, option.default, value)


def test_nested_blocks_are_flattened_with_their_own_defaults():
    restructure = {o.key: o for o in stage_options(STAGES.get("restructure").Config)}
    assert restructure["depthwise_separable"].type == "mapping, optional"
    assert restructure["depthwise_separable.init"].default == "'svd'"
    assert restructure["low_rank.energy"].default == "0.8"
    finetune = {o.key: o for o in stage_options(STAGES.get("finetune").Config)}
    assert finetune["distill.teacher"].default == ""  # required inside the block
    assert finetune["distill.features.loss"].type == "mse|cosine"


def test_all_stages_in_pipeline_order_without_heavy_imports():
    code = (
        "import sys; from edge_pipeline.cli import main; rc = main(['stages']); "
        "print(rc, [m for m in ('torch', 'tensorflow', 'onnx') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    headers = [line.split(":")[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert headers[:9] == ["train", "restructure", "prune", "finetune", "qat", "early_exit", "quantize", "export", "profile"]
    assert out.strip().splitlines()[-1] == "0 []"


def test_unknown_stage_is_exit_2_naming_the_known_ones(capsys):
    assert main(["stages", "prun"]) == 2
    err = capsys.readouterr().err
    assert "unknown stage 'prun'" in err and "prune" in err
