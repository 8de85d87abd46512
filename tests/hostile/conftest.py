"""Fixtures of the hostile-input tests: a fresh sandbox per case, and real artifacts built once per
session (tiny TFLite files through the project's own export path, a tiny run folder made by the CLI)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .builders import tiny_recipe
from .harness import CLI, Sandbox


class Shared:
    """Real artifacts the setups copy into their sandbox; each is built on first use, once."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self._factory = factory
        self._cache: dict[str, object] = {}

    def tflite(self) -> dict[str, Path]:
        """{"float32", "int8", "samples"}: a 2-conv net at 16x16x3, 4 classes (~15 s, once)."""
        if "tflite" not in self._cache:
            from tests.profiling.tiny_models import make_tiny_models

            self._cache["tflite"] = make_tiny_models(self._factory.mktemp("hostile-tflite"))
        return self._cache["tflite"]  # type: ignore[return-value]

    def tiny_run(self) -> Path:
        """A finished run folder of `tiny_recipe()` (train with 0 epochs), made by the real CLI."""
        if "run" not in self._cache:
            work = self._factory.mktemp("hostile-run")
            (work / "tiny.yaml").write_text(tiny_recipe())
            env = dict(os.environ, HOME=str(work / "home"))  # library caches stay out of the real HOME
            proc = subprocess.run(CLI + ["run", "tiny.yaml"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"the shared tiny run failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
            self._cache["run"] = work / "runs" / "tiny"
        return self._cache["run"]  # type: ignore[return-value]

    def copy_run(self, sandbox: Sandbox, relative: str = "runs/tiny") -> Path:
        """The shared run folder copied into the sandbox's working folder, with its recipe beside it."""
        target = sandbox.work / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.tiny_run(), target, symlinks=True)
        return target


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> Shared:
    return Shared(tmp_path_factory)


@pytest.fixture
def sandbox(tmp_path: Path, shared: Shared):
    box = Sandbox(tmp_path / "sandbox", shared)
    try:
        yield box
    finally:
        box.close()
