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
