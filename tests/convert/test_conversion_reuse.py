"""The export stage's time cuts change no output byte (issue 13).

The conversion worker skips two things onnx2tf does for nothing here: computing every Keras layer's
SavedModel metadata (a JSON dump of its weights that `tf.saved_model.save` reads and throws away) and
the float16 conversion when no stage asked for float16. Each file must be the same bytes whether
those shortcuts are taken or not (`EDGE_PIPELINE_PLAIN_CONVERSION=1` runs onnx2tf as it ships), and
whatever other precisions are converted in the same run. The parent starts the worker, does its
torch-side checks meanwhile, and never leaves it running.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edge_pipeline.convert.tflite_convert import conversion_started, run_conversion, worker_env, worker_started
from edge_pipeline.convert.tflite_worker import PLAIN_CONVERSION

from ..processes import alive, gone_within, wait_for


def _convert(fixture, out, precisions):
    images01 = np.clip(fixture.calibration * 0.25 + 0.5, 0, 1)  # as the all_precisions fixture converts
    return run_conversion(fixture.onnx, out, precisions, images01, fixture.calibration, log_path=out / "convert.log")


@pytest.mark.slow
def test_fewer_precisions_and_plain_onnx2tf_give_the_same_bytes(all_precisions, tmp_path, monkeypatch):
    """all_precisions converted five precisions in one run (float16 asked for: onnx2tf's float16
    pass ran). float32 + int8 alone (float16 pass skipped), and the same with onnx2tf as it ships
    (no shortcut at all), must give byte-identical float32 and int8 files."""
    expected = {p: all_precisions.files[p].read_bytes() for p in ("float32", "int8")}
    fewer = _convert(all_precisions, tmp_path / "fewer", ["float32", "int8"])
    monkeypatch.setenv(PLAIN_CONVERSION, "1")
    plain = _convert(all_precisions, tmp_path / "plain", ["float32", "int8"])
    for precision, content in expected.items():
        assert fewer.files[precision].read_bytes() == content, f"{precision} changed without the float16 pass"
        assert plain.files[precision].read_bytes() == content, f"{precision} differs from plain onnx2tf"
    assert sorted(p.name for p in (tmp_path / "fewer").glob("*.tflite")) == ["model_float32.tflite", "model_int8.tflite"]


SHORTCUTS_SCRIPT = textwrap.dedent("""
    import json
    import tensorflow as tf
    import tf_keras
    from edge_pipeline.convert.tflite_worker import no_keras_metadata, only_wanted_float_files

    inputs = tf_keras.Input((4, 4, 3), batch_size=1)
    model = tf_keras.Model(inputs, tf_keras.layers.Conv2D(2, 3)(inputs))
    original = tf.lite.TFLiteConverter.__dict__["from_keras_model"]

    def sizes(precisions):
        with only_wanted_float_files(precisions):
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            float32 = converter.convert()
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]  # onnx2tf's float16 pass
            return [len(float32), len(converter.convert())]

    layer = model.layers[-1]
    before = layer._tracking_metadata
    with no_keras_metadata():
        during = layer._tracking_metadata
    print(json.dumps({
        "without_float16": sizes(["float32", "int8"]), "with_float16": sizes(["float32", "float16"]),
        "restored": tf.lite.TFLiteConverter.__dict__["from_keras_model"] is original,
        "metadata": [len(before), during, layer._tracking_metadata == before],
    }))
""")


@pytest.mark.slow
def test_the_shortcuts_skip_only_what_they_say_and_restore_tensorflow(tmp_path):
    """In a TensorFlow process of its own (as the worker runs): the float16 pass yields nothing
    unless float16 is wanted, the float32 one always converts; Keras metadata is empty only inside
    the block; both patches are undone on the way out."""
    proc = subprocess.run([sys.executable, "-c", SHORTCUTS_SCRIPT], env=worker_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    float32, float16 = seen["with_float16"]
    assert float32 > 0 and float16 > 0
    assert seen["without_float16"] == [float32, 0]
    assert seen["restored"]
    metadata_length, during, restored = seen["metadata"]
    assert metadata_length > 0 and during == "" and restored


def test_the_worker_runs_while_the_caller_works_and_is_stopped_if_the_caller_fails(tmp_path):
    """worker_started returns at once with the worker running; leaving the block on an error (a
    torch check failing while the worker converts) kills it and reaps it."""
    script = "import os, time; open('started', 'w').write(str(os.getpid())); time.sleep(60)"
    started = worker_started([sys.executable, "-c", script], tmp_path, tmp_path / "w.log", timeout=120)
    with pytest.raises(RuntimeError, match="the torch check failed"), started as worker:
        wait_for(lambda: (tmp_path / "started").is_file(), 30, "the worker to start")
        pid = int((tmp_path / "started").read_text())
        assert worker.proc.pid == pid and alive(pid)
        raise RuntimeError("the torch check failed")
    assert gone_within(pid, 10)


def test_a_failed_precondition_starts_no_worker(tmp_path):
    """int8 without calibration data fails before anything is spawned or written."""
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not used")
    from edge_pipeline.errors import PipelineError

    images = np.zeros((1, 8, 8, 3), np.float32)
    with pytest.raises(PipelineError, match="need calibration data"), \
            conversion_started(onnx, tmp_path / "out", ["float32", "int8"], images, None):
        raise AssertionError("not reached")
    assert not (tmp_path / "out").exists()
