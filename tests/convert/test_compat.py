"""Device-runtime compatibility: real load tests in a subprocess, static knowledge, Flex policy.

Models with newer op versions, Flex ops or broken indices are made by editing a real converted
model's flatbuffer. The tflite-runtime 2.14 checks need its side venv
(`python -m edge_pipeline.convert.compat install tflite-runtime 2.14.0`, `make runtimes`). Tests that
read the session conversion are marked slow.
"""

from __future__ import annotations

import pytest

from edge_pipeline.cli import main
from edge_pipeline.convert.compat import check_device, check_model, problems_from_error, runtime_python
from edge_pipeline.convert.flatbuffer import read_model, schema, write_model
from edge_pipeline.convert.inspect import inspect_tflite
from edge_pipeline.errors import UserError
from edge_pipeline.profiling.devices import DeviceProfile

TFLITE_214 = runtime_python("tflite-runtime", "2.14")
needs_tflite_214 = pytest.mark.skipif(
    TFLITE_214 is None, reason="tflite-runtime 2.14 side venv missing: python -m edge_pipeline.convert.compat install tflite-runtime 2.14.0"
)


def edited(source, target, edit):
    model = read_model(source)
    edit(model)
    target.write_bytes(write_model(model))
    return target


def set_version(op_name: str, version: int):
    def edit(model):
        codes = schema().BuiltinOperator
        for code in model.operatorCodes:
            if max(code.builtinCode, code.deprecatedBuiltinCode) == getattr(codes, op_name):
                code.version = version
    return edit


def make_flex(model):
    """Turn the model's first op into a Flex op (as SELECT_TF_OPS conversion would write it)."""
    code = model.operatorCodes[model.subgraphs[0].operators[0].opcodeIndex]
    code.builtinCode = code.deprecatedBuiltinCode = schema().BuiltinOperator.CUSTOM
    code.customCode = b"FlexConv2D"


@pytest.mark.slow
def test_float32_loads_on_this_environment_s_runtime(all_precisions):
    result = check_model(all_precisions.files["float32"], "ai-edge-litert")
    assert result.status == "ok" and result.method == "loaded" and result.version


@pytest.mark.slow
def test_an_op_version_the_runtime_lacks_is_found_by_loading_it(all_precisions, tmp_path):
    path = edited(all_precisions.files["float32"], tmp_path / "future.tflite", set_version("CONV_2D", 99))
    result = check_model(path, "ai-edge-litert")
    assert result.status == "incompatible" and result.method == "loaded"
    assert [(p.op, p.version) for p in result.problems] == [("CONV_2D", 99)]
    assert "ai-edge-litert" in result.fix and "CONV_2D v99" in result.line()


@pytest.mark.slow
def test_known_limit_is_found_statically_without_the_runtime(all_precisions, tmp_path):
    path = edited(all_precisions.files["int8"], tmp_path / "fc12.tflite", set_version("FULLY_CONNECTED", 12))
    result = check_model(path, "tflite-runtime", "2.14", load=False)
    assert result.status == "incompatible" and result.method == "static"
    assert ("FULLY_CONNECTED", 12) in [(p.op, p.version) for p in result.problems]
    assert "pip install 'ai-edge-litert>=2.1'" in result.fix
    # The same file on a runtime without a known limit and without a load test is only unverified.
    assert check_model(path, "tflite-runtime", "2.16", load=False).status == "unverified"


@pytest.mark.slow
@needs_tflite_214
def test_tflite_runtime_2_14_really_rejects_fully_connected_v12(all_precisions, tmp_path):
    path = edited(all_precisions.files["int8"], tmp_path / "fc12.tflite", set_version("FULLY_CONNECTED", 12))
    result = check_model(path, "tflite-runtime", "2.14.0")
    assert result.status == "incompatible" and result.method == "loaded"
    assert [(p.op, p.version) for p in result.problems] == [("FULLY_CONNECTED", 12)]
    assert "op version not registered" in result.problems[0].reason


@pytest.mark.slow
@needs_tflite_214
def test_tflite_runtime_2_14_loads_our_float32_and_int8(all_precisions):
    for precision in ("float32", "int8"):
        result = check_model(all_precisions.files[precision], "tflite-runtime", "2.14")
        assert result.status == "ok" and result.method == "loaded", result.line()


@pytest.mark.slow
def test_flex_ops_are_rejected_unless_the_device_allows_them(all_precisions, tmp_path):
    path = edited(all_precisions.files["float32"], tmp_path / "flex.tflite", make_flex)
    assert inspect_tflite(path)["flex_ops"] == ["FlexConv2D"]
    strict = DeviceProfile(name="board", runtime={"name": "tflite-runtime", "version": "2.14"})
    result = check_device(path, strict, load=False)
    assert result.status == "incompatible" and result.problems[0].op == "FlexConv2D"
    assert "allow_flex" in result.fix
    lenient = DeviceProfile(name="board", runtime={"name": "tflite-runtime", "version": "2.14"}, allow_flex=True)
    assert check_device(path, lenient, load=False).status == "unverified"


@pytest.mark.slow
def test_a_model_with_broken_indices_is_reported_not_fatal(all_precisions, tmp_path):
    def break_indices(model):
        model.subgraphs[0].operators[0].inputs = [10_000, *model.subgraphs[0].operators[0].inputs[1:]]

    path = edited(all_precisions.files["float32"], tmp_path / "broken.tflite", break_indices)
    # Refused by the structural check before any runtime sees it (the load test would run in a subprocess).
    with pytest.raises(UserError, match="not a valid TFLite file: subgraph 0 operator 0 inputs: tensor index 10000"):
        check_model(path, "ai-edge-litert")


@pytest.mark.slow
def test_inspect_device_flag_exit_code(all_precisions, tmp_path, capsys):
    assert main(["inspect", str(all_precisions.files["int8"]), "--device", "host"]) == 0
    assert "loads on ai-edge-litert" in capsys.readouterr().out
    path = edited(all_precisions.files["float32"], tmp_path / "future.tflite", set_version("CONV_2D", 99))
    assert main(["inspect", str(path), "--device", "host"]) == 1
    assert "does not load" in capsys.readouterr().out


def test_load_errors_are_parsed_into_ops():
    text = ("Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. An older version of this builtin "
            "might be supported. Are you using an old TFLite binary with a newer model?\nRegistration failed.\n")
    assert [(p.op, p.version) for p in problems_from_error(text)] == [("FULLY_CONNECTED", 12)]
    text = ("tflite/kernels/kernel_util.cc:350 no_integer_overflow_from_quantization was not true.Node number 29 "
            "(DEPTHWISE_CONV_2D) failed to prepare.")
    (problem,) = problems_from_error(text)
    assert problem.op == "DEPTHWISE_CONV_2D" and "node 29" in problem.reason
    assert "no_integer_overflow_from_quantization" in problem.reason
