"""Device profiles: every catalog file validates; schema errors name file:line, the field and the fix."""

from __future__ import annotations

import pytest

from edge_pipeline.errors import UserError
from edge_pipeline.profiling.devices import (
    REPO_DEVICES, TRANSPORT_KINDS, DeviceProfile, catalog, get_device, load_device_file,
)
from edge_pipeline.profiling.transports import TRANSPORTS, make_transport

CATALOG = ["host", "qemu-aarch64", "rpi4", "rpi5", "jetson-orin-nano", "pixel-7", "generic-ssh"]


def test_catalog_has_the_issue_devices():
    names = {p.stem for p in REPO_DEVICES.glob("*.yaml")}
    assert set(CATALOG) <= names


@pytest.mark.parametrize("path", sorted(REPO_DEVICES.glob("*.yaml")), ids=lambda p: p.stem)
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
    ssh = load_device_file(REPO_DEVICES / "rpi4.yaml").transport
    assert ssh.kind == "ssh" and ssh.strict_host_key_checking == "yes" and ssh.port == 22
    adb = load_device_file(REPO_DEVICES / "pixel-7.yaml")
    assert adb.transport.kind == "adb" and adb.runtime.name == "benchmark_model" and adb.pin_cores == [6, 7]
    qemu = get_device("qemu-aarch64")
    assert qemu.emulated and qemu.arch == "aarch64" and "ai-edge-litert==2.1.0" in qemu.transport.packages


def write(tmp_path, text, name="dev"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, expected", [
    ("arch: x86_64\ncolour: red\n", "dev.yaml:2: colour: Extra inputs are not permitted"),
    ("transport: {kind: telnet}\n", "dev.yaml:1: transport: transport.kind must be one of local, qemu, ssh, adb"),
    ("transport:\n  kind: ssh\n  port: 22\n", "dev.yaml:1: transport.host: Field required"),
    ("transport:\n  kind: ssh\n  host: h\n  port: 70000\n", "dev.yaml:4: transport.port: Input should be less than or equal to 65535"),
    ("transport: {kind: ssh, host: h, options: [StrictHostKeyChecking=no]}\n",
     "use the transport's own fields for host-key checking"),
    ("transport: {kind: ssh, host: h}\nruntime: {name: benchmark_model}\n", "benchmark_model is supported on adb devices only"),
    ("transport: {kind: qemu}\n", "the qemu transport emulates aarch64: set arch: aarch64"),
    ("budget: {min_seconds: 5, max_seconds: 1}\n", "min_seconds (5.0) must be <= max_seconds (1.0)"),
    ("cores: 2\npin_cores: [0, 3]\n", "pin_cores [0, 3] names a core >= cores (2)"),
    ("transport: {kind: adb}\nruntime: {name: ai-edge-litert}\n", "needs transport.python"),
])
def test_bad_device_files_give_one_clear_line(tmp_path, text, expected):
    with pytest.raises(UserError) as err:
        load_device_file(write(tmp_path, text))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


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
