"""Conversion worker, run in its own process by `tflite_convert.convert_to_tflite`.

ONNX -> onnx2tf -> TF SavedModel (+ float32/float16 TFLite), then the TFLite converter makes each
quantized precision from the SavedModel with our calibration data. Running in a subprocess keeps
TensorFlow out of the parent (and its crashes: a segfault here is a clear error there), and lets us
block the network: any connection attempt fails loudly instead of downloading something.

Selective int8 (keep_float / auto_keep_float): the converter calibrates once
(`_experimental_calibrate_only`), then `mlir_quantize` quantizes that calibrated model with
`denylisted_nodes` (output tensor names of the ops to keep in float): the same two calls that
`tf.lite.experimental.QuantizationDebugger.get_nondebug_quantized_model` makes in TF 2.19.

Protocol: argv[1] is a JSON spec file; progress lines `@@step <name>` go to stdout, `@@file
<precision>` once that precision's file is written for good, a Python failure ends with one
`@@error <json>` line; the result (precision -> file, seconds, selective
quantization facts) is written to spec["result"]. Exit code 3 means bad input (e.g. a keep_float
glob that matches no layer), anything else non-zero a conversion failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

INPUT_ERROR_EXIT = 3
# Set to 1 to run onnx2tf exactly as it ships, without the two shortcuts below (they must not change
# a byte: tests/convert/test_conversion_reuse.py compares both ways).
PLAIN_CONVERSION = "EDGE_PIPELINE_PLAIN_CONVERSION"

# Every onnx2tf option that changes the graph, pinned, so that nothing but the ONNX file decides the
# result. Above all `not_use_onnxsim`: otherwise onnx2tf runs the `onnxsim` command if one happens to
# be on PATH (an activated virtualenv has it) and rewrites the model in place, undoing our max-pool
# padding rewrite (int8 PADV2 then gets a ~1e36 scale and the file fails to load).
ONNX2TF_OPTIONS = {
    "not_use_onnxsim": True,
    "not_use_opname_auto_generate": False,  # names only unnamed nodes (deterministic); onnx2tf needs names
    "batch_size": None, "overwrite_input_shape": None, "shape_hints": None, "value_hints": None,
    "no_large_tensor": False, "keep_ncw_or_nchw_or_ncdhw_input_names": None,
    "keep_nwc_or_nhwc_or_ndhwc_input_names": None, "keep_shape_absolutely_input_names": None,
    "disable_group_convolution": False, "enable_accumulation_type_float16": False,
    "enable_batchmatmul_unfold": False, "enable_rnn_unroll": False,
    "disable_suppression_flextranspose": False, "disable_suppression_flexstridedslice": False,
    "disable_strict_mode": False, "optimization_for_gpu_delegate": False,
    "replace_argmax_to_reducemax_and_indices_is_int64": False, "replace_argmax_to_reducemax_and_indices_is_float32": False,
    "replace_argmax_to_fused_argmax_and_indices_is_int64": False, "replace_argmax_to_fused_argmax_and_indices_is_float32": False,
    "replace_to_pseudo_operators": None, "param_replacement_file": "", "auto_generate_json": False,
    "auto_generate_json_on_error": False, "enable_auto_split_model": False, "mvn_epsilon": 1e-10,
    "copy_onnx_input_output_names_to_tflite": False,  # would run the `flatc` command and download a schema
    "output_dynamic_range_quantized_tflite": False, "output_integer_quantized_tflite": False,  # ours, below
    "check_gpu_delegate_compatibility": False, "check_onnx_tf_outputs_elementwise_close": False,
    "check_onnx_tf_outputs_elementwise_close_full": False,
}


class InputError(Exception):
    """Bad input found during conversion: reported as a user error by the parent."""


def _block_network() -> None:
    def refuse(self, address, *args, **kwargs):
        raise OSError(f"edge-pipeline: network access blocked during conversion (tried {address!r})")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = lambda address, *a, **k: refuse(None, address)


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
        # int16x8 models take int16 (or float32) at the boundary; int8/uint8 mean "integer io" here.
        io = tf.int16 if io_type != "float32" else tf.float32
        converter.inference_input_type = io
        converter.inference_output_type = io
    else:
        raise ValueError(f"unknown precision {precision!r}")
    if not per_channel:
        converter._experimental_disable_per_channel = True
    return converter


def selective_int8(spec: dict, tf_dir: Path, calibration, full_int8: Path) -> tuple[bytes, dict]:
    """An int8 model with chosen layers kept in float (see the module docstring)."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    from edge_pipeline.convert.compat import ensure_loadable
    from edge_pipeline.convert.diagnose import diagnose, layer_names, select_layers
    from edge_pipeline.convert.inspect import read_graph
    from edge_pipeline.convert.selective import denylist
    from edge_pipeline.errors import EdgePipelineError

    converter = _converter(str(tf_dir), "int8", calibration, spec["io_type"], spec["per_channel"])
    converter._experimental_calibrate_only = True
    calibrated_path = Path(spec["workdir"]) / "calibrated_int8.tflite"
    calibrated_path.write_bytes(converter.convert())
    graph = read_graph(calibrated_path)
    names = layer_names(graph, spec["onnx"])
    by_name = {name: index for index, name in names.items()}
    chosen, unmatched = select_layers(names.values(), spec.get("keep_float") or [])
    if unmatched:
        known = ", ".join(list(names.values())[:12]) + (", ..." if len(names) > 12 else "")
        raise InputError(f"keep_float: no layer matches {', '.join(map(repr, unmatched))}; layers are: {known}")
    ranked: list[dict] = []
    auto = int(spec.get("auto_keep_float") or 0)
    if auto:
        try:
            ensure_loadable(full_int8)  # diagnosis runs it in this process: check in a subprocess first
        except EdgePipelineError as exc:
            raise RuntimeError(f"auto_keep_float cannot rank layers: {exc}; name layers with keep_float instead") from None
        samples = np.asarray(calibration[: spec.get("diagnose_samples", 32)], np.float32)
        diagnosis = diagnose(calibrated_path, full_int8, samples, spec["onnx"])
        ranked = diagnosis.to_dict(top=max(10, auto))["ranked"]
        picked = [r["layer"] for r in ranked if r["quant_dtype"] not in ("float32", "float16")][:auto]
        chosen += [name for name in picked if name not in chosen]
    io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[spec["io_type"]]
    nodes = denylist(graph, {by_name[name] for name in chosen})
    model = mlir_quantize(
        calibrated_path.read_bytes(), disable_per_channel=not spec["per_channel"],
        input_data_type=io, output_data_type=io, denylisted_nodes=nodes,
    )
    return model, {"layers": chosen, "denylisted_tensors": nodes, "auto_ranked": ranked}


