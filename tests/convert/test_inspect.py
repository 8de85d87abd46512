"""`inspect`: ops with versions, tensors, quantization, sizes; corrupt files give one clear error."""

from __future__ import annotations

import json

import pytest

from edge_pipeline.cli import main
from edge_pipeline.convert.flatbuffer import read_model, write_model
from edge_pipeline.convert.inspect import inspect_tflite, read_graph
from edge_pipeline.errors import UserError


@pytest.mark.slow
def test_inspect_reports_ops_versions_quantization_and_sizes(all_precisions):
    info = inspect_tflite(all_precisions.files["int8"])
    assert info["ops"]["CONV_2D"] == 2 and info["ops"]["FULLY_CONNECTED"] == 1
    assert info["op_versions"]["CONV_2D"] >= 3  # int8 kernels are newer op versions than float ones
    assert info["op_count"] == sum(info["ops"].values())
    assert info["size_bytes"] == all_precisions.files["int8"].stat().st_size
    assert 0 < info["weight_bytes"] < info["size_bytes"]
    weights = [t for t in info["tensors"] if t["bytes"] and t["dtype"] == "int8"]
    assert weights and all(t["quantization"]["zero_point"] == "per-channel" or t["quantization"]["scales"] == 1 for t in weights)
    per_channel = [t for t in weights if t["quantization"]["scales"] > 1]
    assert per_channel, "int8 conv weights are quantized per output channel"
    assert info["largest_activation"]["bytes"] > 0
    assert info["min_runtime_version"]


