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
    with pytest.raises(UserError, match="cannot read"):
        inspect_tflite(tmp_path / "nope.tflite")
