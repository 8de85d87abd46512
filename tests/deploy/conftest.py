"""Fixtures for the deploy tests: ONE tiny export bundle per session (digits at 16 px, trained one
epoch, int8 with uint8 input and output, exported: ~40 s), device files, and the real OpenSSH
server on loopback and tiny TFLite models shared with the profiling tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_pipeline import cli
from tests.conftest import write
from tests.profiling.conftest import device_file, sshd, tiny_models  # noqa: F401  (fixtures shared with profiling)

DEPLOY_RECIPE = """\
name: tinydeploy
seed: 0
data: {dataset: digits, image_size: 16, batch_size: 64}
model: {arch: vgg_small, width: 0.5}
stages:
  - train: {epochs: 1, lr: 0.05}
  - quantize: {mode: int8, calibration_samples: 64, io_type: uint8}
  - export: {format: tflite}
"""

LOCAL_DEVICE = "arch: x86_64\ntransport: {kind: local}\n"


@pytest.fixture(scope="session")
def deploy_run(tmp_path_factory) -> Path:
    """A finished run whose export folder is the bundle every deploy test installs."""
    from edge_pipeline.pipeline import Pipeline
    from edge_pipeline.recipe import load_recipe

    folder = tmp_path_factory.mktemp("deploy-run")
    recipe = write(folder / "tinydeploy.yaml", DEPLOY_RECIPE)
    Pipeline(load_recipe(recipe), folder / "run").run()
    return folder / "run"


@pytest.fixture(scope="session")
def bundle_dir(deploy_run) -> Path:
    return deploy_run / "03-export"


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory) -> Path:
    """A real Python with neither numpy nor a TFLite runtime (a board where nothing was installed)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return venv / "bin" / "python"


def local_device(folder: Path, name: str = "box", python: str | None = None) -> Path:
    body = LOCAL_DEVICE if python is None else f"arch: x86_64\ntransport: {{kind: local, python: {python!r}}}\n"
    return device_file(folder, name, body)


def deploy(capsys, *argv: str) -> tuple[int, str, str]:
    """`edge-pipeline deploy ...` in this process: (exit code, stdout, stderr)."""
    code = cli.main(["deploy", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def release_dirs(app_dir: Path) -> list[str]:
    releases = app_dir / "releases"
    return sorted(p.name for p in releases.iterdir()) if releases.is_dir() else []


def current(app_dir: Path) -> str | None:
    link = app_dir / "current"
    return Path(str(link.readlink())).name if link.is_symlink() else None
