"""Which channels must be removed together: a channel-dependency analysis of a traced model.

The model is traced with torch.fx and interpreted on *label tensors* instead of activations: every
channel a convolution or linear layer produces gets a fresh integer label (an "atom"), and each
node's output is a tensor of the real shape (batch 1) whose elements hold the atom of the channel
they belong to. Pure data movement (view, reshape, transpose, cat, chunk, getitem, index_select,
...) is executed on the labels as is, so concatenations, splits, flattening and channel shuffles
move labels exactly like they move activations, whatever code wrote them.

Atoms that must share a fate are merged in a union-find; a merged set is a *class*, and pruning
removes whole classes. Merges come from:
- elementwise ops between tensors (residual adds, SE-style products): same position, same fate;
- depthwise convs (groups == in_channels): an output channel lives and dies with its input;
- grouped convs, `chunk` and block channel shuffles, which are re-executed with the new channel
  count after pruning: they stay exact only if the same positions are removed from every group
  (then the pruned op equals the original op restricted to the kept channels);
- anything we cannot prove exact (graph input, logits, unknown ops and modules, channel slicing,
  non-shuffle permutations, parameters used as tensors) is merged into the reserved FIXED atom.

Alongside the labels, every tensor carries `pos`: the flat index of each element in its *anchor*
(the last tensor made by a non-data-movement op). When a chain of data-movement ops is consumed,
`pos` says exactly which anchor channel each channel came from: identity, a flatten into a Linear,
a block shuffle (torchvision's `channel_shuffle`, a `ChannelShuffle` module, an inline
view/transpose/view) or something else (FIXED).

The same interpreter re-runs on the pruned model in *verify* mode, with each producer emitting the
classes it kept: any consumer that would see channels other than the original ones restricted to
the kept set (e.g. a hard-coded `view(-1, 512)`) is reported instead of silently mis-wiring.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ...fxpatterns import module_path
from ...models.modspec import _CUSTOM as BUILDABLE

FIXED = 0


class UnionFind:
    """Atoms 0..n-1 (0 = FIXED). The smaller root wins, so FIXED stays the root of whatever joins it."""

    def __init__(self, n: int = 1) -> None:
        self.parent: list[int] = list(range(n))

    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb

    def roots(self, atoms: np.ndarray) -> np.ndarray:
        return np.fromiter((self.find(int(a)) for a in atoms.ravel()), np.int64, atoms.size).reshape(atoms.shape)


@dataclass
class Use:
    """One call of a module whose parameters are indexed by channel."""

    node: str
    path: str  # the module's (first) path
    kind: str  # "conv", "linear", "norm" (per-channel parameters), "permute" (parameter-free channel permutation)
    inputs: np.ndarray  # atom of every input channel (linear: every input feature)
    outputs: np.ndarray | None = None  # atom of every output channel (conv, linear)
    groups: int = 1
    kernel: int = 1  # kh * kw
    spatial: int = 1  # output positions per sample (H * W)


class UnsupportedGraph(Exception):
    """Raised in verify mode when the pruned model would not see the original channels."""


class UntraceableModel(Exception):
    """torch.fx cannot trace the model's forward (e.g. control flow that depends on values)."""


@dataclass
class Lab:
    """A label tensor: `t` holds atoms, `pos` the flat index of each element in `anchor`."""

    t: torch.Tensor
    pos: torch.Tensor
    anchor: Lab | None = None  # None: this tensor is its own anchor

    @classmethod
    def fresh(cls, t: torch.Tensor) -> Lab:
        return cls(t, torch.arange(t.numel()).view(t.shape))

    @property
    def root(self) -> Lab:
        return self.anchor or self


# -- op tables -------------------------------------------------------------------------------

# Per-channel parameters we can slice and record as data (modspec): BatchNorm.
NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d)
CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
    nn.Mish, nn.Softplus, nn.Hardtanh, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity, nn.MaxPool2d,
    nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample, nn.ZeroPad2d,
)  # fmt: skip
DATA_MODULES = (nn.Flatten, nn.Unflatten)
CHANNELWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.hardtanh, F.gelu, F.silu, torch.sigmoid, F.sigmoid, F.hardswish, F.hardsigmoid,
    F.leaky_relu, F.elu, torch.tanh, F.tanh, F.mish, F.dropout, F.dropout2d, F.adaptive_avg_pool2d, F.avg_pool2d,
    F.max_pool2d, F.adaptive_max_pool2d, F.interpolate, torch.clamp,
}  # fmt: skip
CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "clamp", "clamp_", "clamp_min", "clamp_max", "hardtanh"}
REDUCE_METHODS = {"mean", "sum", "amax"}
DATA_FUNCTIONS = {torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze, torch.unsqueeze,
                  torch.index_select, torch.flip, torch.narrow}
