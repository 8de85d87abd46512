"""Device profiles: every catalog file validates; schema errors name file:line, the field and the fix;
values that reach a command line are allow-listed; every count and duration is bounded; a file in
./devices that replaces a built-in device is announced; `devices --check NAME` fails when NAME does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_pipeline import cli
from edge_pipeline.errors import UserError
from edge_pipeline.profiling import devices as devices_module
from edge_pipeline.profiling.devices import (
    BUILTIN_DEVICES,
    TRANSPORT_KINDS,
    DeviceProfile,
    catalog,
    get_device,
    load_device_file,
)
from edge_pipeline.profiling.transports import TRANSPORTS, make_transport
from tests.conftest import REPO

CATALOG = ["host", "qemu-aarch64", "rpi4", "rpi5", "jetson-orin-nano", "pixel-7", "generic-ssh"]


def test_catalog_has_the_issue_devices():
    names = {p.stem for p in BUILTIN_DEVICES.glob("*.yaml")}
    assert set(CATALOG) <= names


def test_catalog_ships_inside_the_package_and_the_checkout_links_to_it():
    import edge_pipeline

    package = Path(edge_pipeline.__file__).resolve().parent
    assert BUILTIN_DEVICES.resolve() == package / "catalog" / "devices"
    assert (REPO / "devices").resolve() == BUILTIN_DEVICES.resolve()  # the checkout's devices/ is a symlink
    assert (REPO / "recipes").resolve() == package / "catalog" / "recipes"


@pytest.mark.parametrize("path", sorted(BUILTIN_DEVICES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_device_file_validates_and_has_a_transport(path):
    device = load_device_file(path)
    assert device.name == path.stem
    assert device.description
    transport = make_transport(device)
    assert transport.kind == device.transport.kind
    assert device.budget.min_seconds <= device.budget.max_seconds


@pytest.mark.parametrize("kind", TRANSPORT_KINDS)
def test_every_transport_kind_is_registered(kind):
    assert kind in TRANSPORTS


def test_transport_settings_are_typed_per_kind():
    ssh = load_device_file(BUILTIN_DEVICES / "rpi4.yaml").transport
    assert ssh.kind == "ssh" and ssh.strict_host_key_checking == "yes" and ssh.port == 22
    adb = load_device_file(BUILTIN_DEVICES / "pixel-7.yaml")
    assert adb.transport.kind == "adb" and adb.runtime.name == "benchmark_model" and adb.pin_cores == [6, 7]
    qemu = get_device("qemu-aarch64")
    assert qemu.emulated and qemu.arch == "aarch64" and "ai-edge-litert==2.1.0" in qemu.transport.packages


def write(tmp_path, text, name="dev"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def one_error(path) -> str:
    with pytest.raises(UserError) as err:
        load_device_file(path)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("text, expected", [
    ("arch: x86_64\ncolour: red\n", "dev.yaml:2: colour: Extra inputs are not permitted"),
    ("transport: {kind: telnet}\n", "dev.yaml:1: transport: transport.kind must be one of local, qemu, ssh, adb"),
    ("transport:\n  kind: ssh\n  port: 22\n", "dev.yaml:1: transport.host: Field required"),
    ("transport:\n  kind: ssh\n  host: h\n  port: 70000\n", "dev.yaml:4: transport.port: Input should be less than or equal to 65535"),
    ("transport: {kind: ssh, host: h, options: [StrictHostKeyChecking=no]}\n",
     "'StrictHostKeyChecking=no' is not accepted; use the field transport.strict_host_key_checking"),
    ("transport: {kind: ssh, host: h}\nruntime: {name: benchmark_model}\n", "benchmark_model is supported on adb devices only"),
    ("transport: {kind: qemu}\n", "the qemu transport emulates aarch64: set arch: aarch64"),
    ("budget: {min_seconds: 5, max_seconds: 1}\n", "min_seconds (5.0) must be <= max_seconds (1.0)"),
    ("cores: 2\npin_cores: [0, 3]\n", "pin_cores [0, 3] names a core >= cores (2)"),
    ("transport: {kind: adb}\nruntime: {name: ai-edge-litert}\n", "needs transport.python"),
    ("description: \"red\\e[31m\"\n", "dev.yaml:1: description: 'red\\x1b[31m' contains a control character"),
    ("name: " + "x" * 65 + "\n", "dev.yaml:1: name: String should have at most 64 characters"),
])
def test_bad_device_files_give_one_clear_line(tmp_path, text, expected):
    assert expected in one_error(write(tmp_path, text))


# Every count and duration has an upper bound, and the message states it (a budget of 1e12 warmup
# runs used to hang the agent instead of failing).
@pytest.mark.parametrize("text, expected", [
    ("budget: {warmup_runs: 1.0e+12}\n", "budget.warmup_runs: Input should be less than or equal to 10000"),
    ("budget: {warmup_runs: 1e12}\n", "budget.warmup_runs: Input should be a valid integer"),
    ("budget: {min_runs: 100000001}\n", "budget.min_runs: Input should be less than or equal to 100000000"),
    ("budget: {min_seconds: 86401}\n", "budget.min_seconds: Input should be less than or equal to 86400"),
    ("budget: {max_seconds: 1.0e+9}\n", "budget.max_seconds: Input should be less than or equal to 86400"),
    ("budget: {max_seconds: .inf}\n", "budget.max_seconds: Input should be a finite number"),
    ("budget: {max_rel_std: .nan}\n", "budget.max_rel_std: Input should be a finite number"),
    ("threads: 100000\n", "threads: Input should be less than or equal to 256"),
    ("cores: 1000000\n", "cores: Input should be less than or equal to 1024"),
    ("memory_mb: 1.0e+15\n", "memory_mb: Input should be less than or equal to 16777216"),
    ("pin_cores: [99999]\n", "pin_cores[0]: Input should be less than 1024"),
    ("transport: {kind: ssh, host: h, connect_timeout_s: 100000}\n",
     "transport.connect_timeout_s: Input should be less than or equal to 300"),
    ("transport: {kind: ssh, host: h, command_timeout_s: 1.0e+12}\n",
     "transport.command_timeout_s: Input should be less than or equal to 86400"),
    ("transport: {kind: ssh, host: h, server_alive_interval_s: 99999}\n",
     "transport.server_alive_interval_s: Input should be less than or equal to 3600"),
    ("transport: {kind: ssh, host: h, server_alive_count_max: 1000}\n",
     "transport.server_alive_count_max: Input should be less than or equal to 100"),
    ("transport: {kind: adb, python: python3, command_timeout_s: .inf}\n", "transport.command_timeout_s: Input should be a finite number"),
])
def test_counts_and_durations_are_bounded(tmp_path, text, expected):
    assert expected in one_error(write(tmp_path, text))


@pytest.mark.parametrize("transport, field", [
    ("{kind: local, python: ./evil.sh}", "transport.python: './evil.sh' is a relative path"),
    ("{kind: local, python: tools/python3}", "transport.python: 'tools/python3' is a relative path"),
    ("{kind: local, python: /bin/sh}", "transport.python: '/bin/sh' is not allowed here: the program's file name must be python"),
    ("{kind: local, python: 'python3 -c import os'}", "transport.python: 'python3 -c import os' is not allowed here"),
    ("{kind: adb, python: python3, adb: /bin/sh}", "transport.adb: '/bin/sh' is not allowed here"),
    ("{kind: adb, python: python3, adb: ./adb}", "transport.adb: './adb' is a relative path"),
    ("{kind: adb, python: python3, serial: -H evil}", "transport.serial: String should match pattern"),
    ("{kind: adb, python: python3, remote_dir: tmp}", "transport.remote_dir: 'tmp' must be an absolute folder"),
    ("{kind: qemu, qemu: /usr/bin/env}", "transport.qemu: '/usr/bin/env' is not allowed here"),
    ("{kind: qemu, packages: [--index-url=http://example.org]}",
     "transport.packages[0]: '--index-url=http://example.org' must be a pinned"),
    ("{kind: qemu, packages: [./evil-1.0.tar.gz]}", "transport.packages[0]: './evil-1.0.tar.gz' must be a pinned"),
    ("{kind: qemu, suite: 'bookworm; rm -rf ~'}", "transport.suite: String should match pattern"),
])
def test_local_programs_and_arguments_are_allow_listed(tmp_path, transport, field):
    assert field in one_error(write(tmp_path, f"arch: aarch64\ntransport: {transport}\n"))


@pytest.mark.parametrize("transport", [
    "{kind: local, python: python3}", "{kind: local, python: /usr/bin/python3.11}",
    "{kind: local, python: ~/.cache/edge-pipeline/runtimes/tflite-runtime-2.14.0/bin/python}",
    "{kind: adb, python: python3, adb: ~/Android/platform-tools/adb, serial: 192.168.1.5:5555}",
    "{kind: qemu, qemu: /usr/bin/qemu-aarch64-static, packages: [numpy==1.26.4, 'ai-edge-litert==2.1.0']}",
    "{kind: ssh, host: 'fe80::1', user: pi, jump_host: 'admin@bastion.example.org:2222'}",
    "{kind: ssh, host: raspberrypi.local, jump_host: '[2001:db8::1]:22', identity_file: ~/.ssh/id_ed25519}",
    "{kind: ssh, host: my_alias, compression: true, address_family: inet, server_alive_interval_s: 30}",
])
def test_ordinary_settings_stay_valid(tmp_path, transport):
    device = load_device_file(write(tmp_path, f"arch: aarch64\ntransport: {transport}\n"))
    assert device.transport.kind in TRANSPORT_KINDS


def test_device_file_by_path_and_env_catalog(tmp_path, monkeypatch):
    path = write(tmp_path, "description: mine\nthreads: 2\n", name="my-board")
    assert get_device(str(path)).threads == 2
    monkeypatch.setenv("EDGE_PIPELINE_DEVICES", str(tmp_path))
    assert catalog()["my-board"] == path
    assert get_device("my-board").description == "mine"
    with pytest.raises(UserError, match="unknown device 'nope'; known: .*host"):
        get_device("nope")


def test_defaults_are_the_local_host():
    device = DeviceProfile(name="x")
    assert device.transport.kind == "local" and device.threads == 1 and not device.emulated


def test_a_device_file_that_is_not_a_regular_file_is_refused(tmp_path):
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    assert "is a character device, not a regular file" in one_error(link)


# ---- ./devices shadowing a built-in device ----

@pytest.fixture
def shadowing_dir(tmp_path, monkeypatch):
    """A working directory whose ./devices replaces the built-in rpi4 and adds a board of its own."""
    (tmp_path / "devices").mkdir()
    write(tmp_path / "devices", "description: not the real one\ntransport: {kind: local}\n", name="rpi4")
    write(tmp_path / "devices", "description: my own board\n", name="my-board")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGE_PIPELINE_DEVICES", raising=False)
    monkeypatch.setattr(devices_module, "_ANNOUNCED", set())
    return tmp_path


def test_a_shadowing_device_file_is_announced(shadowing_dir, capsys):
    assert get_device("rpi4").description == "not the real one"
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: ")
    assert "devices/rpi4.yaml" in warnings[0] and str(BUILTIN_DEVICES / "rpi4.yaml") in warnings[0]
    get_device("my-board")  # no built-in of that name: nothing to announce
    assert capsys.readouterr().err == ""


def test_the_announcement_comes_on_every_command(shadowing_dir):
    for argv in (["devices", "rpi4"], ["devices", "rpi4"], ["devices"]):
        proc = subprocess.run([sys.executable, "-m", "edge_pipeline.cli", *argv], cwd=shadowing_dir,
                              capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, proc.stderr
        warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
        assert len(warnings) == 1 and "rpi4" in warnings[0], proc.stderr
        assert "not the real one" in proc.stdout


def test_the_checkout_itself_shadows_nothing(monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # its devices/ is the built-in folder (a symlink)
    monkeypatch.setattr(devices_module, "_ANNOUNCED", set())
    get_device("rpi4")
    assert capsys.readouterr().err == ""


# ---- devices --check exit codes ----

def test_devices_check_fails_for_an_unreachable_named_device(tmp_path, monkeypatch, capsys):
    broken = write(tmp_path, "transport: {kind: local, python: /nonexistent/python3}\n", name="broken")
    assert cli.main(["devices", "--check", "host"]) == 0
    assert cli.main(["devices", "--check", "host", "--device-file", str(broken)]) == 1
    monkeypatch.setenv("EDGE_PIPELINE_DEVICES", str(tmp_path))
    assert cli.main(["devices", "--check", "broken"]) == 1
    out = capsys.readouterr().out
    assert "-> unreachable: python '/nonexistent/python3' not found" in out and out.strip().endswith("0 of 1 devices reachable")


def test_devices_check_of_an_unknown_name_is_bad_input(capsys):
    assert cli.main(["devices", "--check", "no-such-board"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown device 'no-such-board'; known: ")