UNSUPPORTED_OP = re.compile(r"not yet supported for op: '(\w+)'")


def quantized_model(spec: dict, tf_dir: Path, precision: str, calibration) -> tuple[bytes, list[str]]:
    """The converter's model for a reduced precision, and the ops left in float. If the integer
    kernel set lacks an op (int16x8 has no HARD_SWISH), that op alone falls back to float:
    TFLITE_BUILTINS joins the supported ops, and the report says which ops stayed float."""
    import tensorflow as tf

    converter = _converter(str(tf_dir), precision, calibration, spec["io_type"], spec["per_channel"])
    try:
        return converter.convert(), []
    except Exception as exc:  # only the "op not supported" case is retried
        missing = UNSUPPORTED_OP.findall(str(exc))
        if not missing or precision not in ("int8", "int16x8"):
            raise
    converter = _converter(str(tf_dir), precision, calibration, spec["io_type"], spec["per_channel"])
    converter.target_spec.supported_ops = list(converter.target_spec.supported_ops) + [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert(), sorted(set(missing))


@contextmanager
def no_keras_metadata() -> Iterator[None]:
    """Skip computing a Keras layer's SavedModel metadata, which nothing here ever writes.

    `tf.saved_model.save` walks every object's attributes looking for tf.functions
    (`AutoTrackable._trackable_children` calls `getattr` on everything in `dir(obj)`), and so reads
    each Keras layer's `_tracking_metadata` property: a JSON dump of the layer's config. onnx2tf's
    layers carry their constant tensors in that config, so each dump serializes every weight as
    nested Python lists, and the model's own dump does it again for all layers. That was ~60% of a
    conversion (three saves: onnx2tf's SavedModel, then one inside each Keras TFLite conversion).
    The value is thrown away: `tf.saved_model.save` stores only the object identifier and version
    (saved_model/save.py `_write_object_proto`); only Keras' own `model.save` writes it
    (keras_metadata.pb), which this worker never calls. So the saved graphs, and the TFLite files,
    are the same bytes (tests/convert/test_conversion_reuse.py checks it)."""
    from tf_keras.src.engine import base_layer, base_layer_v1

    classes = (base_layer.Layer, base_layer_v1.Layer)
    saved = [cls.__dict__["_tracking_metadata"] for cls in classes]
    for cls in classes:
        cls._tracking_metadata = property(lambda self: "")
    try:
        yield
    finally:
        for cls, original in zip(classes, saved):
            cls._tracking_metadata = original


@contextmanager
def only_wanted_float_files(precisions: list[str]) -> Iterator[None]:
    """onnx2tf always converts float32, then float16 with the same converter: skip the float16
    conversion when no stage asked for it (the float32 file is written before it, so it does not
    change). Only onnx2tf makes Keras converters in this window, and only its float16 pass asks for
    float16 types."""
    import tensorflow as tf

    if "float16" in precisions:
        yield
        return
    cls = tf.lite.TFLiteConverter
    original = cls.__dict__["from_keras_model"]  # the classmethod itself, restored as it was

    def from_keras_model(model):
        converter = original.__get__(None, cls)(model)
        convert = converter.convert

        def convert_unless_float16():
            if tf.float16 in converter.target_spec.supported_types:
                return b""  # onnx2tf writes an empty float16 file in its work folder; nobody reads it
            return convert()

        converter.convert = convert_unless_float16
        return converter

    cls.from_keras_model = from_keras_model
    try:
        yield
    finally:
        cls.from_keras_model = original


def convert_all(spec: dict) -> dict:
    """onnx2tf once, then each precision; a reduced precision that fails is recorded, not fatal
    to the others (the parent decides)."""
    out_dir = Path(spec["out_dir"])
    tf_dir = Path(spec["workdir"]) / "tf"
    stem = Path(spec["onnx"]).stem
    step("onnx2tf")
    started = time.perf_counter()
    import onnx2tf

    with ExitStack() as shortcuts:
        if os.environ.get(PLAIN_CONVERSION) != "1":
            shortcuts.enter_context(no_keras_metadata())
            shortcuts.enter_context(only_wanted_float_files(spec["precisions"]))
        onnx2tf.convert(
            input_onnx_file_path=spec["onnx"], output_folder_path=str(tf_dir), non_verbose=True,
            onnxruntime_output_memmap_dir=str(Path(spec["workdir"]) / "ort-memmap"), **ONNX2TF_OPTIONS,
        )
    result: dict = {"files": {}, "seconds": {"onnx2tf": round(time.perf_counter() - started, 2)},
                    "selective": None, "failed": {}, "float_fallback": {}}
    calibration = None
    for precision in spec["precisions"]:
        started = time.perf_counter()
        step(precision)
        target = out_dir / f"model_{precision}.tflite"
        if precision in ("float32", "float16"):
            source = tf_dir / f"{stem}_{precision}.tflite"
            if not source.is_file():
                raise RuntimeError(f"onnx2tf did not produce {source.name}")
            shutil.copyfile(source, target)
        else:
            if calibration is None and precision in ("int8", "int16x8"):
                from edge_pipeline.artifacts import read_npy

                calibration = read_npy(spec["calibration"], what="calibration array")
            try:
                model, fallback = quantized_model(spec, tf_dir, precision, calibration)
            except Exception as exc:  # reported per precision
                text = str(exc).strip().splitlines()
                result["failed"][precision] = f"{type(exc).__name__}: {text[0][:300] if text else ''}"
                continue
            target.write_bytes(model)
            if fallback:
                result["float_fallback"][precision] = fallback
            if precision == "int8" and (spec.get("keep_float") or spec.get("auto_keep_float")):
                step("int8 keep_float")
                full = out_dir / "model_int8_full.tflite"
                os.replace(target, full)
                model, facts = selective_int8(spec, tf_dir, calibration, full)
                target.write_bytes(model)
                result["selective"] = {**facts, "full_int8": str(full)}
        result["files"][precision] = str(target)
        result["seconds"][precision] = round(time.perf_counter() - started, 2)
        print(f"@@file {precision}", flush=True)  # final: the parent may evaluate it while we go on
    return result


def main(spec_path: str) -> int:
    from edge_pipeline.artifacts import read_json

    spec = read_json(spec_path)
    _block_network()
    os.chdir(spec["workdir"])
    try:
        result = convert_all(spec)
    except InputError as exc:
        print("@@error " + json.dumps({"kind": "input", "message": str(exc)}), flush=True)
        return INPUT_ERROR_EXIT
    except BaseException as exc:  # reported to the parent, then re-raised for the log
        if isinstance(exc, SystemExit):
            raise  # onnx2tf exits after printing its own ERROR lines: the parent reads them in the log
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print("@@error " + json.dumps({"kind": "conversion", "type": type(exc).__name__, "message": message}), flush=True)
        raise
    Path(spec["result"]).write_text(json.dumps(result))
    step("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
