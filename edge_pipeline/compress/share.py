"""Cross-layer parameter sharing (ALBERT-style) across repeated blocks of identical structure.

Siblings in the module tree with the same structure (same type, same configuration, same parameter
shapes; e.g. ResNet blocks 2..n of a stage, or VGG's repeated 512->512 convs) are found top-down
(a shared block is not searched inside) and every member after the first is made to use the first
member's layers: the module object itself is shared, so the weights exist once in memory and in
model.safetensors, while compute (MACs) stays the same.

BatchNorm layers are never shared: each use of a shared conv sees different activation statistics,
and a separate BN per position (a few parameters per channel) lets every depth keep its own scale
and shift, as recurrent residual networks with shared weights do (Liao & Poggio 2016: time-specific
BN). That is the one deliberate difference from ALBERT, which shares its LayerNorms too.

Initialization: `first` keeps the first member's weights (that member's output is exact; the others
change). `mean` sets the shared weights to the mean of the members' weights (the single tensor
closest to all of them in squared distance); in independently trained networks the members'
channels are not aligned, so averaging can blur all of them. Sharing has no lossless start: the
reconstruction error shows the cost, and fine-tuning is expected.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.edits import Edit
from .select import Selection, channels_ok, classifier, first_conv

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _own_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def signature(module: nn.Module) -> str:
    """Two modules with the same signature can use one set of weights."""
    shapes = [(n, tuple(p.shape)) for n, p in module.named_parameters()]
    buffers = [(n, tuple(b.shape)) for n, b in module.named_buffers()]
    return f"{type(module).__module__}.{type(module).__qualname__}|{module!r}|{shapes}|{buffers}"


class _Finder:
    def __init__(self, model: nn.Module, selection: Selection) -> None:
        self.selection = selection
        self.skip = set()
        if selection.skip_first and (name := first_conv(model)):
            self.skip.add(name)
        if selection.skip_classifier and (name := classifier(model)):
            self.skip.add(name)

    def leaf_ok(self, path: str, module: nn.Module) -> bool:
        """A conv or linear layer that may be shared (a BatchNorm is only ever shared inside a shared
        block: two BNs of one block normalize different things)."""
        if path in self.skip or not self.selection.matches(path):
            return False
        return isinstance(module, (nn.Conv2d, nn.Linear)) and channels_ok(module, self.selection.min_channels)

    def block_ok(self, path: str, module: nn.Module) -> bool:
        """A container can be shared if every weighted layer in it but its BatchNorms may be shared."""
        weighted = [(f"{path}.{n}", m) for n, m in module.named_modules() if n and _own_params(m)]
        if not weighted:
            return False
        return all(self.leaf_ok(p, m) or isinstance(m, BATCHNORMS) for p, m in weighted) and any(
            not isinstance(m, BATCHNORMS) for _, m in weighted
        )

    def groups(self, container: nn.Module, prefix: str = "") -> list[list[str]]:
        children = [(f"{prefix}{name}", child) for name, child in container.named_children()]
        by_signature: dict[str, list[str]] = {}
        for path, child in children:
            leaf = not list(child.children())
            ok = self.leaf_ok(path, child) if leaf else self.block_ok(path, child)
            if ok:
                by_signature.setdefault(signature(child), []).append(path)
        found = [paths for paths in by_signature.values() if len(paths) > 1]
        grouped = {p for paths in found for p in paths}
        for path, child in children:
            if path not in grouped and list(child.children()):
                found += self.groups(child, f"{path}.")
        return found


def find_groups(model: nn.Module, selection: Selection) -> list[list[str]]:
    """Lists of sibling paths with identical structure (first = the one whose layers are kept)."""
    return _Finder(model, selection).groups(model)


def _shared_pairs(model: nn.Module, group: list[str]) -> list[tuple[str, str]]:
    """(member path, source path) for every layer to share; whole blocks when they hold no BatchNorm."""
    source = model.get_submodule(group[0])
    leaves = [n for n, m in source.named_modules() if _own_params(m)]
    keeps_bn = any(isinstance(source.get_submodule(n), BATCHNORMS) for n in leaves if n)
    pairs = []
    for member in group[1:]:
        if not keeps_bn:
            pairs.append((member, group[0]))
            continue
        for leaf in leaves:
            if not isinstance(source.get_submodule(leaf), BATCHNORMS):
                pairs.append((f"{member}.{leaf}", f"{group[0]}.{leaf}"))
    return pairs


@torch.no_grad()
def _average_into_source(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    by_source: dict[str, list[str]] = {}
    for member, source in pairs:
        by_source.setdefault(source, []).append(member)
    for source, members in by_source.items():
        target = model.get_submodule(source)
        mods = [target] + [model.get_submodule(m) for m in members]
        for name, tensor in list(target.named_parameters()) + list(target.named_buffers()):
            if tensor.is_floating_point():
                stacked = torch.stack([_tensor_named(m, name) for m in mods])
                tensor.copy_(stacked.mean(0))


def _tensor_named(module: nn.Module, name: str) -> torch.Tensor:
    """A parameter or buffer of `module` by name (every member of a group has the same structure)."""
    found = dict(module.named_parameters()).get(name, dict(module.named_buffers()).get(name))
    assert found is not None
    return found


def share(model: nn.Module, selection: Selection, init: str = "first") -> Edit:
    edit = Edit("share", {"init": init})
    groups = find_groups(model, selection)
    layers, probes = [], []
    for group in groups:
        pairs = _shared_pairs(model, group)
        saved = sum(p.numel() for member, _ in pairs for p in model.get_submodule(member).parameters())
        if init == "mean":
            _average_into_source(model, pairs)
        for member, source in pairs:
            edit.share(model, member, source)
        sources = sorted({s for _, s in pairs})
        probes += [[p, "local"] for p in sources] + [[m, "local"] for m, _ in pairs]
        layers.append({"source": group[0], "members": group[1:], "shared_layers": len(pairs), "params_saved": saved})
    edit.summary = {"count": len(layers), "layers": layers, "probes": probes}
    return edit
