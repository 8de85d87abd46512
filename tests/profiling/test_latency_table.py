"""The per-device latency model: op signatures, single-op models, the table on the device, predictions.

Every measurement here is real (the agent on this host, ai-edge-litert); no assertion is on a time's
value, only on what was measured, stored, reused and summed."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from edge_pipeline.convert.inspect import read_graph
from edge_pipeline.profiling import latency_table
from edge_pipeline.profiling.devices import get_device
from edge_pipeline.profiling.latency_table import EMPTY_KEY, load_table, measure, table_path
from edge_pipeline.profiling.opmodels import empty_model, extract, generate
from edge_pipeline.profiling.opsig import OpSig, TensorSig, signatures, unit_key, units
from edge_pipeline.profiling.predict import predict_file, predict_signatures, price


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_PIPELINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def host():
    return get_device("host")


def run_model(content: bytes) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=1)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.ones(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_every_op_extracts_and_regenerates_with_the_same_signature_and_runs(tiny_models, precision):
    graph = read_graph(tiny_models[precision])
    sigs = signatures(graph)
    assert [s.op for s in sigs] == [op.name for op in graph.ops]
    for i, sig in enumerate(sigs):
        for content in (extract(graph.model, i), generate(sig)):
            alone = signatures(read_graph(content))
            assert [s.key() for s in alone] == [sig.key()]
            outputs = run_model(content)
            assert [tuple(o.shape) for o in outputs] == [t.shape for t in sig.outputs]


def test_extracted_op_computes_what_it_computed_inside_the_model(tiny_models):
    """The first conv alone, on the model's input, gives the model's first intermediate values: the
    weights, quantization and options came along."""
    from ai_edge_litert.interpreter import Interpreter

    graph = read_graph(tiny_models["float32"])
    x = np.random.default_rng(0).standard_normal(graph.tensors[graph.inputs[0]].shape).astype(np.float32)
    full = Interpreter(model_path=str(tiny_models["float32"]), experimental_preserve_all_tensors=True)
    full.allocate_tensors()
    full.set_tensor(full.get_input_details()[0]["index"], x)
    full.invoke()
    expected = full.get_tensor(graph.ops[0].outputs[0])
    alone = Interpreter(model_content=extract(graph.model, 0))
    alone.allocate_tensors()
    alone.set_tensor(alone.get_input_details()[0]["index"], x)
    alone.invoke()
    np.testing.assert_allclose(alone.get_tensor(alone.get_output_details()[0]["index"]), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_a_pad_feeding_a_conv_is_timed_with_it(tiny_models, precision):
    """XNNPACK folds such a PAD into the conv's padding: alone it would be charged a full copy."""
    graph = read_graph(tiny_models[precision])
    grouped = units(graph)
    pairs = [(ids, u) for ids, u in grouped if len(u) == 2]
    assert [tuple(s.op for s in u) for _, u in pairs] == [("PAD", "CONV_2D")]  # the stride-2 conv
    assert sorted(i for ids, _ in grouped for i in ids) == list(range(len(graph.ops)))  # every op once
    ids, unit = pairs[0]
    for content in (extract(graph.model, ids), generate(unit)):
        assert unit_key(tuple(signatures(read_graph(content)))) == unit_key(unit)
        [out] = run_model(content)
        assert out.shape == unit[-1].outputs[0].shape


