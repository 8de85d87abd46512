"""Deploying over the ssh transport to the real OpenSSH server on loopback (tests/profiling/conftest.py):
deploy, list, rollback, remove; a connection cut or a kill during the upload leaves `current` as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_pipeline.deploy.shell import STALE_INCOMING_MINUTES
from tests.deploy.conftest import current, deploy, release_dirs
from tests.deploy.proxy import BreakingProxy

REPO = Path(__file__).resolve().parents[2]
UPLOAD_LIMIT = 24 * 1024  # more than key exchange + any command, less than the release's tar (~65 KiB)


@pytest.fixture
def board(sshd, tmp_path):
    """(device file, root on the target): the target's root is a fresh folder of this test."""
    root = sshd.root / tmp_path.name
    root.mkdir()
    return str(sshd.device(tmp_path, name="board")), root


def test_deploy_list_rollback_remove_over_ssh(deploy_run, board, capsys):
    device, root = board
    app = root / "tinydeploy"
    code, out, err = deploy(capsys, str(deploy_run), "--device", device, "--root", str(root))
    assert code == 0, err
    first = current(app)
    record = json.loads((app / "releases" / first / "release.json").read_text())
    assert record["device"] == "board" and record["verified"]["samples"] == 16
    assert record["verified"]["top1_agreement"] == 1.0 and record["verified"]["max_abs_diff"] == 0.0
    assert "board: current -> " in out and release_dirs(app) == [first]

    assert deploy(capsys, str(deploy_run), "--device", device, "--root", str(root), "--precision", "float32")[0] == 0
    second = current(app)
    code, out, _ = deploy(capsys, "--list", "--json", "--device", device, "--root", str(root))
    listed = json.loads(out)
    assert [(r["id"], r["current"], r["precision"]) for r in listed] == [(first, False, "int8"), (second, True, "float32")]

    code, out, _ = deploy(capsys, "--rollback", "--device", device, "--root", str(root))
    assert code == 0 and f"current {second} -> {first}" in out and current(app) == first
    code, out, _ = deploy(capsys, "--remove", second, "--device", device, "--root", str(root))
    assert code == 0 and release_dirs(app) == [first] and current(app) == first


def test_rollback_refuses_a_damaged_release(deploy_run, board, capsys):
    device, root = board
    app = root / "tinydeploy"
    for precision in ("int8", "float32"):
        assert deploy(capsys, str(deploy_run), "--device", device, "--root", str(root), "--precision", precision)[0] == 0
    first, second = release_dirs(app)
    (app / "releases" / first / "labels.txt").write_text("tampered\n")
    code, _, err = deploy(capsys, "--rollback", "--device", device, "--root", str(root))
    assert code == 1 and f"release {first} is damaged (labels.txt changed); not switching" in err
    assert current(app) == second


def test_connection_cut_during_upload_leaves_current(deploy_run, sshd, board, tmp_path, capsys):
    device, root = board
    app = root / "tinydeploy"
    assert deploy(capsys, str(deploy_run), "--device", device, "--root", str(root))[0] == 0
    before = current(app)
    proxy = BreakingProxy(sshd.port, UPLOAD_LIMIT, "cut")
    try:
        via_proxy = str(sshd.device(tmp_path, name="flaky", port=str(proxy.port)))
        known = Path(sshd.known_hosts)
        known_text = known.read_text()
        known.write_text(known_text + known_text.replace(f"]:{sshd.port} ", f"]:{proxy.port} "))  # the same host key
        code, _, err = deploy(capsys, str(deploy_run), "--device", via_proxy, "--root", str(root))
    finally:
        proxy.close()
        known.write_text(known_text)
    assert proxy.tripped.is_set()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(errors) == 1 and errors[0].startswith("error: device flaky: ssh to ")
    assert current(app) == before and release_dirs(app) == [before]  # the abort removed the partial upload


def test_kill_during_upload_leaves_current(deploy_run, sshd, board, tmp_path, capsys):
    device, root = board
    app = root / "tinydeploy"
    assert deploy(capsys, str(deploy_run), "--device", device, "--root", str(root))[0] == 0
    before = current(app)
    proxy = BreakingProxy(sshd.port, UPLOAD_LIMIT, "stall")
    known = Path(sshd.known_hosts)
    known_text = known.read_text()
    try:
        known.write_text(known_text + known_text.replace(f"]:{sshd.port} ", f"]:{proxy.port} "))
        via_proxy = str(sshd.device(tmp_path, name="hung", port=str(proxy.port)))
        proc = subprocess.Popen([sys.executable, "-m", "edge_pipeline.cli", "deploy", str(deploy_run), "--device", via_proxy,
                                 "--root", str(root)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert proxy.tripped.wait(120), "the upload never started"
            os.kill(proc.pid, signal.SIGKILL)  # mid-upload: no cleanup code runs at all
        finally:
            proc.kill()
            proc.wait(30)
    finally:
        proxy.close()
        known.write_text(known_text)
    assert current(app) == before
    assert json.loads((app / "current" / "release.json").read_text())["id"] == before
    # The killed upload stays hidden (it is no release); the next deploy removes it once it is idle.
    leftovers = [p for p in (app / "releases").iterdir() if p.name.startswith(".incoming-")]
    assert len(leftovers) == 1 and release_dirs(app) == sorted([before, leftovers[0].name])
    stale = time.time() - (STALE_INCOMING_MINUTES + 5) * 60
    os.utime(leftovers[0], (stale, stale))
    assert deploy(capsys, str(deploy_run), "--device", device, "--root", str(root))[0] == 0
    assert not leftovers[0].exists() and current(app) != before and len(release_dirs(app)) == 2


def test_unreachable_board_is_one_error(deploy_run, sshd, tmp_path, capsys):
    from tests.profiling.conftest import free_port

    device = str(sshd.device(tmp_path, name="down", port=str(free_port())))
    code, out, err = deploy(capsys, str(deploy_run), "--device", device, "--root", str(sshd.root))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "cannot reach" in errors[0] and "Connection refused" in errors[0]
    assert "down    FAILED" in out
