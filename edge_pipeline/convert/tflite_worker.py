"""Conversion worker, run in its own process by `tflite_convert.convert_to_tflite`.

ONNX -> onnx2tf -> TF SavedModel (+ float32/float16 TFLite), then the TFLite converter makes each
quantized precision from the SavedModel with our calibration data. Running in a subprocess keeps
TensorFlow out of the parent (and its crashes: a segfault here is a clear error there), and lets us
block the network: any connection attempt fails loudly instead of downloading something.

Protocol: argv[1] is a JSON spec file; progress lines `@@step <name>` go to stdout; the result
(precision -> file) is written to spec["result"].
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path


def _block_network() -> None:
    def refuse(self, address, *args, **kwargs):
        raise OSError(f"edge-pipeline: network access blocked during conversion (tried {address!r})")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = lambda address, *a, **k: refuse(None, address)  # type: ignore[assignment]


def step(name: str) -> None:
    print(f"@@step {name}", flush=True)


def _converter(saved_model: str, precision: str, calibration, io_type: str, per_channel: bool):
    import numpy as np
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative():
        for sample in calibration:
            yield [np.asarray(sample[None], dtype=np.float32)]

    dtypes = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}
    if precision == "dynamic_int8":
        pass
    elif precision == "int8":
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = dtypes[io_type]
        converter.inference_output_type = dtypes[io_type]
    elif precision == "int16x8":
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        io = tf.int16 if io_type != "float32" else tf.float32
        converter.inference_input_type = io
        converter.inference_output_type = io
    else:
        raise ValueError(f"unknown precision {precision!r}")
    if not per_channel:
        converter._experimental_disable_per_channel = True
    return converter


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    _block_network()
    os.chdir(spec["workdir"])
    step("onnx2tf")
    started = time.perf_counter()
    import onnx2tf

    tf_dir = Path(spec["workdir"]) / "tf"
    onnx2tf.convert(input_onnx_file_path=spec["onnx"], output_folder_path=str(tf_dir), non_verbose=True)
    produced = {}
    stem = Path(spec["onnx"]).stem
    seconds = {"onnx2tf": round(time.perf_counter() - started, 2)}
    calibration = None
    for precision in spec["precisions"]:
        started = time.perf_counter()
        step(precision)
        target = Path(spec["out_dir"]) / f"model_{precision}.tflite"
        if precision in ("float32", "float16"):
            source = tf_dir / f"{stem}_{precision}.tflite"
            if not source.is_file():
                raise RuntimeError(f"onnx2tf did not produce {source.name}")
            shutil.copyfile(source, target)
        else:
            if calibration is None and precision in ("int8", "int16x8"):
                import numpy as np

                calibration = np.load(spec["calibration"])
            converter = _converter(str(tf_dir), precision, calibration, spec["io_type"], spec["per_channel"])
            target.write_bytes(converter.convert())
        produced[precision] = str(target)
        seconds[precision] = round(time.perf_counter() - started, 2)
    Path(spec["result"]).write_text(json.dumps({"files": produced, "seconds": seconds}))
    step("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
