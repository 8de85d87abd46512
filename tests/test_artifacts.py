"""Bounded reads (issue 11.4): every file we read is a regular file within a size limit, checked
before any byte is read. Real devices, FIFOs, sparse files and /proc files; nothing mocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edge_pipeline.artifacts import (
    LIMIT_JSON,
    LIMIT_TFLITE,
    MiB,
    check_regular_file,
    read_bytes_bounded,
    read_json,
    read_npy,
    read_text_bounded,
    sha256_file,
)
from edge_pipeline.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def finishes_quickly(call, seconds: float = 10.0):
    """Run `call` in a thread; fail (instead of hanging the suite) if it blocks. Returns its outcome
    as ("ok", value) or ("error", exception)."""
    outcome: list = []

    def target() -> None:
        try:
            outcome.append(("ok", call()))
        except BaseException as exc:  # handed to the test
            outcome.append(("error", exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the read blocked for more than {seconds}s"
    return outcome[0]


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "model.tflite"
    os.mkfifo(path)
    yield path
    # If a read did block on it, a writer releases the stuck thread.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


def test_a_symlink_to_dev_zero_is_refused_before_reading(tmp_path):
    link = tmp_path / "model.tflite"
    link.symlink_to("/dev/zero")
    kind, error = finishes_quickly(lambda: read_bytes_bounded(link, LIMIT_TFLITE, "TFLite model"))
    assert kind == "error" and isinstance(error, UserError)
    message = str(error)
    assert message.startswith(f"{link} (-> /dev/zero): is a character device, not a regular file")
    assert "give the path of a TFLite model" in message


def test_a_fifo_is_refused_without_blocking(fifo):
    for read in (lambda: read_bytes_bounded(fifo, LIMIT_TFLITE, "TFLite model"),
                 lambda: check_regular_file(fifo, LIMIT_TFLITE, "TFLite model"),
                 lambda: sha256_file(fifo), lambda: read_json(fifo), lambda: read_npy(fifo)):
        kind, error = finishes_quickly(read)
        assert kind == "error" and isinstance(error, UserError), error
        assert "is a FIFO (named pipe), not a regular file" in str(error)


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"is a directory, not a regular file; give the path of a JSON file"):
        read_json(tmp_path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(UserError, match=r"missing\.json: file not found; give the path of a JSON file"):
        read_json(tmp_path / "missing.json")


def test_an_oversized_sparse_file_is_refused_by_its_size_alone(tmp_path):
    path = tmp_path / "huge.tflite"
    with open(path, "wb") as fh:
        fh.truncate(LIMIT_TFLITE + 1)  # sparse: no disk space used, reading it would take 2 GiB of memory
    with pytest.raises(UserError) as info:
        read_bytes_bounded(path, LIMIT_TFLITE, "TFLite model")
    assert str(info.value) == (f"{path}: {LIMIT_TFLITE + 1} bytes, more than the 2 GiB limit for a TFLite model; "
                               "check that this is the right file")
    with pytest.raises(UserError, match="more than the 2 GiB limit"):
        check_regular_file(path, LIMIT_TFLITE, "TFLite model")


def test_json_has_its_own_limit(tmp_path):
    path = tmp_path / "profile.json"
    with open(path, "wb") as fh:
        fh.write(b"{}")
        fh.truncate(LIMIT_JSON + 1)
    with pytest.raises(UserError, match="more than the 64 MiB limit for a JSON file"):
        read_json(path)


def test_a_file_that_grows_while_read_stops_at_the_limit():
    # Files in /proc report a size of 0 and then deliver more: exactly a file that grew between the
    # size check and the read. The reader takes at most limit + 1 bytes and says what happened.
    assert os.stat("/proc/self/status").st_size == 0
    with pytest.raises(UserError, match=r"/proc/self/status: grew past the 64 bytes limit for a status file while being read"):
        read_bytes_bounded("/proc/self/status", 64, "status file")
    text = read_text_bounded("/proc/self/status", MiB, "status file")  # within the limit: all of it
    assert text.startswith("Name:") and "VmRSS" in text


def test_a_symlink_to_a_regular_file_is_read(tmp_path):
    target = tmp_path / "real.json"
    target.write_text(json.dumps({"a": [1, 2]}))
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert read_json(link) == {"a": [1, 2]}
    assert read_bytes_bounded(link, 100, "JSON file") == target.read_bytes()
    with pytest.raises(UserError, match="more than the 4 bytes limit"):
        read_bytes_bounded(link, 4, "JSON file")


def test_npy_round_trip_and_fortran_order(tmp_path):
    for array in (np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.asfortranarray(np.eye(3, dtype=np.int16)),
                  np.array(5.0)):
        path = tmp_path / "a.npy"
        np.save(path, array)
        loaded = read_npy(path)
        assert loaded.dtype == array.dtype and loaded.shape == array.shape and np.array_equal(loaded, array)
        loaded += 1  # a writable array, not a view of read-only bytes


def test_npy_with_python_objects_is_never_unpickled(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match=r"holds Python objects \(dtype object\), which would need pickle"):
        read_npy(path)


def test_npy_header_claiming_a_huge_shape_is_refused_before_allocating(tmp_path):
    # 4e18 bytes claimed, 16 present: numpy itself would try to allocate the claimed array first.
    path = tmp_path / "liar.npy"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 2), np.float32))
    header["shape"] = (10**12, 10**6)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(np.zeros((2, 2), np.float32).tobytes())
    with pytest.raises(UserError, match=r"the header says shape \(1000000000000, 1000000\) float32 .* but 16 bytes follow"):
        read_npy(path)


def test_npy_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, np.zeros((8, 8), np.float32))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="the file is truncated or corrupt"):
        read_npy(path)
    path.write_bytes(b"PK\x03\x04 not numpy at all")
    with pytest.raises(UserError, match=r"not a \.npy array .*save it with numpy\.save"):
        read_npy(path)


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "edge_pipeline.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", [["inspect"], ["profile", "--device", "host"]])
def test_cli_refuses_dev_zero_and_a_fifo_with_one_error_line(tmp_path, command):
    zero = tmp_path / "zero.tflite"
    zero.symlink_to("/dev/zero")
    pipe = tmp_path / "pipe.tflite"
    os.mkfifo(pipe)
    for path, kind in ((zero, "a character device"), (pipe, "a FIFO (named pipe)")):
        proc = run_cli(command[0], str(path), *command[1:], cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr
        assert f"is {kind}, not a regular file; give the path of a TFLite model" in errors[0]


def test_cli_refuses_a_recipe_that_is_a_device(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.symlink_to("/dev/zero")
    proc = run_cli("validate", str(recipe), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {recipe} (-> /dev/zero): is a character device, not a regular file; give the path of a recipe (.yaml)"
    ]
