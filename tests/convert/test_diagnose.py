"""Per-layer diagnosis and selective quantization on real converted models.

The hard model has one conv channel with a ~1000x activation range (tests/convert/conftest.py):
the diagnosis must rank that conv first, and auto_keep_float: 1 must recover the accuracy that
full int8 loses. Slow (shares the session conversions).
"""

from __future__ import annotations

import json

import pytest

from edge_pipeline.cli import main
from edge_pipeline.convert.diagnose import diagnose, format_table, layer_names, match_graphs, select_layers
from edge_pipeline.convert.fidelity import fidelity, tflite_logits
from edge_pipeline.convert.flatbuffer import write_model
from edge_pipeline.convert.inspect import read_graph
from edge_pipeline.convert.selective import denylist, float_region


def test_select_layers_by_glob():
    names = ["features.0", "features.3", "features.3/max_pool_2d", "classifier.1"]
    assert select_layers(names, ["features.*"]) == (["features.0", "features.3", "features.3/max_pool_2d"], [])
    assert select_layers(names, ["classifier.1", "nothing*"]) == (["classifier.1"], ["nothing*"])


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float16", "dynamic_int8", "int8", "int16x8"])
def test_every_op_is_matched_structurally_and_verified(all_precisions, precision):
    f = read_graph(all_precisions.files["float32"])
    q = read_graph(all_precisions.files[precision])
    matching = match_graphs(f, q)
    assert matching.verified and not matching.unmatched_float
    assert {m for _, _, m in matching.pairs} == {"graph"}
    # Each float op found its own kind of op.
    assert all(a.op.name == b.op.name for a, b, _ in matching.pairs)


@pytest.mark.slow
def test_layers_are_named_after_the_torch_modules(all_precisions):
    names = layer_names(read_graph(all_precisions.files["float32"]), all_precisions.onnx)
    # nn.Sequential indices of the two convs (BN folded in) and the Linear head.
    assert {"0", "4", "9"} <= set(names.values())
    assert len(set(names.values())) == len(names)


@pytest.mark.slow
def test_diagnosis_ranks_the_outlier_channel_layer_first(hard_model):
    full = hard_model.files["int8"].parent / "model_int8_full.tflite"
    result = diagnose(hard_model.files["float32"], full, hard_model.inputs, hard_model.onnx)
    assert result.verified
    worst = result.ranked()[0]
    assert worst.layer == "conv1" and worst.op == "CONV_2D"
    # Most of conv1's channels lose their signal; everything downstream only inherits the loss.
    assert worst.added > 0.5
    assert all(r.added < worst.added / 2 for r in result.ranked()[1:])
    table = format_table(result.ranked()[:3])
    assert table.splitlines()[0].startswith("| rank | layer") and "conv1" in table.splitlines()[2]


@pytest.mark.slow
def test_auto_keep_float_keeps_the_worst_layer_and_recovers_accuracy(hard_model):
    selective = hard_model.conversion.selective
    assert selective["layers"] == ["conv1"] and selective["auto_ranked"][0]["layer"] == "conv1"
    full = tflite_logits(hard_model.files["int8"].parent / "model_int8_full.tflite", hard_model.data)
    mixed = tflite_logits(hard_model.files["int8"], hard_model.data)
    full_facts = fidelity(*full, hard_model.reference)
    mixed_facts = fidelity(*mixed, hard_model.reference)
    float_accuracy = hard_model.accuracy_after
    assert abs(hard_model.accuracy_before - float_accuracy) < 0.01  # the edit kept the float function
    assert float_accuracy > 0.8
    assert full_facts["accuracy"] < float_accuracy - 0.2  # full int8 collapses
    assert mixed_facts["accuracy"] > float_accuracy - 0.02  # conv1 in float brings it back
    assert mixed_facts["agreement"] > 0.97
    # conv1 and what reads its output up to conv2 run in float; conv2 itself reads float input.
    diagnosis = diagnose(hard_model.files["float32"], hard_model.files["int8"], hard_model.inputs, hard_model.onnx)
    dtypes = {r.layer: r.quant_dtype for r in diagnosis.layers}
    assert dtypes["conv1"] == "float32" and dtypes["fc"] in ("int8", "uint8")


@pytest.mark.slow
def test_float_region_stops_at_the_next_weighted_op(all_precisions):
    graph = read_graph(all_precisions.files["float32"])
    ops = [op.name for op in graph.ops]
    first, second = [i for i, name in enumerate(ops) if name == "CONV_2D"]
    between = set(range(first, second + 1))  # conv, the max pool's zero PAD, MAX_POOL_2D, conv
    assert ops[first + 1:second] == ["PAD", "MAX_POOL_2D"] and float_region(graph, {first}) == between
    tail = float_region(graph, {second})
    assert tail == {second, ops.index("HARD_SWISH"), ops.index("MEAN"), ops.index("FULLY_CONNECTED")}
    assert set(denylist(graph, {first})) == {graph.tensors[graph.ops[i].outputs[0]].name for i in between}