DATA_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "contiguous", "squeeze", "unsqueeze", "clone",
                "index_select", "unflatten", "expand", "flip", "narrow", "detach"}
BINARY_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
                    operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum,
                    torch.minimum}
BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "__add__", "__mul__"}
INTROSPECTION_METHODS = {"size", "dim", "numel"}


def is_param_free_buildable(module: nn.Module) -> bool:
    """Our own registered modules without weights (e.g. a channel shuffle): traced as one unit."""
    return type(module).__name__ in BUILDABLE and not any(True for _ in module.parameters())


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_param_free_buildable(m) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """fx graph of `model` with every node's output shape (batch 1) in node.meta."""
    graph = _Tracer().trace(model)
    gm = fx.GraphModule(model, graph)
    ShapeProp(gm).propagate(example[:1])
    return gm


def block_shuffle_groups(perm: np.ndarray) -> int | None:
    """g if `perm` is the ShuffleNet permutation of len(perm) channels in g groups, else None."""
    c = len(perm)
    for g in range(2, c):
        if c % g == 0 and np.array_equal(perm, np.arange(c).reshape(g, c // g).T.reshape(-1)):
            return g
    return None


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _tensor_shape(node: fx.Node) -> tuple[int, ...]:
    """The shape of a node that outputs one tensor (ShapeProp recorded it)."""
    shape = _shape(node)
    assert shape is not None, node.name
    return shape


def _tensors_in(value: Any) -> list[Lab]:
    if isinstance(value, Lab):
        return [value]
    if isinstance(value, (list, tuple)):
        return [lab for v in value for lab in _tensors_in(v)]
    if isinstance(value, dict):
        return [lab for v in value.values() for lab in _tensors_in(v)]
    return []


def _unwrap(value: Any, field_name: str) -> Any:
    if isinstance(value, Lab):
        return getattr(value, field_name)
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, field_name) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, field_name) for k, v in value.items()}
    return value


