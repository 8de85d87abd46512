"""A read-only run folder and a full disk while running (issue 11.8): exit 1, one `error:` line naming
the path, the completed stages intact.

Real file systems, not patched `open`: a read-only tmpfs mount (root ignores chmod) and a tmpfs too
small for the next stage's weights. Both need mount permission (root with CAP_SYS_ADMIN); without
it the tests are skipped, saying so.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_pipeline.cli import main

from .conftest import write

RECIPE = """\
name: tiny-disk
seed: 0
data: {dataset: digits, image_size: 16, batch_size: 64}
model: {arch: vgg_small, width: 0.5}
stages:
  - train: {epochs: 1, lr: 0.05}
  - prune: {method: l1, ratio: 0.5, round_to: 4}
"""
CHANGE_LAST_STAGE = ["--set", "stages.prune.ratio=0.3"]


def mount_tmpfs(where: Path, size_kib: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); needs root with CAP_SYS_ADMIN")


def unmount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True, check=False)


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def kib_used(folder: Path) -> int:
    """What the folder's files take on a tmpfs: whole 4 KiB pages per file (directories take none)."""
    return sum(-(-p.stat().st_size // 4096) * 4 for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory) -> tuple[Path, Path]:
    """(recipe, run folder) after a successful train -> prune run on ordinary disk."""
    root = tmp_path_factory.mktemp("disk")
    recipe = write(root / "tiny-disk.yaml", RECIPE)
    run = root / "run"
    assert main(["run", str(recipe), "--out", str(run)]) == 0
    return recipe, run


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.e2e
@pytest.mark.slow
def test_read_only_run_folder_is_exit_1_naming_the_path(completed_run, tmp_path, capsys):
    recipe, original = completed_run
    mnt = tmp_path / "ro"
    mount_tmpfs(mnt, 64 * 1024)
    try:
        run = mnt / "run"
        shutil.copytree(original, run)
        before = hashes(run)
        assert subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True).returncode == 0
        capsys.readouterr()
        assert main(["run", str(recipe), "--out", str(run), *CHANGE_LAST_STAGE]) == 1
        line = one_error_line(capsys)
        assert line.startswith(f"error: {run}") and "Read-only file system" in line, line
        assert hashes(run) == before
    finally:
        unmount(mnt)


@pytest.mark.e2e
@pytest.mark.slow
def test_full_disk_is_exit_1_naming_the_path_and_keeps_completed_stages(completed_run, tmp_path, capsys):
    recipe, original = completed_run
    mnt = tmp_path / "full"
    mount_tmpfs(mnt, kib_used(original) + 12)  # room for a small file or two, not for the new stage's weights
    try:
        run = mnt / "run"
        shutil.copytree(original, run)
        train_before = hashes(run / "01-train")
        capsys.readouterr()
        assert main(["run", str(recipe), "--out", str(run), *CHANGE_LAST_STAGE]) == 1
        line = one_error_line(capsys)
        assert line.startswith(f"error: {run}") and "No space left on device" in line, line
        assert hashes(run / "01-train") == train_before  # the completed stage is untouched
        assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no half-written stage left
    finally:
        unmount(mnt)
