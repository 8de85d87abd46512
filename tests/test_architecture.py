"""The layer contract (import-linter, configured in pyproject.toml) and the CLI's light import paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "tensorflow", "torchvision", "onnx", "numpy")


def test_import_contracts_hold():
    """Layers one way, no cycles between siblings, no heavy imports from the fast paths."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module", ["edge_pipeline.recipe", "edge_pipeline.cli", "edge_pipeline.stagedoc"])
def test_fast_path_modules_import_nothing_heavy(module):
    """What `--help`, `validate` and `stages` load: no torch, TensorFlow, numpy or stage run module."""
    code = (
        f"import sys, {module}\n"
        "import edge_pipeline.recipe as r\n"
        "r.load_recipe(sys.argv[1])\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "runners = [m for m in sys.modules if m.startswith('edge_pipeline.stages.runners')]\n"
        "print(heavy, runners)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "recipes" / "quickstart.yaml")],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[] []"


def test_every_stage_has_a_run_module_and_a_light_config():
    """Each registered stage's config module is importable without its run module, which exists."""
    from importlib.util import find_spec

    from edge_pipeline.stages import STAGES

    for name in STAGES.registered():
        assert find_spec(f"edge_pipeline.stages.runners.{name}") is not None, name
