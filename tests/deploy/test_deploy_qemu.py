"""Deploying to the emulated aarch64 device: the release goes into the qemu sysroot's tree, and the
runner runs on the ARM builds of Python, numpy, Pillow and ai-edge-litert on the bundle's test
images, agreeing with this host. Needs `make emulator` (built on first use otherwise, with network)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.deploy.conftest import current, deploy, release_dirs

pytestmark = pytest.mark.skipif(shutil.which("qemu-aarch64-static") is None, reason="qemu-user-static not installed (make system-deps)")


@pytest.mark.slow  # two emulated runner starts (~10-20 s each)
def test_deploy_runs_the_runner_on_emulated_aarch64_and_agrees_with_the_host(deploy_run, tmp_path, capsys):
    root = tmp_path / "sysroot-root"
    app = root / "tinydeploy"
    for precision in ("int8", "float32"):
        code, out, err = deploy(capsys, str(deploy_run), "--device", "qemu-aarch64", "--root", str(root), "--precision", precision)
        assert code == 0, err
        verified = json.loads((app / "current" / "release.json").read_text())["verified"]
        assert verified["arch"] == "aarch64" and verified["python"].startswith("3.11")
        assert verified["runtime"] == {"name": "ai-edge-litert", "version": "2.1.0"}
        assert verified["samples"] == 16 and verified["top1_agreement"] == 1.0
        assert verified["max_abs_diff"] <= verified["tolerance"] and verified["accuracy"] == verified["host_accuracy"]
    first, second = release_dirs(app)
    assert current(app) == second and second.split("-")[1] == "float32"
    code, out, _ = deploy(capsys, "--rollback", "--device", "qemu-aarch64", "--root", str(root))
    assert code == 0 and current(app) == first