class ChannelGraph:
    """The result of the analysis: classes of atoms, and where each module's channels come from."""

    def __init__(self, model: nn.Module, example: torch.Tensor, ignore: list[str] | None = None,
                 provided: dict[str, np.ndarray] | None = None, reference: ChannelGraph | None = None) -> None:
        self.model = model
        self.uf: UnionFind = reference.uf if reference is not None else UnionFind()
        self.verify = reference is not None
        self.provided = provided or {}  # verify mode: path -> classes each producer emits
        self.problems: list[str] = []
        self.uses: list[Use] = []
        self.atoms_of: dict[int, np.ndarray] = {}  # id(module) -> its output atoms (shared modules reuse them)
        self.first_input: dict[int, np.ndarray] = {}  # id(module) -> input atoms of its first call
        self.fixed_reasons: list[str] = []
        self.paths: dict[int, list[str]] = {}
        for path, module in model.named_modules(remove_duplicate=False):
            if path:
                self.paths.setdefault(id(module), []).append(path)
        self.ignore = list(ignore or [])
        was_training = model.training
        model.eval()
        try:
            try:
                self.gm = trace(model, example)
            except Exception as exc:  # data-dependent control flow, or (verify) shapes that no longer fit
                first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
                if self.verify:
                    raise UnsupportedGraph(first[:300]) from None
                raise UntraceableModel(first[:300]) from None
            self._run()
        finally:
            model.train(was_training)

    # -- union-find hooks (verify mode only checks) ------------------------------------------

    def union(self, a: int, b: int, why: str) -> None:
        if self.verify:
            if self.uf.find(a) != self.uf.find(b):
                self.problems.append(f"{why}: channels of different classes meet after pruning")
        else:
            self.uf.union(a, b)

    def fix(self, atoms, why: str) -> None:
        values = np.unique(np.asarray(atoms, dtype=np.int64))
        if self.verify:
            return
        changed = False
        for a in values:
            if self.uf.find(int(a)) != FIXED:
                self.uf.union(int(a), FIXED)
                changed = True
        if changed:
            self.fixed_reasons.append(why)

    # -- interpretation ----------------------------------------------------------------------

    def _run(self) -> None:
        env: dict[fx.Node, Any] = {}
        modules = dict(self.gm.named_modules())
        for node in self.gm.graph.nodes:
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            if node.op == "placeholder":
                env[node] = Lab.fresh(torch.zeros(_tensor_shape(node), dtype=torch.int64))
            elif node.op == "get_attr":
                obj = self.gm
                for part in node.target.split("."):
                    obj = getattr(obj, part)
                env[node] = obj
            elif node.op == "call_module":
                env[node] = self._module(node, modules[node.target], args, kwargs)
            elif node.op == "call_function":
                env[node] = self._function(node, node.target, args, kwargs)
            elif node.op == "call_method":
                env[node] = self._method(node, node.target, args, kwargs)
            elif node.op == "output":
                for lab in _tensors_in(args):
                    self.fix(self.channels(lab, "output"), "model output (logits)")

    def _module(self, node: fx.Node, m: nn.Module, args, kwargs):
        x = args[0] if args else None
        path = self.paths.get(id(m), [module_path(node)])[0]
        if isinstance(m, nn.Conv2d) and isinstance(x, Lab) and len(args) == 1 and not kwargs:
            return self._conv(node, path, m, x)
        if isinstance(m, nn.Linear) and isinstance(x, Lab) and x.t.dim() == 2 and len(args) == 1:
            return self._linear(node, path, m, x)
        if isinstance(m, NORM_MODULES) and isinstance(x, Lab) and len(args) == 1:
            labels = self.channels(x, path)
            if len(labels) != m.num_features:
                return self._unknown(node, args, kwargs, f"{path}: {type(m).__name__} size does not match its input")
            self.uses.append(Use(node.name, path, "norm", labels))
            return self._channelwise(node, x, labels)
        no_per_channel_parameters = isinstance(m, (nn.PReLU, nn.InstanceNorm2d)) and sum(p.numel() for p in m.parameters()) <= 1
        if no_per_channel_parameters and isinstance(x, Lab) and len(args) == 1:
            return self._channelwise(node, x)
        if isinstance(m, CHANNELWISE_MODULES) and isinstance(x, Lab) and len(args) == 1:
            return self._channelwise(node, x)
        if isinstance(m, DATA_MODULES):
            return self._data(node, m, args, kwargs)
        if is_param_free_buildable(m) and isinstance(x, Lab) and len(args) == 1:
            return self._permutation_module(node, path, m, x)
        return self._unknown(node, args, kwargs, f"{path}: module {type(m).__name__} is not understood by the pruner")

    def _function(self, node: fx.Node, f: Callable, args, kwargs):
        labs = _tensors_in((args, kwargs))
        if not labs:
            return f(*args, **kwargs)  # python arithmetic on sizes, constants
        if f is getattr:
            return f(args[0].t, *args[1:])  # x.shape and friends
        if f is operator.getitem and isinstance(args[0], (tuple, list)):
            return args[0][args[1]]
        if f is operator.getitem and isinstance(args[0], Lab):
            return self._data(node, f, args, kwargs)
        if f in DATA_FUNCTIONS:
            return self._data(node, f, args, kwargs)
        if f in (torch.cat, torch.concat):
            return self._cat(node, args, kwargs)
        if f in (torch.chunk, torch.split):
            return self._split(node, f.__name__, args, kwargs)
        if f in BINARY_FUNCTIONS:
            return self._binary(node, args, kwargs)
        if f in CHANNELWISE_FUNCTIONS and isinstance(args[0], Lab) and len(labs) == 1:
            return self._channelwise(node, args[0])
        if f in (torch.mean, torch.sum, torch.amax) and isinstance(args[0], Lab) and len(labs) == 1:
            return self._reduce(node, args, kwargs)
        return self._unknown(node, args, kwargs, f"{node.name}: function {getattr(f, '__name__', f)} is not understood by the pruner")

    def _method(self, node: fx.Node, name: str, args, kwargs):
        x = args[0]
        if not isinstance(x, Lab):
            return getattr(x, name)(*args[1:], **kwargs)
        if name in INTROSPECTION_METHODS:
            return getattr(x.t, name)(*args[1:], **kwargs)
        if name in DATA_METHODS:
            return self._data(node, name, args, kwargs)
        if name in ("chunk", "split"):
            return self._split(node, name, args, kwargs)
        if name in BINARY_METHODS:
            return self._binary(node, args, kwargs)
        if name in CHANNELWISE_METHODS and len(_tensors_in((args, kwargs))) == 1:
            return self._channelwise(node, x)
        if name in REDUCE_METHODS and len(_tensors_in((args, kwargs))) == 1:
            return self._reduce(node, args, kwargs)
        return self._unknown(node, args, kwargs, f"{node.name}: method .{name}() is not understood by the pruner")

    # -- rules -------------------------------------------------------------------------------

    def channels(self, x: Lab, where: str) -> np.ndarray:
        """The atom of every channel (dim 1) of `x` as a consumer sees it, after checking the
        data-movement chain that made `x` from its anchor (see module docstring)."""
        self._check_chain(x, where)
        t = x.t
        if t.dim() < 2:
            self.fix(t.reshape(-1).numpy(), f"{where}: consumes a tensor without a channel dimension")
            return np.full(1, FIXED, np.int64)
        per_channel = t.transpose(0, 1).reshape(t.shape[1], -1)
        first = per_channel[:, :1]
        mixed = (per_channel != first).any(1)
        for c in torch.nonzero(mixed).flatten().tolist():  # a channel made of several classes: keep them together
            for a in per_channel[c].unique().tolist():
                self.union(int(first[c, 0]), int(a), f"{where}: channel mixes classes")
        return first[:, 0].numpy().copy()

    def _check_chain(self, x: Lab, where: str) -> None:
        anchor = x.anchor
        if anchor is None:
            return
        a_shape, shape = tuple(anchor.t.shape), tuple(x.t.shape)
        pos = x.pos
        if shape == a_shape and torch.equal(pos, anchor.pos):
            return
        if len(a_shape) >= 2 and len(shape) == 2 and shape[1] == int(np.prod(a_shape[1:])) and torch.equal(
            pos.reshape(-1), torch.arange(pos.numel())
        ):
            return  # channel-major flatten (x.view(n, -1), torch.flatten(x, 1)) into features
        if len(shape) == len(a_shape) >= 3 and shape[1] == a_shape[1]:
            per = int(np.prod(a_shape[2:]))
            source = (pos // per) % a_shape[1]  # anchor channel of every element
            by_channel = source.transpose(0, 1).reshape(shape[1], -1)
            if bool((by_channel == by_channel[:, :1]).all()):
                perm = by_channel[:, 0].numpy()
                if np.array_equal(np.sort(perm), np.arange(len(perm))):
                    if np.array_equal(perm, np.arange(len(perm))):
                        return
                    groups = block_shuffle_groups(perm)
                    if groups is not None:
                        self._union_blocks(self.channels(anchor, where), groups, f"{where}: channel shuffle")
                        return
        self.fix(anchor.t.reshape(-1).numpy(), f"{where}: consumes channels rearranged in a way pruning cannot follow")

    def _union_blocks(self, labels: np.ndarray, blocks: int, why: str) -> None:
        """Same position in every block shares a fate (grouped convs, chunk, block shuffles)."""
        n = len(labels) // blocks
        grid = labels.reshape(blocks, n)
        for k in range(1, blocks):
            for m in range(n):
                self.union(int(grid[0, m]), int(grid[k, m]), why)

    def _emit(self, node: fx.Node, labels: np.ndarray) -> Lab:
        """A new anchor: `labels` along dim 1, broadcast to the node's real output shape."""
        shape = _tensor_shape(node)
        view = [1] * len(shape)
        view[1] = len(labels)
        return Lab.fresh(torch.from_numpy(labels).view(view).expand(shape).contiguous())

    def _producer_atoms(self, m: nn.Module, path: str, n: int) -> np.ndarray:
        if self.verify:
            return np.asarray(self.provided[path], dtype=np.int64)
        if id(m) not in self.atoms_of:
            self.atoms_of[id(m)] = self.uf.new(n)
            if any(path == p or path.startswith(p + ".") for p in self.ignore):
                self.fix(self.atoms_of[id(m)], f"{path}: in prune.ignore")
        return self.atoms_of[id(m)]

    def _consume_once(self, m: nn.Module, path: str, labels: np.ndarray) -> None:
        """A module called twice (shared weights) is sliced once: both inputs must agree."""
        first = self.first_input.setdefault(id(m), labels)
        if first is not labels and len(first) == len(labels):
            for a, b in zip(first, labels):
                self.union(int(a), int(b), f"{path}: shared module")

    def _conv(self, node: fx.Node, path: str, m: nn.Conv2d, x: Lab) -> Lab:
        labels = self.channels(x, path)
        self._consume_once(m, path, labels)
        out = self._producer_atoms(m, path, m.out_channels)
        g, cin = m.groups, len(labels)
        if g == cin and g > 1:  # depthwise (with channel multiplier k): output i*k+t lives with input i
            k = len(out) // cin
            for i in range(cin):
                for t in range(k):
                    self.union(int(out[i * k + t]), int(labels[i]), f"{path}: depthwise")
        elif g > 1:
            self._union_blocks(labels, g, f"{path}: grouped conv input")
            self._union_blocks(out, g, f"{path}: grouped conv output")
        shape = _tensor_shape(node)
        self.uses.append(Use(node.name, path, "conv", labels, out, g, m.kernel_size[0] * m.kernel_size[1],
                             int(np.prod(shape[2:]))))
        return self._emit(node, out)

    def _linear(self, node: fx.Node, path: str, m: nn.Linear, x: Lab) -> Lab:
        self._check_chain(x, path)
        features = x.t[0].numpy().copy()
        self._consume_once(m, path, features)
        out = self._producer_atoms(m, path, m.out_features)
        self.uses.append(Use(node.name, path, "linear", features, out))
        return self._emit(node, out)

    def _channelwise(self, node: fx.Node, x: Lab, labels: np.ndarray | None = None) -> Lab:
        labels = self.channels(x, node.name) if labels is None else labels
        shape = _shape(node)
        if shape is None or len(shape) < 2 or shape[1] != len(labels):
            self.fix(labels, f"{node.name}: changes the channel count")
            return Lab.fresh(torch.zeros(shape or (1,), dtype=torch.int64))
        return self._emit(node, labels)

    def _reduce(self, node: fx.Node, args, kwargs) -> Lab:
        x = args[0]
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        ndim = x.t.dim()
        if dims and all(d % ndim >= 2 for d in dims):
            return self._channelwise(node, x)
        return self._unknown(node, args, kwargs, f"{node.name}: reduces over the batch or channel dimension")

    def _data(self, node: fx.Node, op, args, kwargs):
        """Execute pure data movement on the labels and on the positions alike."""

        def call(field_name: str):
            a, k = _unwrap(args, field_name), _unwrap(kwargs, field_name)
            if isinstance(op, str):
                return getattr(a[0], op)(*a[1:], **k)
            if isinstance(op, nn.Module):
                return op(*a, **k)
            return op(*a, **k)

        labs = _tensors_in(args)
        if len(labs) != 1:
            return self._unknown(node, args, kwargs, f"{node.name}: data movement over several tensors")
        try:
            t, pos = call("t"), call("pos")
        except Exception as exc:  # verify mode on a model with hard-coded shapes
            raise UnsupportedGraph(f"{node.name}: {exc}") from None
        anchor = labs[0].root
        if isinstance(t, torch.Tensor):
            return Lab(t, pos, anchor)
        if isinstance(t, (tuple, list)):
            return type(t)(Lab(a, b, anchor) for a, b in zip(t, pos))
        return t

    def _cat(self, node: fx.Node, args, kwargs) -> Lab:
        tensors = list(args[0])
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if not all(isinstance(v, Lab) for v in tensors):
            return self._unknown(node, args, kwargs, f"{node.name}: cat with constant tensors")
        parts = [self.channels(v, node.name) for v in tensors]
        ndim = tensors[0].t.dim()
        if dim % ndim == 1:
            return self._emit(node, np.concatenate(parts))
        for other in parts[1:]:  # cat along batch/space: channel i of every input is the same channel
            if len(other) != len(parts[0]):
                return self._unknown(node, args, kwargs, f"{node.name}: cat of different channel counts")
            for a, b in zip(parts[0], other):
                self.union(int(a), int(b), f"{node.name}: cat")
        return self._emit(node, parts[0])

    def _split(self, node: fx.Node, name: str, args, kwargs):
        """`chunk(k, dim=1)`, and `split(s, dim=1)` with s computed from the tensor's own shape (the
        same thing), cut equal parts again after pruning: position m of every part shares a fate.
        A literal size or a list of sizes keeps cutting at the same place: those channels stay."""
        x, rest = args[0], list(args[1:])
        amount = kwargs.get("chunks", kwargs.get("split_size_or_sections", kwargs.get("split_size", rest[0] if rest else None)))
        dim = kwargs.get("dim", rest[1] if len(rest) > 1 else 0)
        if dim % x.t.dim() != 1:
            return self._data(node, name, args, kwargs)
        labels = self.channels(x, node.name)
        c = len(labels)
        parts = None
        if name == "chunk" and isinstance(amount, int) and amount >= 1 and c % amount == 0:
            parts = amount
        elif name == "split" and isinstance(amount, int) and amount >= 1 and c % amount == 0:
            traced = node.args[1] if len(node.args) > 1 else next((v for k, v in node.kwargs.items() if k != "dim"), None)
            parts = c // amount if isinstance(traced, fx.Node) else None
        if parts is None:
            self.fix(labels, f"{node.name}: {name} into unequal or fixed-size parts")
            return tuple(Lab.fresh(torch.full_like(p, FIXED)) for p in getattr(x.t, name)(amount, 1))
        if parts > 1:
            self._union_blocks(labels, parts, f"{node.name}: {name}")
        whole = torch.from_numpy(labels).view([1, c] + [1] * (x.t.dim() - 2)).expand(x.t.shape).contiguous()
        return tuple(Lab.fresh(p.contiguous()) for p in whole.split(c // parts, 1))

    def _binary(self, node: fx.Node, args, kwargs) -> Lab:
        labs = [a for a in list(args) + list(kwargs.values()) if isinstance(a, Lab)]
        others = [a for a in list(args[:2]) if not isinstance(a, Lab)]
        shape = _shape(node)
        if len(labs) == 2:
            a, b = labs
            la, lb = self.channels(a, node.name), self.channels(b, node.name)
            if len(la) != len(lb):
                if len(la) == 1 or len(lb) == 1:  # broadcast of one channel over all: no coupling by position
                    self.fix(la if len(la) == 1 else lb, f"{node.name}: broadcast across channels")
                    return self._emit(node, la if len(la) > 1 else lb)
                return self._unknown(node, args, kwargs, f"{node.name}: elementwise op on different channel counts")
            for x, y in zip(la, lb):
                if x != y:
                    self.union(int(x), int(y), f"{node.name}: elementwise op")
            return self._emit(node, la)
        x = labs[0]
        for other in others:
            if isinstance(other, torch.Tensor) and other.numel() > 1:
                labels = self.channels(x, node.name)
                self.fix(labels, f"{node.name}: elementwise op with a constant tensor")
                if shape and len(shape) >= 2 and shape[1] == len(labels):
                    return self._emit(node, labels)
                return self._unknown(node, args, kwargs, node.name)
        return self._channelwise(node, x)

    def _permutation_module(self, node: fx.Node, path: str, m: nn.Module, x: Lab) -> Lab:
        """A parameter-free module of ours (e.g. ChannelShuffle): executed on labels like data
        movement, recorded so that it is rebuilt for the new channel count."""
        labels = self.channels(x, path)
        out = self._data(node, m, (x,), {})
        if not isinstance(out, Lab) or out.t.shape != x.t.shape:
            return self._unknown(node, (x,), {}, f"{path}: {type(m).__name__} changes the shape")
        self.uses.append(Use(node.name, path, "permute", labels))
        return out

    def _unknown(self, node: fx.Node, args, kwargs, why: str):
        for lab in _tensors_in((args, kwargs)):
            self._check_chain(lab, node.name)
            self.fix(lab.root.t.reshape(-1).numpy(), why)
            self.fix(lab.t.reshape(-1).numpy(), why)
        meta = node.meta.get("tensor_meta")

        def fixed(m):
            if hasattr(m, "shape"):
                return Lab.fresh(torch.full(tuple(m.shape), FIXED, dtype=torch.int64))
            if isinstance(m, (tuple, list)):
                return type(m)(fixed(v) for v in m)
            return None

        return fixed(meta) if meta is not None else None

    # -- results -----------------------------------------------------------------------------

    def classes(self, atoms: np.ndarray) -> np.ndarray:
        return self.uf.roots(np.asarray(atoms, dtype=np.int64))