@pytest.mark.slow
def test_diagnose_command_json_and_table(all_precisions, tmp_path, capsys):
    import numpy as np

    inputs = tmp_path / "inputs.npy"
    np.save(inputs, all_precisions.inputs)
    args = [str(all_precisions.files["float32"]), str(all_precisions.files["int8"]), "--inputs", str(inputs),
            "--onnx", str(all_precisions.onnx)]
    assert main(["diagnose", *args, "--json", "--top", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] and report["samples"] == 32 and len(report["ranked"]) == 3
    assert report["ranked"][0]["added"] >= report["ranked"][-1]["added"]
    assert main(["diagnose", *args]) == 0
    text = capsys.readouterr().out
    assert "verified" in text and "rank  layer" in text


def test_diagnose_command_rejects_wrong_arguments(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path)]) == 2
    assert "no metrics.json" in capsys.readouterr().err


@pytest.mark.slow
def test_diagnose_command_on_corrupt_files_is_a_clear_error(all_precisions, tmp_path, capsys):
    from edge_pipeline.convert.flatbuffer import read_model, write_model

    model = read_model(all_precisions.files["int8"])
    model.subgraphs[0].operators[0].inputs = [10_000, *model.subgraphs[0].operators[0].inputs[1:]]
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(write_model(model))
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(all_precisions.files["int8"].read_bytes()[:2000])
    for bad in (broken, truncated):
        assert main(["diagnose", str(all_precisions.files["float32"]), str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        # Caught by the structural check of the flatbuffer, before any runtime loads it.
        assert err.startswith(f"error: {bad}: not a valid TFLite file") and len(err.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["int8", "dynamic_int8", "float16"])
def test_diagnose_refuses_swapped_files(all_precisions, capsys, precision):
    float32, reduced = str(all_precisions.files["float32"]), str(all_precisions.files[precision])
    assert main(["diagnose", reduced, float32]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the files look swapped" in err[0], err
    assert f"swap them: edge-pipeline diagnose {float32} {reduced}" in err[0]
    assert main(["diagnose", reduced, reduced]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not float32: the first file must be the float32 reference" in err[0], err


def _inputs(tmp_path, array):
    import numpy as np

    path = tmp_path / "inputs.npy"
    np.save(path, array)
    return str(path)


@pytest.mark.parametrize("make,fragment", [
    (lambda np: np.zeros((3, 5), np.float32), "shape (3, 5) does not fit tiny.tflite, which expects (N, 4) float samples"),
    (lambda np: np.zeros((4,), np.float32), "shape (4,) does not fit"),
    (lambda np: np.zeros((0, 4), np.float32), "shape (0, 4) does not fit"),
    (lambda np: np.zeros((3, 4), np.int64), "dtype int64 does not fit tiny.tflite"),
    (lambda np: np.full((3, 4), np.nan, np.float32), "contains NaN or infinite values"),
], ids=["shape", "rank", "empty", "dtype", "nan"])
def test_wrong_inputs_file_is_exit_2_naming_the_expected_shape(tmp_path, capsys, make, fragment):
    """`profile --inputs` and `diagnose --inputs`: checked before any device or interpreter work."""
    import numpy as np

    from tests.convert.test_inspect import tiny_model

    model = tmp_path / "tiny.tflite"
    model.write_bytes(write_model(tiny_model()))
    inputs = _inputs(tmp_path, make(np))
    for argv in (["profile", str(model), "--device", "host", "--inputs", inputs],
                 ["diagnose", str(model), str(model), "--inputs", inputs]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {inputs}: ") and fragment in err[0], err


@pytest.mark.parametrize("node, layer", [
    ("/conv1/Conv", "conv1"),
    ("layer1/layer1.0/conv1/Conv", "layer1.0.conv1"),
    ("/features/features.3/features.3.3/Conv", "features.3.3"),
    ("trunk_output/block1/block1-0/f/b/b.0/Conv", "trunk_output.block1.block1-0.f.b.0"),
    ("classifier.0/Conv", "classifier.0"),
    ("Conv_12", "Conv_12"),
])
def test_layer_names_follow_the_module_path(node, layer):
    from edge_pipeline.convert.diagnose import onnx_layer

    assert onnx_layer(node) == layer
