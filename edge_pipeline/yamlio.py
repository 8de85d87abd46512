"""Safe YAML loading that remembers where every value came from.

`load_located(text, filename)` returns the plain Python data plus a map from each value's path
(a tuple of keys and list indices) to its 1-based line, so a schema error deep in a recipe can be
reported as `recipe.yaml:9: stages[2].prune.ratio: ...`. Duplicate mapping keys are an error
(PyYAML silently keeps the last one, which hides typos in long recipes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import UserError

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


def load_located(text: str, filename: str) -> Located:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Located({}, filename, {(): 1})
        lines: dict[tuple, int] = {}
        _walk(node, (), lines, filename)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise UserError(f"{filename}:{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:  # pragma: no cover - non-marked errors are rare
        raise UserError(f"{filename}: YAML error: {exc}") from None
    finally:
        loader.dispose()
    return Located(data, filename, lines)


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