def conv_sig(stride=1, act=1, dtype="float32", per_channel=False, cout=8) -> OpSig:
    q, w = ("pt", "pc" if per_channel else "pt") if dtype == "int8" else ("", "")
    bias = "int32" if dtype == "int8" else "float32"
    return OpSig("CONV_2D", (TensorSig((1, 8, 8, 4), dtype, False, q), TensorSig((cout, 3, 3, 4), dtype, True, w),
                             TensorSig((cout,), bias, True, w)),
                 (TensorSig((1, 8 // stride, 8 // stride, cout), dtype, False, q),),
                 (("fusedActivationFunction", act), ("padding", 0), ("strideH", stride), ("strideW", stride)), "Conv2DOptions")


def test_the_key_names_everything_the_kernel_depends_on():
    base = conv_sig()
    variants = [conv_sig(stride=2), conv_sig(act=3), conv_sig(dtype="int8"), conv_sig(dtype="int8", per_channel=True),
                conv_sig(cout=16)]
    keys = {base.key(), *(v.key() for v in variants)}
    assert len(keys) == 1 + len(variants)
    assert base.key() == conv_sig().key()  # and nothing else: equal ops share one entry
    assert "CONV_2D(1x8x8x4:float32, c8x3x3x4:float32" in base.key()


def test_small_integer_constants_are_part_of_the_signature():
    def pad(p):
        return OpSig("PAD", (TensorSig((1, 8, 8, 4), "float32"), TensorSig((4, 2), "int32", True, "", p)),
                     (TensorSig((1, 9, 9, 4), "float32"),), (), "PadOptions")
    a, b = pad((0, 0, 0, 1, 0, 1, 0, 0)), pad((0, 0, 1, 0, 1, 0, 0, 0))
    assert a.key() != b.key()
    assert [s.key() for s in signatures(read_graph(generate(a)))] == [a.key()]


def test_the_table_is_measured_once_and_extended_only_by_missing_ops(tiny_models, cache, host, monkeypatch):
    timed: list[int] = []
    real = latency_table._time_chunk
    monkeypatch.setattr(latency_table, "_time_chunk", lambda d, t, makers: timed.append(len(makers)) or real(d, t, makers))

    first = predict_file(tiny_models["float32"], host)
    unique = len({unit_key(u) for _, u in units(read_graph(tiny_models["float32"]))})
    assert timed == [unique + 1]  # the file's distinct ops and the empty invoke
    table = load_table(host)
    assert table is not None and table.name == f"host@{table.runtime['version']}" and table.runtime["name"] == "ai-edge-litert"
    assert len(table.entries) == unique + 1 and table.empty_ms is not None

    again = predict_file(tiny_models["float32"], host)
    assert timed == [unique + 1] and again.ms == first.ms  # nothing measured twice, same answer
    predict_file(tiny_models["int8"], host)
    int8_unique = len({unit_key(u) for _, u in units(read_graph(tiny_models["int8"]))})
    assert timed == [unique + 1, int8_unique]
    predictor = first.fields()["predictor"]
    assert predictor["table"] == table.name and predictor["entries"] == unique + 1
    assert predictor["ops"] == len(units(read_graph(tiny_models["float32"])))
    assert predictor["calibration_models"] == 0 and first.ms == first.raw_ms  # nothing learned yet


def test_a_prediction_is_one_invoke_plus_each_ops_extra_time(tiny_models, cache, host):
    prediction = predict_file(tiny_models["int8"], host)
    table = load_table(host)
    keys = [unit_key(u) for _, u in units(read_graph(tiny_models["int8"]))]
    expected = table.empty_ms + sum(max(table.ms(k) - table.empty_ms, 0.0) for k in keys)
    assert prediction.raw_ms == pytest.approx(expected) and prediction.ms == prediction.raw_ms
    assert prediction.ms > 0 and prediction.ops == len(keys) and not prediction.unpriced


def test_ops_the_device_cannot_run_alone_are_reported_not_guessed(cache, host):
    broken = OpSig("CONV_2D", (TensorSig((1, 4, 4, 3), "float32"), TensorSig((2, 3, 3, 5), "float32", True),
                               TensorSig((2,), "float32", True)),
                   (TensorSig((1, 4, 4, 2), "float32"),), (("padding", 0), ("strideH", 1), ("strideW", 1)), "Conv2DOptions")
    fine = conv_sig()
    prediction = predict_signatures([fine, broken], host)
    table = load_table(host)
    assert "error" in table.entries[broken.key()] and table.ms(fine.key()) is not None
    assert prediction.unpriced == [broken.key()]
    assert prediction.fields()["predictor"]["unpriced_ops"] == [broken.key()]


def test_a_damaged_table_is_set_aside_and_rebuilt(cache, host, capsys):
    path = table_path(host)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert load_table(host) is None
    assert (path.parent / (path.name + ".damaged")).read_text() == "{not json"
    assert "set aside" in capsys.readouterr().err.replace("\n", " ")
    table = measure(host, {conv_sig().key(): lambda: generate(conv_sig())})
    assert table.ms(conv_sig().key()) is not None and json.loads(path.read_text())["format"] == latency_table.TABLE_FORMAT


def test_another_runtime_version_starts_a_new_table_and_keeps_the_old(cache, host):
    path = table_path(host)
    path.parent.mkdir(parents=True)
    stale = {"format": 1, "device": "host", "threads": 1, "runtime": {"name": "ai-edge-litert", "version": "0.0.1"},
             "arch": "x86_64", "entries": {EMPTY_KEY: {"ms": 1.0}, conv_sig().key(): {"ms": 5.0}}}
    path.write_text(json.dumps(stale))
    table = measure(host, {conv_sig(cout=16).key(): lambda: generate(conv_sig(cout=16))})
    assert table.runtime["version"] != "0.0.1"
    assert json.loads((path.parent / f"{path.stem}@0.0.1.json").read_text()) == stale
    # the new table holds what was asked, measured under the new runtime, and no stale entry
    assert set(table.entries) == {EMPTY_KEY, conv_sig(cout=16).key()}


def test_the_agent_times_every_file_of_a_bundle_and_reports_the_broken_one(tmp_path):
    from edge_pipeline.profiling.agent import main as agent_main

    bundle = tmp_path / "ops.zip"
    with zipfile.ZipFile(bundle, "w") as z:
        z.writestr("ops.json", json.dumps({"files": ["a.tflite", "b.tflite"], "rounds": 2, "min_runs": 3, "min_seconds": 0}))
        z.writestr("a.tflite", empty_model())
        z.writestr("b.tflite", b"TFL3 but not a model")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = agent_main([str(bundle), "--mode", "ops"])
    result = json.loads(out.getvalue())
    assert code == 0 and result["ok"]
    assert result["ops"]["a.tflite"]["rounds"] == 2 and result["ops"]["a.tflite"]["ms"] > 0
    assert set(result["ops"]["b.tflite"]) == {"error"}


def test_price_counts_each_op_once_per_use(cache, host):
    sig = conv_sig()
    table = measure(host, {sig.key(): lambda: generate(sig)})
    one, three = price([sig.key()], table), price([sig.key()] * 3, table)
    assert three.ms - table.empty_ms == pytest.approx(3 * (one.ms - table.empty_ms))


def test_the_table_learns_the_in_model_cost_of_weights_from_measured_models(tiny_models, cache, host):
    """Three measured models with weights teach ms per weight MB (median of their gaps); a prediction
    adds it; a measurement from another weight type or a too-light model teaches nothing."""
    from edge_pipeline.profiling.latency_table import record_model
    from edge_pipeline.profiling.predict import weight_cost

    prediction = predict_file(tiny_models["float32"], host)  # builds the table
    for i, gap in enumerate((0.1, 0.2, 0.4)):
        record_model(host, f"sha{i}", {"weights": "float", "weight_mb": 2.0, "raw_ms": 1.0, "measured_ms": 1.0 + gap})
    record_model(host, "light", {"weights": "float", "weight_mb": 0.01, "raw_ms": 1.0, "measured_ms": 9.0})
    record_model(host, "int8", {"weights": "int8", "weight_mb": 2.0, "raw_ms": 1.0, "measured_ms": 0.5})
    table = load_table(host)
    assert weight_cost(table, "float") == (pytest.approx(0.1), 3)  # median of 0.05, 0.1, 0.2 ms per MB
    assert weight_cost(table, "int8") == (0.0, 1)  # one model is not enough
    again = predict_file(tiny_models["float32"], host)
    assert again.raw_ms == prediction.raw_ms
    assert again.ms == pytest.approx(again.raw_ms + 0.1 * again.weight_mb) and again.weight_mb > 0
    assert again.fields()["predictor"]["calibration_models"] == 3
    record_model(host, "sha0", {"weights": "float", "weight_mb": 2.0, "raw_ms": 1.0, "measured_ms": 3.0})  # re-measured
    assert len(load_table(host).models) == 5 and weight_cost(load_table(host), "float")[0] == pytest.approx(0.2)


def test_ops_are_timed_on_inputs_shaped_like_inner_activations():
    from edge_pipeline.profiling.agent import activation_like

    x = activation_like({"shape": [1, 8, 8, 16], "dtype": np.float32}, np)
    assert x.dtype == np.float32 and x.min() == 0 and 0.3 < np.mean(x == 0) < 0.7  # rectified, like after a ReLU
    q = activation_like({"shape": [1, 8, 8, 16], "dtype": np.int8}, np)
    assert q.dtype == np.int8 and q.min() < 0  # quantized inputs keep their full range
