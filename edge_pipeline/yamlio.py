"""Safe YAML loading that remembers where every value came from, with bounded cost.

`load_located(text, filename)` returns the plain Python data plus a map from each value's path
(a tuple of keys and list indices) to its 1-based line, so a schema error deep in a recipe can be
reported as `recipe.yaml:9: stages[2].prune.ratio: ...`. Duplicate mapping keys are an error
(PyYAML silently keeps the last one, which hides typos in long recipes).

Recipes and device files may come from anyone (a cloned repository, a shared folder), so loading
is bounded before anything walks the data: the text size, the nesting depth (PyYAML composes
recursively: 10,000 nested brackets would end in a RecursionError), and the number of nodes once
aliases are expanded (nine nested aliases of nine items each are 9**9 nodes: the "billion laughs"
bomb). A recursive alias (`&a [*a]`) is refused too: the data would be infinite. Every problem is
one `UserError` line naming the file and line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import UserError

# Recipes and device files are a few KiB, a few hundred nodes, at most ~6 levels deep.
MAX_TEXT_BYTES = 1 << 20
MAX_DEPTH = 100
MAX_NODES = 100_000  # after alias expansion


@dataclass
class Located:
    data: Any
    filename: str
    lines: dict[tuple, int] = field(default_factory=dict)

    def line_of(self, loc: tuple) -> int | None:
        """Line of the deepest known prefix of `loc` (a missing key points at its parent)."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None


class _LimitExceeded(Exception):
    """Raised inside the loader; turned into a UserError with the file name outside it."""

    def __init__(self, mark: yaml.Mark | None, message: str) -> None:
        super().__init__(message)
        self.line = mark.line + 1 if mark is not None else 1
        self.message = message


class BoundedSafeLoader(yaml.SafeLoader):
    """SafeLoader that bounds nesting depth and alias expansion while composing the node graph,
    and locates values its constructors cannot build (e.g. `2024-13-45`, a 5000-digit int)."""

    def __init__(self, stream: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> None:
        super().__init__(stream)
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self._depth = 0
        # id(node) -> number of nodes in its subtree with every alias expanded; a node is only in
        # here once it is complete, so an alias to an unfinished node is a recursive alias.
        self._expanded: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        is_alias = isinstance(event, yaml.AliasEvent)
        if self._depth >= self.max_depth:
            raise _LimitExceeded(event.start_mark, self._too_deep())
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if is_alias:
            if id(node) not in self._expanded:
                raise _LimitExceeded(event.start_mark, f"alias *{event.anchor} refers to a node that contains it "
                                     "(a recursive alias); copy the values instead")
            return node
        size = 1 + sum(self._expanded[id(child)] for child in _children(node))
        if size > self.max_nodes:
            raise _LimitExceeded(node.start_mark, f"more than {self.max_nodes} values once aliases are expanded "
                                 "(an alias bomb?); use fewer nested aliases")
        self._expanded[id(node)] = size
        return node

    def fetch_flow_collection_start(self, TokenClass: type) -> None:
        # The scanner looks ahead over every open `[`/`{` for each token (a quadratic cost):
        # 10,000 brackets on one line take seconds before the composer sees the depth.
        if self.flow_level >= self.max_depth:
            raise _LimitExceeded(self.get_mark(), self._too_deep())
        super().fetch_flow_collection_start(TokenClass)

    def _too_deep(self) -> str:
        return f"nested deeper than {self.max_depth} levels; a recipe or device file is a few levels deep, flatten it"

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # ValueError, OverflowError, ...: a scalar PyYAML cannot build
            first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise _LimitExceeded(node.start_mark, f"invalid value {_preview(node)} ({first})") from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _preview(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
        return repr(text)
    return f"({node.tag})"


def load_located(text: str, filename: str, max_bytes: int = MAX_TEXT_BYTES) -> Located:
    """Parse one YAML document; any problem is a one-line UserError `FILE:LINE: ...`."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise UserError(f"{filename}: {size} bytes, more than the {max_bytes} bytes a recipe or device file may have; "
                        "is this the right file?")
    lines: dict[tuple, int] = {}
    data = _load(text, filename, lambda node: _walk(node, (), lines, filename), empty={})
    return Located(data, filename, lines or {(): 1})


def load_value(text: str, label: str) -> Any:
    """A small YAML value (e.g. the VALUE of `--set PATH=VALUE`), with the same bounds."""
    return _load(text, label, lambda node: None, empty=None)


def _load(text: str, filename: str, inspect: Callable[[yaml.Node], None], empty: Any) -> Any:
    """Compose (bounded), let `inspect` see the node graph, then construct (`empty` if no document)."""
    loader = None
    try:
        loader = BoundedSafeLoader(text)  # the reader checks for unprintable characters right here
        node = loader.get_single_node()
        if node is None:
            return empty
        inspect(node)
        return loader.construct_document(node)
    except (yaml.YAMLError, _LimitExceeded) as exc:
        raise _user_error(exc, text, filename) from None
    finally:
        if loader is not None:
            loader.dispose()


def _user_error(exc: Exception, text: str, filename: str) -> UserError:
    if isinstance(exc, _LimitExceeded):
        return UserError(f"{filename}:{exc.line}: {exc.message}")
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(0, exc.position)) + 1
        what = "a NUL byte" if exc.character in (0, "\0") else f"the non-printable character U+{_codepoint(exc.character):04X}"
        return UserError(f"{filename}:{line}: contains {what}; a recipe or device file is plain text, remove it")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = (exc.problem or exc.context or "invalid YAML").splitlines()[0]
        return UserError(f"{filename}:{line}: YAML syntax error: {problem}")
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UserError(f"{filename}: YAML error: {first}")


def _codepoint(character: int | str) -> int:
    return character if isinstance(character, int) else ord(character)


def _walk(node: yaml.Node, loc: tuple, lines: dict[tuple, int], filename: str) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise UserError(f"{filename}:{key_node.start_mark.line + 1}: mapping keys must be plain names")
            key = key_node.value
            if key == "<<":  # merge key: the merged values keep their own lines
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                where = dotted(loc + (key,))
                raise UserError(
                    f"{filename}:{line}: {where}: duplicate key {key!r} (first defined on line {seen[key]}); "
                    "remove one of them"
                )
            seen[key] = line
            _walk(value_node, loc + (key,), lines, filename)
            lines[loc + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, loc + (index,), lines, filename)


def dotted(loc: tuple | list) -> str:
    """("stages", 2, "prune", "ratio") -> "stages[2].prune.ratio"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
