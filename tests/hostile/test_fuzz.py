"""Fuzz the shipped recipes and device files (issue 11): hypothesis mutates their parsed data (drop,
duplicate and rename keys; values of other types, huge ints, NaN, long and unicode strings, nesting,
None) and their YAML text (byte flips, truncation, inserted tabs, anchors, aliases, tags). `validate`
must answer every mutant with exit 0 or 2 and at most one block of `error:` lines, never a traceback;
the device-file loader must return a profile or raise a one-line `UserError`, nothing else.

Seeded (`derandomize=True`, no example database), 1,000 mutants per run (~10 s), in-process for speed.
"""

from __future__ import annotations

import copy
import io
import math
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_pipeline.cli import main
from edge_pipeline.errors import UserError
from edge_pipeline.profiling.devices import load_device_file

from .harness import REPO

FUZZ = settings(
    derandomize=True, database=None, deadline=None, print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


def _shipped(kind: str) -> dict[str, str]:
    """name -> text of every shipped recipe or device file (wherever the catalog lives)."""
    folders = [REPO / kind, REPO / "edge_pipeline" / "catalog" / kind]
    files = {p.resolve() for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")}
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(files)}


RECIPES = _shipped("recipes")
DEVICES = _shipped("devices")


# ---------------------------------------------------------------------------------------------------
# Values and mutations

HUGE_INTS = [2**31, 2**32, 2**63, 2**64, 10**30, -(2**63), -1, 0, 10**400]
ODD_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]
ODD_STRINGS = ["", " ", "\t", "\n", "a" * 300, "é" * 200, "../../etc/passwd", "-oProxyCommand=true", "$(true)",
               "`true`", "%n%s", "\u202e", "\ufeff", "\x00", "x" * 5000, "torchvision:", "host; true", "1e12"]


def scalar_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(), st.sampled_from(HUGE_INTS), st.integers(), st.sampled_from(ODD_FLOATS),
        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(ODD_STRINGS), st.text(max_size=40),
    )


def hostile_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        scalar_values(),
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
        max_leaves=12,
    )


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside the parsed document (the root is ())."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, prefix + (index,))
    return found


def _parent(doc: Any, path: tuple) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


def mutate(doc: Any, data: st.DataObject) -> Any:
    """One structural mutation at a drawn path; returns the (possibly new) document."""
    path = data.draw(st.sampled_from(_paths(doc)), label="path")
    action = data.draw(st.sampled_from(["drop", "duplicate", "rename", "replace", "nest", "none"]), label="action")
    if not path:  # the root: replace or wrap the whole document
        if action in ("replace", "none"):
            return None if action == "none" else data.draw(hostile_values())
        return [doc] if action == "nest" else doc
    parent, last = _parent(doc, path), path[-1]
    if action == "drop":
        del parent[last]
    elif action == "duplicate":
        if isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
        else:
            parent[f"{last}_"] = copy.deepcopy(parent[last])
    elif action == "rename" and isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=20), label="new key")] = parent.pop(last)
    elif action == "replace":
        parent[last] = data.draw(hostile_values(), label="value")
    elif action == "nest":
        depth = data.draw(st.sampled_from([1, 2, 5, 40, 150]), label="depth")
        value = parent[last]
        for _ in range(depth):
            wrap_in_list = data.draw(st.booleans(), label="list or mapping")
            value = [value] if wrap_in_list else {"x": value}
        parent[last] = value
    else:
        parent[last] = None
    return doc


SNIPPETS = ["\t", "&a ", "*a", "*undefined", "!!python/object/apply:os.getcwd [] ", "!!python/name:os.getcwd ",
            "!custom ", "!!binary ", "!!set ", "!!omap ", "!!str ", "!!int ", "!!float ", "!!timestamp ", "<<: *a\n",
            "? ", "- ", ": ", "{", "}", "[", "]", "'", '"', "\\", "%YAML 1.1\n", "---\n", "...\n", "\0", "\ufeff", "#",
            "|\n", ">-\n", "~", ".nan", "1e400", "0x7fffffffffffffffff", "2001-12-14t21:59:43.10-05:00",
            "&x [1, 2]\n", "seed: 1\n", "name: dup\n", "  extra: &e {a: 1}\n", "stages: *e\n", "\r", "\x85", "\u2028"]


def text_mutation(raw: bytes, data: st.DataObject) -> bytes:
    action = data.draw(st.sampled_from(["flip", "truncate", "insert", "insert_line"]), label="text action")
    if not raw:
        return raw
    at = data.draw(st.integers(0, len(raw) - 1), label="offset")
    if action == "flip":
        return raw[:at] + bytes([data.draw(st.integers(0, 255), label="byte")]) + raw[at + 1:]
    if action == "truncate":
        return raw[:at]
    snippet = data.draw(st.sampled_from(SNIPPETS), label="snippet").encode("utf-8")
    if action == "insert_line":
        at = raw.rfind(b"\n", 0, at) + 1
    return raw[:at] + snippet + raw[at:]


# ---------------------------------------------------------------------------------------------------
# The properties


def _validate(path: Path) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        code = main(["validate", str(path)])
    return code, err.getvalue()


def _assert_clean(code: int, stderr: str) -> None:
    assert code in (0, 2), f"exit {code}: {stderr[-500:]}"
    assert "Traceback" not in stderr, stderr[-2000:]
    lines = stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    if code == 2:
        assert errors, f"exit 2 without an error: line: {stderr[-500:]}"
        assert errors == list(range(errors[0], errors[0] + len(errors))), f"error lines not one block: {stderr}"
    else:
        assert not errors, stderr


def _dump(doc: Any) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode("utf-8")


def _check_device(path: Path) -> None:
    try:
        load_device_file(path)
    except UserError as exc:
        assert "\n" not in str(exc).strip(), f"a multi-line device error: {exc}"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _structural_mutant(path, files: dict[str, str], data) -> object:
    """One of `files`, parsed, mutated 1-3 times as data, dumped back to `path`."""
    name = data.draw(st.sampled_from(sorted(files)), label="file")
    doc = yaml.safe_load(files[name])
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        doc = mutate(doc, data)
    path.write_bytes(_dump(doc))
    return path


def test_shipped_files_are_found():
    assert "quickstart.yaml" in RECIPES and "host.yaml" in DEVICES


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_validate_survives_structural_mutations(scratch, data):
    _assert_clean(*_validate(_structural_mutant(scratch / "structural.yaml", RECIPES, data)))


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_validate_survives_text_mutations(scratch, data):
    name = data.draw(st.sampled_from(sorted(RECIPES)), label="recipe")
    raw = RECIPES[name].encode("utf-8")
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        raw = text_mutation(raw, data)
    path = scratch / "text.yaml"
    path.write_bytes(raw)
    _assert_clean(*_validate(path))


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_device_loader_survives_structural_mutations(scratch, data):
    _check_device(_structural_mutant(scratch / "device.yaml", DEVICES, data))


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_device_loader_survives_text_mutations(scratch, data):
    name = data.draw(st.sampled_from(sorted(DEVICES)), label="device file")
    raw = DEVICES[name].encode("utf-8")
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        raw = text_mutation(raw, data)
    path = scratch / "device-text.yaml"
    path.write_bytes(raw)
    _check_device(path)
