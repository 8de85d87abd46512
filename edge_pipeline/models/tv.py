"""torchvision classifiers, randomly initialized; weights only from the user's disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError

# Input sizes some classifiers need (others pool adaptively and take any size).
INCEPTION_MIN_SIZE = 75  # below it, a 3x3 kernel meets a 2x2 map in inception_v3's stem
MAXVIT_SIZE_MULTIPLE = 224  # every stage's map must split into 7x7 windows (input / 32 / 7)


def build_torchvision(name: str, num_classes: int, in_channels: int, image_size: int = 224):
    import torchvision

    kwargs: dict = {"weights": None, "num_classes": num_classes, **_size_kwargs(name, image_size)}
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    model = torchvision.models.get_model(name, **kwargs)
    if in_channels != 3:
        _adapt_first_conv(model, in_channels)
    return model


def _size_kwargs(name: str, image_size: int) -> dict:
    """Constructor arguments for the input size, where the architecture is built for one size."""
    problem = None
    if name.startswith("vit_"):
        patch = int(name.rsplit("_", 1)[1])  # vit_b_16 -> 16 px patches
        if image_size % patch:
            problem = f"needs image_size divisible by its patch size {patch}"
        kwargs: dict = {"image_size": image_size}
    elif name.startswith("maxvit_"):
        if image_size % MAXVIT_SIZE_MULTIPLE:
            problem = f"needs image_size a multiple of {MAXVIT_SIZE_MULTIPLE}"
        kwargs = {"input_size": (image_size, image_size)}
    else:
        if name == "inception_v3" and image_size < INCEPTION_MIN_SIZE:
            problem = f"needs image_size >= {INCEPTION_MIN_SIZE}"
        kwargs = {}
    if problem:
        raise UserError(f"model.arch: torchvision:{name} {problem}, got {image_size}; change data.image_size")
    return kwargs


def _adapt_first_conv(model, in_channels: int) -> None:
    """Replace the first Conv2d (3 input channels) by one with `in_channels` inputs."""
    from torch import nn

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3 and module.groups == 1:
            conv: Any = module  # torch types kernel_size etc. as tuple[int, ...]; they are 2-tuples here
            new = nn.Conv2d(
                in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, 1, conv.bias is not None,
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
