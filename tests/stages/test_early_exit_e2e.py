"""End to end: vgg_small (width 0.5, 16 px digits) trained, given self-distilled exits, exported as an
int8 chain of segments, run adaptively on this host by the profiling agent, and reported."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_pipeline.cli import main

from ..conftest import TINY_HEAD, write

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # four conversions (~1-2 min on 2 cores)

SAMPLES = 64


@pytest.fixture(scope="module")
def exit_run(tmp_path_factory, fast_device):
    root = tmp_path_factory.mktemp("early-exit-e2e")
    recipe = write(root / "ee.yaml", TINY_HEAD + f"""\
stages:
  - train: {{epochs: 2, lr: 0.05}}
  - early_exit: {{epochs: 1, device_samples: {SAMPLES}, device_repeats: 1}}
  - quantize: {{mode: int8, calibration_samples: 64}}
  - export: {{format: tflite}}
  - profile: {{devices: [{fast_device}], baseline: false, outputs_check: 0}}
""")
    out = root / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    return recipe, out, json.loads((out / "metrics.json").read_text())


def test_export_writes_a_chain_checked_against_torch(exit_run):
    from edge_pipeline.compress.early_exit import choose_threshold
    from edge_pipeline.convert.segments import ChainRunner
    from edge_pipeline.data import build_data
    from edge_pipeline.recipe import load_recipe

    recipe, out, metrics = exit_run
    loaded = load_recipe(recipe)
    data = build_data(loaded.data, seed=loaded.seed)
    export = next(s for s in metrics["stages"] if s["type"] == "export")
    assert {a["precision"] for a in export["artifacts"]} == {"float32", "int8"}  # the plain files, as without exits
    chain = json.loads((out / "04-export" / "exits.json").read_text())
    stage = json.loads((out / "02-early_exit" / "details.json").read_text())
    assert len(chain["segments"]) == 3 and chain["threshold"] == stage["threshold"] and chain["measure"] == "entropy"
    for precision in ("float32", "int8"):
        facts = chain["precisions"][precision]
        assert [(out / "04-export" / s["file"]).is_file() for s in facts["segments"]] == [True] * 3
        assert [s["features_output"] is None for s in facts["segments"]] == [False, False, True]
        assert sum(facts["adaptive"]["exit_counts"]) == 270
        # each precision's threshold is chosen on validation from its own files' logits, and applied on test
        assert facts["adaptive"]["threshold"] == facts["threshold"] == facts["val"]["threshold"]
        assert facts["val"]["accuracy"] >= facts["val"]["reference_accuracy"] - stage["max_accuracy_drop"] - 1e-9
        runner = ChainRunner([out / "04-export" / s["file"] for s in facts["segments"]], [s["features_layout"] for s in facts["segments"]])
        xs, ys = zip(*data.batches("val"))
        val_logits = runner.all_exits(np.concatenate(xs).transpose(0, 2, 3, 1))
        own, _ = choose_threshold(val_logits, np.concatenate(ys), chain["measure"], [e["macs"] for e in chain["exits"]],
                                  stage["max_accuracy_drop"])
        assert facts["threshold"] == own.threshold  # from these files' logits, not torch's
    float32 = chain["precisions"]["float32"]
    assert all(s["max_rel_error"] <= 1e-4 and s["agreement"] == 1.0 for s in float32["segments"])
    torch_accuracy = [e["test_accuracy"] for e in stage["exits"]]
    assert np.allclose(float32["exit_accuracy"], torch_accuracy, atol=1.5 / 270)  # the TFLite chain is the torch chain
    assert abs(chain["precisions"]["int8"]["exit_accuracy"][-1] - torch_accuracy[-1]) <= 0.03
    metadata = json.loads((out / "04-export" / "metadata.json").read_text())
    assert metadata["early_exit"]["description"] == "exits.json" and len(metadata["early_exit"]["files"]["int8"]) == 3


def test_profile_runs_adaptive_inference_for_a_grid_of_thresholds(exit_run):
    _, out, metrics = exit_run
    profile = next(s for s in metrics["stages"] if s["type"] == "profile")
    by_model = {json.loads((out / p).read_text())["model"]: json.loads((out / p).read_text()) for p in profile["profiles"]}
    block = by_model["model_int8.tflite"]["early_exit"]
    assert {"thresholds", "chosen", "plain_ms", "worst_case_ms"} <= set(block)  # DESIGN.md's profile addition
    assert block["samples"] == SAMPLES and block["precision"] == "int8"
    rows = {r["threshold"]: r for r in block["thresholds"]}
    chain = json.loads((out / "04-export" / "exits.json").read_text())
    assert block["chosen"] == chain["precisions"]["int8"]["threshold"]  # the int8 files' own threshold
    assert block["chosen"] in rows and 0.0 in rows
    for row in rows.values():
        assert set(row) == {"threshold", "accuracy", "mean_ms", "p90_ms", "exit_counts"}
        assert sum(row["exit_counts"]) == SAMPLES and row["mean_ms"] > 0 and row["p90_ms"] > 0
    assert rows[0.0]["exit_counts"] == [0, 0, SAMPLES] and rows[0.0]["accuracy"] == block["worst_case_accuracy"]
    assert rows[max(rows)]["exit_counts"][0] == SAMPLES  # the top of the grid: every input leaves at the first exit
    assert abs(block["plain_accuracy"] - block["worst_case_accuracy"]) <= 3 / SAMPLES  # two int8 conversions of one network
    assert block["speedup"] == pytest.approx(block["plain_ms"] / rows[block["chosen"]]["mean_ms"], rel=1e-2)
    # every input of the worst case passes each exit in order: the mean time to each decision grows
    assert len(block["exit_ms"]) == 3 and block["exit_ms"][0] < block["exit_ms"][1] < block["exit_ms"][2]
    assert "early_exit" in by_model["model_float32.tflite"]


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_agent_chain_agrees_with_the_in_process_chain(exit_run, tmp_path, precision):
    """The device agent's adaptive mode (its own exit check) against `ChainRunner` and the host's
    uncertainty on the same files and inputs: the same exit for every input at every threshold."""
    from edge_pipeline.compress.early_exit import exit_indices, uncertainty
    from edge_pipeline.convert.segments import ChainRunner
    from edge_pipeline.profiling.devices import DeviceProfile
    from edge_pipeline.profiling.exits import pack_chain
    from edge_pipeline.profiling.transports.local import LocalTransport

    _, out, _ = exit_run
    export = out / "04-export"
    chain = json.loads((export / "exits.json").read_text())
    chain["grid"], chain["device"]["repeats"] = [0.0, 2.0], 1
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((12, 16, 16, 1)).astype(np.float32)
    segments = chain["precisions"][precision]["segments"]
    runner = ChainRunner([export / s["file"] for s in segments], [s["features_layout"] for s in segments])
    logits = runner.all_exits(inputs)
    labels = logits[0].argmax(-1)  # so that "accuracy" at the first exit is 1 exactly when the agent exits there
    values = uncertainty(logits, chain["measure"])[:-1].ravel()
    chain["grid"] = [0.0, 2.0, *(round(float(v), 4) for v in np.quantile(values, [0.3, 0.6]))]
    bundle = pack_chain(tmp_path / "chain.zip", export, chain, precision, inputs, labels)
    with LocalTransport(DeviceProfile(name="host")).session(bundle) as session:
        result = session.agent(["--mode", "adaptive", "--threads", "1", "--warmup", "1"], 300)
    rows = {r["threshold"]: r for r in result["thresholds"]}
    assert set(chain["grid"]) | {chain["precisions"][precision]["threshold"]} == set(rows)
    for threshold, row in rows.items():
        expected = np.bincount(exit_indices(uncertainty(logits, chain["measure"]), threshold), minlength=3).tolist()
        assert row["exit_counts"] == expected, threshold
    never, always = rows[0.0], rows[2.0]
    assert never["exit_counts"] == [0, 0, 12] and always["exit_counts"] == [12, 0, 0]
    assert always["accuracy"] == 1.0
    assert never["accuracy"] == pytest.approx(float((logits[-1].argmax(-1) == labels).mean()))
    if precision == "float32":  # the plain float32 file computes the final exit (int8: another calibration)
        assert result["plain"]["accuracy"] == never["accuracy"]


def test_report_shows_the_early_exit_section_and_rerun_is_cached(exit_run, capsys):
    recipe, out, _ = exit_run
    md = (out / "report.md").read_text()
    assert "## Early exits" in md and "fast-host" in md.split("## Early exits")[1]
    assert (out / "plots" / "early_exit_curve.png").is_file() and (out / "plots" / "early_exit_exits.png").is_file()
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    statuses = [s["status"] for s in json.loads((out / "metrics.json").read_text())["stages"]]
    assert statuses == ["cached"] * 5
