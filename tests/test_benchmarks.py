"""Benchmarks are run by hand, rarely: at least keep every import they make from the package valid."""

import ast
import importlib
from pathlib import Path

import pytest

from .conftest import REPO

BENCHMARKS = sorted((REPO / "benchmarks").glob("*.py"))


def package_imports(path: Path) -> list[tuple[str, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edge_pipeline":
            found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_every_package_import_of_a_benchmark_resolves(path):
    imports = package_imports(path)
    assert imports, f"{path.name} imports nothing from edge_pipeline?"
    for module_name, name in imports:
        module = importlib.import_module(module_name)
        if not hasattr(module, name):
            importlib.import_module(f"{module_name}.{name}")  # a submodule; raises if it is neither
