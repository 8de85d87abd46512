"""What may reach a device (names, ids, roots), the release script's own refusals (run with this
machine's sh), the commands built for ssh and adb, and the device-vs-host comparison."""

from __future__ import annotations

import shlex
import subprocess
from datetime import datetime, timezone

import numpy as np
import pytest

from edge_pipeline.deploy.names import check_app, check_release_id, check_root, new_release_id
from edge_pipeline.deploy.shell import parse_hashes, script_argv
from edge_pipeline.deploy.verify import compare
from edge_pipeline.errors import UserError

GOOD_ID = "20250101T120000.123Z-int8-1a2b3c4d"


@pytest.mark.parametrize("root, ok", [
    ("~", True), ("/home/pi/models", True), ("/data/local/tmp/edge-pipeline/", True), ("/", False), ("relative", False),
    ("/a/../b", False), ("/a/./b", False), ("/a/b\n", False), ("-rf", False), ("", False),
])
def test_roots(root, ok):
    if ok:
        assert check_root(root) == (root.rstrip("/") or root)
    else:
        with pytest.raises(UserError):
            check_root(root)


@pytest.mark.parametrize("release, ok", [
    (GOOD_ID, True), ("20250101T120000.123Z-dynamic_int8-1a2b3c4d", True), ("../etc", False), (".incoming-x", False),
    (GOOD_ID + "; rm -rf ~", False), (GOOD_ID.replace("int8", "INT8"), False), ("current", False),
])
def test_release_ids(release, ok):
    if ok:
        assert check_release_id(release) == release
    else:
        with pytest.raises(UserError):
            check_release_id(release)


def test_new_release_ids_sort_by_time_and_name_their_content():
    early = new_release_id("int8", "ab" * 32, datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc))
    late = new_release_id("float32", "cd" * 32, datetime(2025, 1, 1, 12, 0, 1, tzinfo=timezone.utc))
    assert early == "20250101T120000.123Z-int8-abababab" and early < late


@pytest.mark.parametrize("app", ["Quick", "a b", "-x", "x/y", "a" * 65, ""])
def test_bad_app_names(app):
    with pytest.raises(UserError):
        check_app(app)


def run_script(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(script_argv(*argv), input=stdin, capture_output=True, timeout=30)


@pytest.mark.parametrize("argv, message", [
    (("prepare", "ROOT", "app", "../../x"), b"bad release id"),
    (("prepare", "ROOT", "app", ".hidden"), b"bad release id"),
    (("prepare", "ROOT", "../app", GOOD_ID), b"bad app name"),
    (("prepare", "relative/root", "app", GOOD_ID), b"is not an absolute folder"),
    (("prepare", "/tmp/../etc", "app", GOOD_ID), b"has . or .. parts"),
    (("switch", "ROOT", "app", GOOD_ID), b"no verified release"),
    (("frobnicate", "ROOT", "app"), b"unknown operation frobnicate"),
])
def test_the_script_checks_again_on_the_device(tmp_path, argv, message):
    argv = tuple(str(tmp_path) if a == "ROOT" else a for a in argv)
    proc = run_script(*argv)
    assert proc.returncode == 3 and message in proc.stderr
    assert not (tmp_path / "etc").exists() and not any(tmp_path.parent.glob("x"))


def test_a_current_that_is_not_our_link_is_never_replaced(tmp_path):
    """A user's own folder named `current` stays: the switch refuses instead of renaming over it."""
    app = tmp_path / "app"
    (app / "current").mkdir(parents=True)
    (app / "current" / "mine.txt").write_text("user data")
    assert run_script("prepare", str(tmp_path), "app", GOOD_ID).returncode == 0
    proc = run_script("commit", str(tmp_path), "app", GOOD_ID, stdin=b'{"verified": {}}\n')
    assert proc.returncode == 3 and b"is not a symlink; refusing to replace it" in proc.stderr
    assert (app / "current" / "mine.txt").read_text() == "user data"


def test_remote_commands_reach_the_device_shell_as_the_same_words():
    """ssh and adb pass one string to the device's shell: it must split back into exactly our argv."""
    from edge_pipeline.profiling.devices import DeviceProfile
    from edge_pipeline.profiling.transports import make_transport

    argv = script_argv("remove", "/home/pi/my models", "app", GOOD_ID)
    remote = " ".join(shlex.quote(w) for w in argv)
    assert shlex.split(remote) == argv
    adb = make_transport(DeviceProfile.model_validate(
        {"name": "phone", "arch": "aarch64", "transport": {"kind": "adb", "serial": "emulator-5554", "python": "python3"}}))
    command = adb.shell_command(remote)
    assert command[:4] == ["adb", "-s", "emulator-5554", "shell"]
    assert shlex.split(command[4].rsplit(";", 1)[0]) == argv  # then `echo <exit marker>$?`


def test_hash_lines_of_gnu_busybox_and_toybox():
    lines = f"{'a' * 64}  ./model.tflite\n{'b' * 64} *./samples/000.png\n{'c' * 64}  labels.txt\ngarbage\n"
    assert parse_hashes(lines) == {"model.tflite": "a" * 64, "samples/000.png": "b" * 64, "labels.txt": "c" * 64}


def result(outputs: dict[str, list[float]], quantization=None) -> dict:
    return {"output": {"dtype": "int8" if quantization else "float32",
                       "quantization": {"scale": quantization, "zero_point": 0} if quantization else None},
            "predictions": [{"file": f"/any/where/{name}", "output": values} for name, values in outputs.items()]}


def test_compare_passes_identical_and_float_noise():
    host = result({"a.png": [1.0, 3.0, 2.0], "b.png": [5.0, 0.0, 1.0]})
    noisy = result({"a.png": [1.0, 3.0 + 1e-5, 2.0], "b.png": [5.0, 0.0, 1.0]})
    figures = compare(noisy, host, "float32", labels={"a.png": 1, "b.png": 2})
    assert figures["passed"] and figures["top1_agreement"] == 1.0 and figures["samples"] == 2
    assert figures["accuracy"] == 0.5 and figures["host_accuracy"] == 0.5


def test_compare_fails_on_a_real_disagreement_but_not_on_a_near_tie():
    host = result({"a.png": [1.0, 2.0, 2.0 - 0.05]}, quantization=0.1)
    flipped_tie = result({"a.png": [1.0, 2.0 - 0.05, 2.0]}, quantization=0.1)
    figures = compare(flipped_tie, host, "int8")
    assert figures["passed"] and figures["near_ties"] == 1 and figures["top1_agreement"] == 0.0
    wrong = result({"a.png": [3.0, 2.0, 1.95]}, quantization=0.1)
    figures = compare(wrong, host, "int8")
    assert not figures["passed"] and "1 of 1 top-1 classes differ" in figures["reason"]


def test_compare_fails_beyond_one_quantization_step_and_on_other_files():
    host = result({"a.png": [0.0, 1.0]}, quantization=0.1)
    assert compare(result({"a.png": [0.1, 1.0]}, 0.1), host, "int8")["passed"]  # one step
    off = compare(result({"a.png": [0.2, 1.0]}, 0.1), host, "int8")
    assert not off["passed"] and "tolerance" in off["reason"]
    other = compare(result({"b.png": [0.0, 1.0]}, 0.1), host, "int8")
    assert not other["passed"] and "other files" in other["reason"]
    assert np.isclose(compare(host, host, "int8")["tolerance"], 0.1, rtol=1e-3)