@pytest.mark.slow
def test_inspect_command_text_and_json(all_precisions, capsys):
    path = str(all_precisions.files["int8"])
    assert main(["inspect", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["transposes"] == 0 and info["flex_ops"] == [] and "CONV_2D" in info["op_versions"]
    assert main(["inspect", path, "--tensors"]) == 0
    text = capsys.readouterr().out
    assert "CONV_2D" in text and "TRANSPOSE ops: 0" in text and "scale=" in text and "zero_point=" in text


@pytest.mark.slow
def test_graph_round_trips_through_the_object_api(all_precisions):
    buf = all_precisions.files["float32"].read_bytes()
    again = read_graph(write_model(read_model(buf)))
    original = read_graph(buf)
    assert [(o.name, o.version, o.inputs, o.outputs) for o in again.ops] == [
        (o.name, o.version, o.inputs, o.outputs) for o in original.ops
    ]


@pytest.mark.parametrize("content, fragment", [
    (b"", "not a TFLite model"),
    (b"PK\x03\x04 this is a zip file, not a model", "not a TFLite model"),
    (b"\x18\x00\x00\x00TFL3" + b"\xff" * 40, "corrupt TFLite flatbuffer"),
])
def test_corrupt_files_give_one_clear_error(tmp_path, capsys, content, fragment):
    path = tmp_path / "broken.tflite"
    path.write_bytes(content)
    with pytest.raises(UserError, match=fragment):
        inspect_tflite(path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_truncated_model_is_a_clear_error(all_precisions, tmp_path):
    buf = all_precisions.files["int8"].read_bytes()
    path = tmp_path / "truncated.tflite"
    path.write_bytes(buf[: len(buf) // 3])
    with pytest.raises(UserError, match="corrupt TFLite flatbuffer|not a TFLite model"):
        inspect_tflite(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.tflite: file not found; give the path of a TFLite model"):
        inspect_tflite(tmp_path / "nope.tflite")


# -- structural validation: every index in the flatbuffer is checked (issue 11.8) ------------------


def tiny_model():
    """A real two-op model (ADD then MUL with a constant), built with the schema's object API:
    input[1,4] + const -> sum; sum * const -> output. Fast: no converter."""
    import numpy as np

    from edge_pipeline.convert.flatbuffer import schema

    s = schema()
    model = s.ModelT()
    model.version = 3
    model.operatorCodes = []
    for builtin in (s.BuiltinOperator.ADD, s.BuiltinOperator.MUL):
        code = s.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, builtin, 1
        model.operatorCodes.append(code)
    model.buffers = [s.BufferT() for _ in range(5)]
    model.buffers[2].data = np.frombuffer(np.arange(4, dtype=np.float32).tobytes(), np.uint8)
    graph = s.SubGraphT()
    graph.tensors = []
    for index, name in enumerate(["input", "const", "sum", "output"]):
        tensor = s.TensorT()
        tensor.shape, tensor.type, tensor.buffer, tensor.name = np.array([1, 4], np.int32), s.TensorType.FLOAT32, index + 1, name
        graph.tensors.append(tensor)
    graph.operators = []
    for opcode, inputs, outputs in ((0, [0, 1], [2]), (1, [2, 1], [3])):
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode, np.array(inputs, np.int32), np.array(outputs, np.int32)
        graph.operators.append(op)
    graph.inputs, graph.outputs, graph.name = np.array([0], np.int32), np.array([3], np.int32), "main"
    model.subgraphs = [graph]
    return model


def with_opcode_index(buf: bytes, value: int) -> bytes:
    """Overwrite, in the file's bytes, the opcode index of the first operator that stores one."""
    import struct

    from edge_pipeline.convert.flatbuffer import schema

    graph = schema().Model.GetRootAs(buf, 0).Subgraphs(0)
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        field = op._tab.Offset(4)  # vtable slot of `opcode_index` (absent when it is the default 0)
        if field:
            at = op._tab.Pos + field
            return buf[:at] + struct.pack("<I", value) + buf[at + 4:]
    raise AssertionError("no operator stores an opcode index")


def test_tiny_model_is_valid_and_runs(tmp_path):
    import numpy as np

    from edge_pipeline.convert.runtime import load_interpreter, run_tflite

    path = tmp_path / "tiny.tflite"
    path.write_bytes(write_model(tiny_model()))
    assert inspect_tflite(path)["ops"] == {"ADD": 1, "MUL": 1}
    out = run_tflite(load_interpreter(path), [np.ones((1, 4), np.float32)])  # one sample of shape [4]
    assert out.tolist() == [[0.0, 2.0, 6.0, 12.0]]


def _mutate(field: str):
    """A change to the tiny model's object tree that breaks one kind of index or consistency."""
    import numpy as np

    from edge_pipeline.convert.flatbuffer import schema

    def apply(model):
        s, graph = schema(), model.subgraphs[0]
        if field == "op input tensor":
            graph.operators[0].inputs = np.array([0, 99], np.int32)
        elif field == "negative tensor index":
            graph.operators[1].inputs = np.array([2, -3], np.int32)  # Python would wrap it to tensor 1
        elif field == "op output tensor":
            graph.operators[1].outputs = np.array([4], np.int32)
        elif field == "tensor buffer":
            graph.tensors[1].buffer = 40
        elif field == "graph input":
            graph.inputs = np.array([7], np.int32)
        elif field == "constant size":
            model.buffers[2].data = np.zeros(12, np.uint8)  # 3 floats for a [1, 4] tensor
        elif field == "per-channel scales":
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint, q.quantizedDimension = np.ones(3, np.float32), np.zeros(3, np.int64), 1
            graph.tensors[1].quantization = q
        elif field == "signature subgraph":
            signature = s.SignatureDefT()
            signature.signatureKey, signature.subgraphIndex, signature.inputs, signature.outputs = "serving", 3, [], []
            model.signatureDefs = [signature]
        elif field == "control-flow subgraph":
            options = s.WhileOptionsT()
            options.condSubgraphIndex, options.bodySubgraphIndex = 0, 5
            graph.operators[0].builtinOptionsType, graph.operators[0].builtinOptions = s.BuiltinOptions.WhileOptions, options
        elif field == "metadata buffer":
            meta = s.MetadataT()
            meta.name, meta.buffer = "min_runtime_version", 77
            model.metadata = [meta]
        return model

    return apply


BROKEN = [
    ("op input tensor", "subgraph 0 operator 0 inputs: tensor index 99 out of range (the model has 4 tensors)"),
    ("negative tensor index", "subgraph 0 operator 1 inputs: tensor index -3 out of range"),
    ("op output tensor", "subgraph 0 operator 1 outputs: tensor index 4 out of range"),
    ("tensor buffer", "subgraph 0 tensor 1: buffer index 40 out of range (the model has 5 buffers)"),
    ("graph input", "subgraph 0 inputs: tensor index 7 out of range"),
    ("constant size", "subgraph 0 tensor 1: 12 bytes of constant data for shape [1, 4]"),
    ("per-channel scales", "subgraph 0 tensor 1: 3 per-channel scales along axis 1 of shape [1, 4]"),
    ("signature subgraph", "signature 0: subgraph index 3 out of range (the model has 1 subgraphs)"),
    ("control-flow subgraph", "subgraph 0 operator 0 bodySubgraphIndex: subgraph index 5 out of range"),
    ("metadata buffer", "metadata 0: buffer index 77 out of range"),
]


def _assert_one_error_line(path, fragment, capsys):
    with pytest.raises(UserError) as info:
        inspect_tflite(path)
    assert f"{path}: not a valid TFLite file" in str(info.value) and fragment in str(info.value), str(info.value)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_opcode_index_out_of_range_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "bad-opcode.tflite"
    path.write_bytes(with_opcode_index(write_model(tiny_model()), 99))
    _assert_one_error_line(path, "subgraph 0 operator 1: opcode index 99 out of range (the model has 2 opcodes)", capsys)


@pytest.mark.parametrize("field,fragment", BROKEN, ids=[b[0] for b in BROKEN])
def test_every_index_and_size_is_checked(tmp_path, capsys, field, fragment):
    path = tmp_path / "broken.tflite"
    path.write_bytes(write_model(_mutate(field)(tiny_model())))
    _assert_one_error_line(path, fragment, capsys)


def test_bad_flatbuffer_offsets_are_one_error_line(tmp_path, capsys):
    """Root or vector offsets pointing outside the file."""
    buf = bytearray(write_model(tiny_model()))
    for name, edit in [("root", lambda b: b.__setitem__(slice(0, 4), (len(b) + 100).to_bytes(4, "little"))),
                       ("every word", lambda b: b.__setitem__(slice(8, len(b)), b"\xff" * (len(b) - 8)))]:
        broken = bytearray(buf)
        edit(broken)
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(bytes(broken))
        _assert_one_error_line(path, "", capsys)


@pytest.mark.slow
def test_opcode_index_out_of_range_in_a_converted_model(all_precisions, tmp_path, capsys):
    """The same byte edit on a real onnx2tf/TFLite-converter output."""
    path = tmp_path / "int8-bad-opcode.tflite"
    path.write_bytes(with_opcode_index(all_precisions.files["int8"].read_bytes(), 1000))
    _assert_one_error_line(path, "opcode index 1000 out of range", capsys)


def test_no_pip_install_hint_for_a_file_the_runtime_cannot_load(tmp_path, capsys):
    """A damaged op code is not fixed by installing anything: no "pip install" in the fix (issue 11.10)."""
    from edge_pipeline.convert.compat import check_model

    model = tiny_model()
    model.operatorCodes[1].builtinCode, model.operatorCodes[1].deprecatedBuiltinCode = 250, 127
    path = tmp_path / "unknown-op.tflite"
    path.write_bytes(write_model(model))
    result = check_model(path, "ai-edge-litert")
    assert result.status == "incompatible" and "pip install" not in result.line()
    assert "re-export" in result.fix
    assert main(["inspect", str(path), "--device", "host"]) == 1
    assert "pip install" not in capsys.readouterr().out
