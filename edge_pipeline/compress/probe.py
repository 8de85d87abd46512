"""Feeding a model batch by batch and seeing what one of its layers receives."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has been seen."""


@torch.no_grad()
def feed_to(model: nn.Module, layer: nn.Module, inputs: torch.Tensor, on_input: Callable[[torch.Tensor], None],
            stop_early: bool = True, batch_size: int = 64) -> None:
    """Run `model` over `inputs` in batches and call `on_input` with each batch's input to `layer`.
    With `stop_early`, each pass ends there (the rest of the network is not computed); only when the
    layer is called once per pass, or the later calls would be missed."""

    def hook(_module, args):
        on_input(args[0].detach())
        if stop_early:
            raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        for start in range(0, len(inputs), batch_size):
            try:
                model(inputs[start : start + batch_size])
            except _Stop:
                pass
    finally:
        handle.remove()
