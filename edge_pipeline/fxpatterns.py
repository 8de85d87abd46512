"""torch.fx patterns shared by graph rewrites: a full flatten, and the Linear that consumes it.

Used by `compress.gap_head` (replace flatten + Linear by global pooling) and `convert.nhwc` (fold a
flatten + Linear into a convolution for the exported graph).
"""

from __future__ import annotations

import torch
from torch import fx, nn

# Modules that are the identity at inference time: a pattern may look through them.
PASS_THROUGH = (nn.Dropout, nn.Identity)


def module_path(node: fx.Node) -> str:
    """The submodule path of a `call_module` or `get_attr` node (their target is always a string)."""
    assert isinstance(node.target, str), node.op
    return node.target


def is_full_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """`nn.Flatten()` or `torch.flatten(x, 1)`: every dimension after the batch merged into one."""
    if node.op == "call_module":
        m = modules[module_path(node)]
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    if node.op == "call_function" and node.target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return bool(start == 1 and end == -1)
    return False


def linear_after(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The single Linear that consumes `node`, possibly through eval-time no-ops (Dropout)."""
    while len(node.users) == 1:
        (user,) = node.users
        if user.op != "call_module":
            return None
        module = modules[module_path(user)]
        if isinstance(module, nn.Linear):
            return user
        if not isinstance(module, PASS_THROUGH):
            return None
        node = user
    return None
