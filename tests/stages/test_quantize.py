"""`quantize`: the schema (modes, keep_float, gates), calibration from the train split or a folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_pipeline.errors import UserError
from edge_pipeline.recipe import parse_recipe

from ..conftest import TINY_HEAD

HEAD = TINY_HEAD + "stages:\n  - train: {epochs: 1}\n"


def recipe(quantize: str, extra: str = "  - export: {}\n"):
    return parse_recipe(HEAD + f"  - quantize: {quantize}\n" + extra, "r.yaml")


def test_mode_is_one_precision_or_a_list_and_export_writes_float32_plus_each():
    assert recipe("{}").stages[1].config.modes == ["int8"]
    assert recipe("{mode: [int8, int16x8, int8]}").stages[1].config.modes == ["int8", "int16x8"]
    assert recipe("{mode: float16}").stages[1].config.modes == ["float16"]


@pytest.mark.parametrize("body, fragment", [
    ("{mode: int4}", "stages[1].quantize.mode"),
    ("{mode: []}", "at least one precision"),
    ("{mode: int16x8, keep_float: [features.0]}", "keep_float/auto_keep_float apply to the int8 model"),
    ("{max_accuracy_drop: 1.5}", "stages[1].quantize.max_accuracy_drop: must be <= 1"),
    ("{min_agreement: -0.1}", "stages[1].quantize.min_agreement: must be >= 0"),
    ("{min_agreement: lots}", "stages[1].quantize.min_agreement: must be a number from 0 to 1, `default` or null"),
    ("{io_type: int4}", "stages[1].quantize.io_type: must be one of"),
    ("{calibration_dir: /no/such/folder}", "stages[1].quantize.calibration_dir: folder '/no/such/folder' does not exist"),
])
def test_bad_quantize_config_names_the_field(body, fragment):
    with pytest.raises(UserError) as info:
        recipe(body)
    assert fragment in str(info.value) and str(info.value).startswith("r.yaml:")


def test_gates_default_per_precision_a_number_or_null_turns_one_off():
    from edge_pipeline.recipe import parse_recipe as parse

    unset = recipe("{}").stages[1].config
    assert (unset.max_accuracy_drop, unset.min_agreement) == ("default", "default")
    config = recipe("{max_accuracy_drop: null, min_agreement: 0.5}").stages[1].config
    assert (config.max_accuracy_drop, config.min_agreement) == (None, 0.5)
    # The resolved recipe (run folders, `validate --print`) reads back to the same gates.
    again = parse(recipe("{max_accuracy_drop: null}").resolved_yaml(), "resolved.yaml").stages[1].config
    assert (again.max_accuracy_drop, again.min_agreement) == (None, "default")


def test_export_without_quantize_needs_no_calibration():
    parsed = parse_recipe(HEAD + "  - export: {}\n", "r.yaml")
    assert parsed.stages[1].type == "export"


def _write_images(folder, count, size=20, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "sub").mkdir(parents=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / ("sub" if i % 2 else ".") / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")


def test_folder_calibration_preprocesses_like_training(tmp_path, tiny_data):
    from PIL import Image

    from edge_pipeline.stages.runners.quantize import folder_calibration

    _write_images(tmp_path / "calib", 12)
    batch, facts = folder_calibration(str(tmp_path / "calib"), tiny_data, n=8, seed=0)
    assert tuple(batch.shape) == (8, 1, 16, 16) and facts["files"] == 8
    # The same image by hand: grayscale, resize 20 -> 16, [0, 1], then the data's normalization.
    first = sorted((tmp_path / "calib").rglob("*.png"))
    values = []
    for path in first:
        gray = np.asarray(Image.open(path).convert("L").resize((16, 16), Image.BILINEAR), np.float32) / 255.0
        values.append((gray - tiny_data.mean[0]) / tiny_data.std[0])
    assert any(np.allclose(batch[0, 0].numpy(), v, atol=0.05) for v in values)
    everything, facts = folder_calibration(str(tmp_path / "calib"), tiny_data, n=100, seed=0)
    assert len(everything) == 12 == facts["files"]


def test_folder_without_images_is_a_clear_error(tmp_path, tiny_data):
    from edge_pipeline.stages.runners.quantize import folder_calibration

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="quantize.calibration_dir: no images"):
        folder_calibration(str(tmp_path / "empty"), tiny_data, 8, 0)


def test_quantize_stage_writes_nhwc_calibration_and_plan(tmp_path):
    from edge_pipeline.cli import main

    from ..conftest import write

    _write_images(tmp_path / "calib", 10, size=16)
    path = write(tmp_path / "q.yaml", HEAD + f"""\
  - quantize: {{mode: [int8, float16], calibration_dir: {tmp_path / 'calib'}, calibration_samples: 8,
                min_agreement: 0.9, keep_float: [features.0]}}
""")
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    folder = out / "02-quantize"
    calibration = np.load(folder / "calibration.npy")
    assert calibration.shape == (8, 16, 16, 1) and calibration.dtype == np.float32
    plan = json.loads((folder / "quantization.json").read_text())
    assert plan["modes"] == ["int8", "float16"] and plan["layout"] == "NHWC"
    assert plan["calibration"]["files"] == 8 and plan["calibration"]["source"].startswith("folder ")
    assert plan["gates"] == {"max_accuracy_drop": "default", "min_agreement": 0.9} and plan["keep_float"] == ["features.0"]
    details = json.loads((folder / "details.json").read_text())
    assert details["activation_ranges"] and details["outliers"][0]["outlier_ratio"] >= 1.0
