"""The ssh transport end to end against a real sshd on 127.0.0.1 (tests/profiling/conftest.py), and
its failure modes: each is one clear `error:` line, exit 2, and leaves nothing on the target."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import numpy as np
import pytest

from edge_pipeline import cli
from edge_pipeline.profiling.devices import load_device_file
from edge_pipeline.profiling.runner import profile_model
from edge_pipeline.profiling.transports import make_transport
from tests.profiling.conftest import free_port, keygen


def test_profile_over_ssh_end_to_end(sshd, tiny_models, tmp_path):
    device = load_device_file(sshd.device(tmp_path))
    profile = profile_model(tiny_models["int8"], device, samples=np.load(tiny_models["samples"]))
    assert profile["transport"] == "ssh" and profile["valid"] and profile["latency_ms"]["runs"] >= 10
    assert profile["runtime"]["name"] == "ai-edge-litert" and profile["peak_rss_mb"] > 10
    assert profile["outputs_check"]["match"]
    assert sshd.leftovers() == []  # the private temp dir is gone


def test_profile_command_over_ssh(sshd, tiny_models, tmp_path, capsys):
    out = tmp_path / "p.json"
    code = cli.main(["profile", str(tiny_models["float32"]), "--device-file", str(sshd.device(tmp_path)), "--out", str(out),
                     "--inputs", str(tiny_models["samples"])])
    assert code == 0 and "loopback: model_float32.tflite median" in capsys.readouterr().out
    profile = json.loads(out.read_text())
    assert profile["device"] == "loopback" and profile["outputs_check"]["match"] and profile["outputs_check"]["samples"] == 8
    assert sshd.leftovers() == []


def test_check_says_reachable(sshd, tmp_path):
    assert make_transport(load_device_file(sshd.device(tmp_path))).check() is None


def test_devices_check_command(sshd, tmp_path, capsys):
    good = sshd.device(tmp_path, name="loopback")
    down = sshd.device(tmp_path, name="down", port=str(free_port()))
    bare = sshd.device(tmp_path, name="no-python", python="/nonexistent/python3")
    argv = ["devices", "--check", "host", "loopback", "down", "no-python"]
    assert cli.main([*argv, *sum((["--device-file", str(p)] for p in (good, down, bare)), [])]) == 0
    out = capsys.readouterr().out
    assert out.count("-> reachable") == 2  # host and loopback
    assert "-> unreachable: cannot reach" in out and "'/nonexistent/python3' is not found there" in out
    assert out.strip().endswith("2 of 4 devices reachable")


def run_cli(device_path, model, capsys):
    code = cli.main(["profile", str(model), "--device-file", str(device_path)])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_unreachable_host(sshd, tiny_models, tmp_path, capsys):
    path = sshd.device(tmp_path, port=str(free_port()))  # nothing listens there
    code, err = run_cli(path, tiny_models["int8"], capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: device loopback: cannot reach") and "Connection refused" in err[0]
    reason = make_transport(load_device_file(path)).check()
    assert reason is not None and reason.startswith("cannot reach") and "Connection refused" in reason
    assert sshd.leftovers() == []


def test_wrong_host_key_is_refused(sshd, tiny_models, tmp_path, capsys):
    keygen(tmp_path / "impostor")
    pub = (tmp_path / "impostor.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    code, err = run_cli(sshd.device(tmp_path, known_hosts_file=str(known)), tiny_models["int8"], capsys)
    assert code == 2 and len(err) == 1
    assert "refusing" in err[0] and "host key" in err[0] and str(known) in err[0]
    assert sshd.leftovers() == []


def test_unknown_host_key_is_refused_by_default(sshd, tiny_models, tmp_path, capsys):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    code, err = run_cli(sshd.device(tmp_path, known_hosts_file=str(empty)), tiny_models["int8"], capsys)
    assert code == 2 and "host key is not in" in err[0]
    assert empty.read_text() == ""  # StrictHostKeyChecking=yes never adds keys


def test_missing_runtime_on_the_target(sshd, tiny_models, tmp_path, capsys):
    bare = tmp_path / "bare-venv"  # a real Python without numpy or a TFLite runtime
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    code, err = run_cli(sshd.device(tmp_path, python=str(bare / "bin" / "python")), tiny_models["int8"], capsys)
    assert code == 2 and len(err) == 1
    assert "No module named 'numpy'" in err[0] and "install numpy and ai-edge-litert" in err[0]
    assert sshd.leftovers() == []


def test_missing_python_on_the_target(sshd, tiny_models, tmp_path, capsys):
    code, err = run_cli(sshd.device(tmp_path, python="/nonexistent/python3"), tiny_models["int8"], capsys)
    assert code == 2 and len(err) == 1 and "'/nonexistent/python3' not found on the target" in err[0]
    assert sshd.leftovers() == []


def ssh_device(tmp_path, **transport):
    from edge_pipeline.profiling.devices import DeviceProfile

    return DeviceProfile.model_validate({"name": "b", "arch": "aarch64", "pin_cores": [2, 3], "cores": 4,
                                         "transport": {"kind": "ssh", "host": "board", **transport}})


def test_command_construction_is_safe(tmp_path):
    t = make_transport(ssh_device(tmp_path, user="pi", port=2222, identity_file="~/k", python="/opt/py 3/python"))
    cmd = t.ssh_command("true")
    assert cmd[:2] == ["ssh", "-T"] and cmd[-3:] == ["--", "pi@board", "true"]
    joined = " ".join(cmd)
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes", "ConnectTimeout=10", "IdentitiesOnly=yes"):
        assert option in joined
    from edge_pipeline.profiling.transports.ssh import SshSession

    session = SshSession(t, "/tmp/edge-pipeline.AbC12345", "/tmp/edge-pipeline.AbC12345/model.tflite", None, "ab" * 32)
    remote = session.remote_command(["--mode", "timing", "--runtime", "x; rm -rf /"])
    words = shlex.split(remote)  # what the target's POSIX shell will see
    assert words[:4] == ["cd", "/tmp/edge-pipeline.AbC12345", "&&", "taskset"]
    assert "/opt/py 3/python" in words and "x; rm -rf /" in words and words[-2:] == ["--sha256", "ab" * 32]


@pytest.mark.parametrize("path, ok", [
    ("/tmp/edge-pipeline.AbC12345", True), ("/tmp", False), ("/", False), ("", False),
    ("/tmp/edge-pipeline.AbC12345/..", False), ("/tmp/edge-pipeline.AbC1234; rm -rf ~", False),
])
def test_only_our_temp_dir_is_ever_removed(tmp_path, path, ok):
    assert make_transport(ssh_device(tmp_path)).is_our_temp_dir(path) is ok

