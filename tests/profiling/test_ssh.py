"""The ssh transport end to end against a real sshd on 127.0.0.1 (tests/profiling/conftest.py), and
its failure modes: each is one clear `error:` line, exit 2, and leaves nothing on the target."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

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
    # named devices that cannot be reached fail the command (exit 1), after every device was checked
    assert cli.main([*argv, *sum((["--device-file", str(p)] for p in (good, down, bare)), [])]) == 1
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



def test_typed_options_reach_ssh_as_validated_arguments(tmp_path):
    t = make_transport(ssh_device(tmp_path, jump_host="admin@bastion.example.org:2222", compression=True,
                                  server_alive_interval_s=30, server_alive_count_max=4, address_family="inet",
                                  strict_host_key_checking="accept-new"))
    cmd = t.ssh_command("true")
    assert cmd[cmd.index("-J") + 1] == "admin@bastion.example.org:2222"
    values = [cmd[i + 1] for i, word in enumerate(cmd) if word == "-o"]
    for option in ("Compression=yes", "ServerAliveInterval=30", "ServerAliveCountMax=4", "AddressFamily=inet",
                   "StrictHostKeyChecking=accept-new", "BatchMode=yes"):
        assert option in values
    assert not any(key.split("=")[0].lower() in ("proxycommand", "localcommand", "include") for key in values)


def test_typed_options_work_against_a_real_server(sshd, tmp_path):
    path = sshd.device(tmp_path, compression="true", server_alive_interval_s="2", server_alive_count_max="2",
                       address_family="inet")
    assert make_transport(load_device_file(path)).check() is None


# ---- hostile device files (issue 11.1): nothing in a device file may run a local command ----

# The loopback device in block style, one key per line, so each case knows the line of its field.
HOSTILE_BASE = ["name: evil", "arch: x86_64", "budget: {warmup_runs: 1, min_runs: 1, min_seconds: 0, max_seconds: 5}",
                "transport:", "  kind: ssh"]
TRANSPORT_KEYS = ["host", "port", "user", "identity_file", "known_hosts_file", "python", "remote_tmp", "connect_timeout_s"]
FIRST_TRANSPORT_LINE = len(HOSTILE_BASE) + 1
EXTRA_LINE = FIRST_TRANSPORT_LINE + len(TRANSPORT_KEYS)

# (id, {transport key: hostile YAML value}, extra transport lines, field in the error, its line)
# `{M}` is the marker file an injected command would create, `{C}` a config file that would create it.
HOSTILE = [
    ("proxycommand", {}, ["  options: ['ProxyCommand=touch {M}']"], "transport.options[0]", EXTRA_LINE),
    ("localcommand", {}, ["  options:", "    - 'LocalCommand=touch {M}'", "    - PermitLocalCommand=yes"],
     "transport.options[0]", EXTRA_LINE + 1),
    ("permitlocalcommand", {}, ["  options: [PermitLocalCommand=yes, 'LocalCommand=touch {M}']"], "transport.options[0]", EXTRA_LINE),
    ("match-exec", {}, ["  options: ['Match exec \"touch {M}\"']"], "transport.options[0]", EXTRA_LINE),
    ("knownhostscommand", {}, ["  options: ['KnownHostsCommand=/usr/bin/touch {M}']"], "transport.options[0]", EXTRA_LINE),
    ("include", {}, ["  options: ['Include {C}']"], "transport.options[0]", EXTRA_LINE),
    ("option-newline", {}, ['  options: ["ConnectTimeout=5\\nProxyCommand=touch {M}"]'], "transport.options[0]", EXTRA_LINE),
    ("weaker-host-keys", {}, ["  options: [StrictHostKeyChecking=no]"], "transport.options[0]", EXTRA_LINE),
    ("host-dash-o", {"host": "'-oProxyCommand=touch {M}'"}, [], "transport.host", FIRST_TRANSPORT_LINE),
    ("host-newline", {"host": '"127.0.0.1\\n-oProxyCommand=touch {M}"'}, [], "transport.host", FIRST_TRANSPORT_LINE),
    ("host-space", {"host": "'127.0.0.1 -oProxyCommand=touch {M}'"}, [], "transport.host", FIRST_TRANSPORT_LINE),
    ("port-words", {"port": "'22 -oProxyCommand=touch {M}'"}, [], "transport.port", FIRST_TRANSPORT_LINE + 1),
    ("user-space", {"user": "'root -oProxyCommand=touch {M}'"}, [], "transport.user", FIRST_TRANSPORT_LINE + 2),
    ("user-dash", {"user": "'-oProxyCommand=touch {M}'"}, [], "transport.user", FIRST_TRANSPORT_LINE + 2),
    ("identity-percent", {"identity_file": "'{K}%d'"}, [], "transport.identity_file", FIRST_TRANSPORT_LINE + 3),
    ("identity-env", {"identity_file": "'${HOME}/.ssh/id'"}, [], "transport.identity_file", FIRST_TRANSPORT_LINE + 3),
    ("known-hosts-two-files", {"known_hosts_file": "'{K} /dev/null'"}, [], "transport.known_hosts_file", FIRST_TRANSPORT_LINE + 4),
    ("python-newline", {"python": '"python3\\ntouch {M}"'}, [], "transport.python", FIRST_TRANSPORT_LINE + 5),
    ("remote-tmp-dotdot", {"remote_tmp": "'/tmp/../home'"}, [], "transport.remote_tmp", FIRST_TRANSPORT_LINE + 6),
    ("jump-host-command", {}, ["  jump_host: 'bastion -oProxyCommand=touch {M}'"], "transport.jump_host", EXTRA_LINE),
    ("jump-host-shell", {}, ["  jump_host: \"root@127.0.0.1:22'; touch {M}; '\""], "transport.jump_host", EXTRA_LINE),
    ("jump-host-user-dash", {}, ["  jump_host: '-oProxyCommand=x@127.0.0.1'"], "transport.jump_host", EXTRA_LINE),
]


def hostile_device(sshd, folder: Path, marker: Path, overrides: dict[str, str], extra: list[str]) -> Path:
    config = folder.parent / "evil_ssh_config"  # what an `Include` would read: it runs the marker command
    config.write_text(f"ProxyCommand touch {marker}\nPermitLocalCommand yes\nLocalCommand touch {marker}\n")
    values = {"host": "'127.0.0.1'", "port": str(sshd.port), "user": repr(sshd.user), "identity_file": f"'{sshd.identity}'",
              "known_hosts_file": f"'{sshd.known_hosts}'", "python": f"'{sys.executable}'", "remote_tmp": f"'{sshd.root}'",
              "connect_timeout_s": "5"}
    values.update(overrides)
    lines = HOSTILE_BASE + [f"  {key}: {values[key]}" for key in TRANSPORT_KEYS] + extra
    text = "\n".join(lines) + "\n"
    text = text.replace("{M}", str(marker)).replace("{C}", str(config)).replace("{K}", str(sshd.identity))
    folder.mkdir(exist_ok=True)
    path = folder / "evil.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("command", ["devices-check", "profile"])
@pytest.mark.parametrize("case, overrides, extra, field, line", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_a_hostile_device_file_is_one_error_and_runs_nothing(sshd, tiny_models, tmp_path, monkeypatch, capsys,
                                                             command, case, overrides, extra, field, line):
    marker = tmp_path / "PWNED"
    path = hostile_device(sshd, tmp_path / "devices", marker, overrides, extra)
    monkeypatch.chdir(tmp_path)  # ./devices is searched: the cloned-repository case
    monkeypatch.delenv("EDGE_PIPELINE_DEVICES", raising=False)
    if command == "devices-check":
        code = cli.main(["devices", "--check", "evil"])
    else:
        code = cli.main(["profile", str(tiny_models["int8"]), "--device-file", str(path)])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2 and len(err) == 1, captured.err
    assert err[0].startswith(f"error: {path}:{line}: {field}: "), err[0]
    assert "Traceback" not in captured.err + captured.out
    assert not marker.exists()
    assert sshd.leftovers() == []


def test_the_well_formed_hostile_file_base_is_reachable(sshd, tmp_path, monkeypatch, capsys):
    """Control for the cases above: without a hostile value the same file passes and reaches the server,
    so each refusal comes from the hostile value and not from a broken fixture."""
    hostile_device(sshd, tmp_path / "devices", tmp_path / "PWNED", {}, [])
    monkeypatch.chdir(tmp_path)
    assert cli.main(["devices", "--check", "evil"]) == 0
    assert "-> reachable" in capsys.readouterr().out


@pytest.mark.parametrize("options", [
    ["-o", "ProxyCommand=touch {M}"],
    ["-o", "PermitLocalCommand=yes", "-o", "LocalCommand=touch {M}"],
    ["-o", "KnownHostsCommand=/usr/bin/touch {M}"],
], ids=["proxycommand", "localcommand", "knownhostscommand"])
def test_the_refused_options_do_run_commands_in_plain_ssh(sshd, tmp_path, options):
    """Why the options above are refused: given to ssh, each runs a local command (here a harmless touch)."""
    marker = tmp_path / "PWNED"
    cmd = ["ssh", "-T", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "ConnectTimeout=5",
           "-i", str(sshd.identity), "-p", str(sshd.port), *[o.replace("{M}", str(marker)) for o in options],
           "--", f"{sshd.user}@127.0.0.1", "true"]
    subprocess.run(cmd, capture_output=True, timeout=60)
    assert marker.exists()
