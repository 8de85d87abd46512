"""torchvision classifiers, randomly initialized; weights only from the user's disk."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def build_torchvision(name: str, num_classes: int, in_channels: int):
    import torchvision

    kwargs = {"weights": None, "num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    model = torchvision.models.get_model(name, **kwargs)
    if in_channels != 3:
        _adapt_first_conv(model, in_channels)
    return model


def _adapt_first_conv(model, in_channels: int) -> None:
    """Replace the first Conv2d (3 input channels) by one with `in_channels` inputs."""
    from torch import nn

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3 and module.groups == 1:
            new = nn.Conv2d(
                in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                module.dilation, 1, module.bias is not None,
            )
            model.set_submodule(name, new)
            return
    raise UserError("model: could not find a first convolution with 3 input channels to adapt")


def resolve_torchvision_weights(name: str, weights: str) -> Path:
    """Map a torchvision weights name (e.g. IMAGENET1K_V1) to its file in the torch hub cache."""
    import torch
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
        entry = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except (KeyError, ValueError):
        raise UserError(
            f"model.weights: {weights!r} is neither a file nor a torchvision weights name for {name}"
        ) from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
    if not path.is_file():
        raise UserError(
            f"model.weights: {name} {entry} is not on disk (expected {path}); edge-pipeline never downloads. "
            f"Fetch {entry.url} on a connected machine and copy it there, or set weights: /path/to/file.pth"
        )
    return path
