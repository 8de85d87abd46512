"""Conversion does not depend on the caller's environment (issue 11.12), and the converter dies
with its parent (issue 11.9).

With the virtualenv's bin/ on PATH, onnx2tf used to find the `onnxsim` command and rewrite our
model.onnx in place, undoing the max-pool padding rewrite: int8 then got a PADV2 with a ~1e36 scale.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_pipeline import procs
from edge_pipeline.convert.tflite_convert import run_worker, worker_env

from ..processes import children_of, cmdline, gone_within, wait_for
from .conftest import SIZE, normalized_inputs, tiny_cnn

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_worker_environment_is_built_from_scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("VIRTUAL_ENV", str(Path(VENV_BIN).parent))
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    monkeypatch.setenv("PYTHONHOME", "/broken")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    monkeypatch.setenv("EDGE_PIPELINE_CACHE", str(tmp_path / "cache"))
    env = worker_env(tmp_path)
    assert env["PATH"] == os.defpath and VENV_BIN not in env["PATH"]
    assert env["PYTHONPATH"] == str(REPO) and "PYTHONHOME" not in env and "VIRTUAL_ENV" not in env
    assert env["HOME"] == env["TMPDIR"] == str(tmp_path)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["TF_ENABLE_ONEDNN_OPTS"] == "0" and env["PYTHONHASHSEED"] == "0"
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:9"  # any network attempt fails at once
    assert env["EDGE_PIPELINE_CACHE"] == str(tmp_path / "cache")  # our own settings pass


def test_the_real_worker_process_sees_only_that_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    script = ("import json, os, shutil, sys; json.dump({'onnxsim': shutil.which('onnxsim'), 'env': dict(os.environ), "
              "'cwd': os.getcwd(), 'pgid': os.getpgid(0), 'pid': os.getpid()}, open('seen.json', 'w'))")
    run_worker([sys.executable, "-c", script], tmp_path, tmp_path / "convert.log", timeout=60)
    import json

    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["onnxsim"] is None  # the venv's console scripts are out of reach
    assert seen["env"]["PATH"] == os.defpath and seen["env"]["PYTHONPATH"] == str(REPO)
    assert seen["cwd"] == str(tmp_path) and seen["pgid"] == seen["pid"]  # its own process group


def _padded_pool_onnx(folder: Path) -> Path:
    from edge_pipeline.convert.onnx_export import export_onnx

    folder.mkdir()
    path = folder / "model.onnx"
    assert export_onnx(tiny_cnn(), (1, 3, SIZE, SIZE), path)["maxpools_zero_padded"] == 1
    return path


@pytest.mark.slow
def test_export_is_byte_identical_with_and_without_the_venv_on_path(tmp_path, monkeypatch):
    from edge_pipeline.convert.compat import ensure_loadable
    from edge_pipeline.convert.inspect import read_graph
    from edge_pipeline.convert.tflite_convert import run_conversion

    onnx_path = _padded_pool_onnx(tmp_path / "onnx")
    before = sha256(onnx_path)
    calibration = normalized_inputs(32, seed=1)
    images01 = np.clip(calibration * 0.25 + 0.5, 0, 1)
    files = {}
    system_path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != VENV_BIN)
    for label, path in (("venv", VENV_BIN + os.pathsep + system_path), ("system", system_path)):
        monkeypatch.setenv("PATH", path)
        conversion = run_conversion(onnx_path, tmp_path / label, ["float32", "int8"], images01, calibration)
        assert not conversion.failed
        files[label] = conversion.files
        assert sha256(onnx_path) == before, f"model.onnx was rewritten by the conversion ({label} PATH)"
    for precision in ("float32", "int8"):
        assert files["venv"][precision].read_bytes() == files["system"][precision].read_bytes(), precision
        ensure_loadable(files["venv"][precision])  # loads and runs, with and without XNNPACK
    graph = read_graph(files["venv"]["int8"])
    ops = [op.name for op in graph.ops]
    assert "PAD" in ops and "MAX_POOL_2D" in ops and "PADV2" not in ops  # the zero-pad rewrite survived
    pad = next(op for op in graph.ops if op.name == "PAD")
    assert max(graph.tensors[pad.inputs[0]].scales) < 1e3  # not the ~1e36 of a -inf padding


def test_kill_9_during_export_kills_the_converter_and_the_next_start_sweeps_its_folder(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    parent_script = tmp_path / "parent.py"
    parent_script.write_text(textwrap.dedent("""
        import numpy as np, onnx
        from pathlib import Path
        from onnx import TensorProto, helper
        from edge_pipeline.convert.tflite_convert import run_conversion
        graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"], name="/relu/Relu")], "g",
                                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "relu.onnx")
        run_conversion(Path("relu.onnx"), Path("out"), ["float32"], np.zeros((4, 8, 8, 3), np.float32), None)
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmpdir)}
    parent = subprocess.Popen([sys.executable, str(parent_script)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        worker = wait_for(lambda: [p for p in children_of(parent.pid) if "tflite_worker" in cmdline(p)], 60,
                          "the conversion worker")[0]
        folders = [p.name for p in tmpdir.iterdir()]
        assert len(folders) == 1 and folders[0].startswith(f"edge-pipeline-convert-{parent.pid}-")
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert gone_within(worker, 2.0), "the converter outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
    later = subprocess.run([sys.executable, "-m", "edge_pipeline.cli", "stages", "train"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert later.returncode == 0
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith(procs.TEMP_PREFIX)] == []
