"""The model registry: names known without torch match what can be built; weights never download."""

from __future__ import annotations

import pytest
import torch

from edge_pipeline.errors import UserError
from edge_pipeline.models import BaseSpec, build_model, load_initial_weights
from edge_pipeline.models.names import TORCHVISION_CLASSIFIERS, ZOO, check_arch
from edge_pipeline.models.zoo import BUILDERS


def test_zoo_names_match_builders():
    assert set(ZOO) == set(BUILDERS)


def test_torchvision_list_matches_installed_torchvision():
    import torchvision

    assert set(TORCHVISION_CLASSIFIERS) == set(torchvision.models.list_models(module=torchvision.models))


@pytest.mark.parametrize("arch", ZOO)
@pytest.mark.parametrize("channels,size", [(1, 16), (3, 32)])
def test_zoo_models_produce_logits(arch, channels, size):
    model = build_model(BaseSpec(arch, 7, channels, size, 0.5)).eval()
    assert model(torch.zeros(2, channels, size, size)).shape == (2, 7)


@pytest.mark.parametrize("arch", ["torchvision:resnet18", "torchvision:mobilenet_v2"])
def test_torchvision_models_adapt_to_channels_and_classes(arch):
    model = build_model(BaseSpec(arch, 10, 1, 32)).eval()
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def test_build_is_deterministic_under_seed():
    torch.manual_seed(0)
    a = build_model(BaseSpec("resnet8", 10, 1, 16)).state_dict()
    torch.manual_seed(0)
    b = build_model(BaseSpec("resnet8", 10, 1, 16)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_arch_message_suggests():
    assert "did you mean 'resnet8'" in check_arch("resnet9")


def test_pretrained_weights_not_on_disk_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    model = build_model(BaseSpec("torchvision:resnet18", 10, 3, 32))
    with pytest.raises(UserError) as info:
        load_initial_weights(model, "IMAGENET1K_V1", "torchvision:resnet18")
    message = str(info.value)
    assert "not on disk" in message and "never downloads" in message and str(tmp_path) in message


def test_weights_from_a_local_file_keep_mismatched_head_fresh(tmp_path):
    from safetensors.torch import save_file

    source = build_model(BaseSpec("resnet8", 5, 1, 16))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "w.safetensors")
    target = build_model(BaseSpec("resnet8", 10, 1, 16))
    fresh = load_initial_weights(target, str(tmp_path / "w.safetensors"), "resnet8")
    assert fresh == ["fc.bias", "fc.weight"]
    assert torch.equal(target.stem[0].weight, source.stem[0].weight)


def test_torch_checkpoint_is_read_with_weights_only(tmp_path):
    source = build_model(BaseSpec("resnet8", 10, 1, 16))
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pth")
    target = build_model(BaseSpec("resnet8", 10, 1, 16))
    assert load_initial_weights(target, str(tmp_path / "w.pth"), "resnet8") == []
    # A pickle carrying an arbitrary object is refused, not executed.
    torch.save({"state_dict": source.state_dict(), "evil": object()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="cannot read weights"):
        load_initial_weights(target, str(tmp_path / "evil.pth"), "resnet8")


# -- user weights that do not fit (issue 11.10) -----------------------------------------------------


def _save(tmp_path, name, state):
    from safetensors.torch import save_file

    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return str(path)


def test_weights_of_another_architecture_are_an_error_unless_not_strict(tmp_path):
    other = _save(tmp_path, "vgg.safetensors", build_model(BaseSpec("vgg_small", 10, 1, 16)).state_dict())
    target = build_model(BaseSpec("resnet8", 10, 1, 16))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(UserError) as info:
        load_initial_weights(target, other, "resnet8")
    message = str(info.value)
    assert message.startswith(f"model.weights: {other} does not fit resnet8: 0 of the model's") and "model.strict: false" in message
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing was loaded
    fresh = load_initial_weights(target, other, "resnet8", strict=False)  # loads what matches: nothing here
    assert fresh == sorted(target.state_dict())


def test_weights_of_another_width_are_an_error(tmp_path):
    """Same names, (almost) every shape different: the case that used to pass with only a warning."""
    wide = _save(tmp_path, "wide.safetensors", build_model(BaseSpec("resnet8", 10, 1, 16, width=1.0)).state_dict())
    narrow = build_model(BaseSpec("resnet8", 10, 1, 16, width=0.5))
    pattern = r"does not fit resnet8: \d+ of the model's \d+ tensors match by name and shape \(\d+ differ in shape"
    with pytest.raises(UserError, match=pattern):
        load_initial_weights(narrow, wide, "resnet8")


def test_new_head_and_first_conv_still_load_the_rest(tmp_path):
    """The fine-tuning case the strict rule must keep: other class count and channel count."""
    source = build_model(BaseSpec("torchvision:resnet18", 1000, 3, 32))
    path = _save(tmp_path, "r18.safetensors", source.state_dict())
    target = build_model(BaseSpec("torchvision:resnet18", 5, 1, 32))
    fresh = load_initial_weights(target, path, "torchvision:resnet18")
    assert fresh == ["conv1.weight", "fc.bias", "fc.weight"]
    assert torch.equal(target.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_user_weights_name_the_file_and_tensor(tmp_path, bad):
    state = build_model(BaseSpec("resnet8", 10, 1, 16)).state_dict()
    name = sorted(k for k in state if state[k].is_floating_point())[2]
    state[name] = state[name].clone()
    state[name].view(-1)[-1] = bad
    kind = "NaN" if bad != bad else "infinite"
    for path in (_save(tmp_path, "w.safetensors", state), str(tmp_path / "w.pth")):
        torch.save(state, tmp_path / "w.pth")
        with pytest.raises(UserError, match=rf"^{path}: tensor '{name}' has {kind} values"):
            load_initial_weights(build_model(BaseSpec("resnet8", 10, 1, 16)), path, "resnet8")


@pytest.mark.parametrize("content,fragment", [
    ({"state_dict": {"conv.weight": 3}}, "entry 'conv.weight' is a int, not a tensor"),
    ({"conv.weight": torch.zeros(2), "epoch": "ten"}, "entry 'epoch' is a str, not a tensor"),
    ({"conv.weight": [torch.zeros(2)]}, "entry 'conv.weight' is a list, not a tensor"),
    ([torch.zeros(2)], "expected a state dict of tensors, got list"),
    ({3: torch.zeros(2)}, "key 3 is a int, not a tensor name"),
], ids=["int", "str", "list-value", "list", "int-key"])
def test_pth_whose_values_are_not_tensors(tmp_path, content, fragment):
    from edge_pipeline.models.store import read_state_dict

    path = tmp_path / "w.pth"
    torch.save(content, path)
    with pytest.raises(UserError) as info:
        read_state_dict(path)
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value), str(info.value)


def test_cli_run_with_unfit_weights_is_one_error_line(tmp_path, capsys):
    """`run` stops at the train stage with exit 2 (no training from scratch behind a warning)."""
    from edge_pipeline.cli import main
    from tests.conftest import TINY_HEAD, write

    other = _save(tmp_path, "other.safetensors", build_model(BaseSpec("resnet8", 10, 1, 16)).state_dict())
    recipe = write(tmp_path / "r.yaml", TINY_HEAD.replace("width: 0.5}", f"width: 0.5, weights: {other}}}")
                   + "stages:\n  - train: {epochs: 1}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert len(err) == 1 and "does not fit vgg_small" in err[0] and "model.strict: false" in err[0], err
