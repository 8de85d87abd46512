"""AdaRound's and QAT's weights survive the converter: the int8 file holds exactly the integers
they learned (both leave the weights on the grid the converter computes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_pipeline.cli import main
from edge_pipeline.compress.adaround import grid
from edge_pipeline.compress.int8sim import fold_factors
from edge_pipeline.models.store import load_model

from ..conftest import TINY_HEAD, write


def learned_integers(folder) -> dict[str, np.ndarray]:
    """Each conv's int8 weights as the converter will store them (OHWI), from the prepared model."""
    module = load_model(folder).module.eval()
    factors = fold_factors(module)
    found = {}
    for name, layer in module.named_modules():
        if name in factors and isinstance(layer, torch.nn.Conv2d):
            folded = layer.weight.detach() * factors[name].view(-1, 1, 1, 1)
            found[name] = torch.round(folded / grid(folded, per_channel=True)).permute(0, 2, 3, 1).numpy().astype(np.int8)
    return found


def stored_int8_weights(path) -> list[np.ndarray]:
    from edge_pipeline.convert.runtime import load_interpreter

    interpreter = load_interpreter(path)
    stored = []
    for tensor in interpreter.get_tensor_details():
        if tensor["dtype"] == np.int8 and len(tensor["shape"]) == 4:
            try:
                stored.append(interpreter.get_tensor(tensor["index"]))
            except ValueError:
                continue  # an activation: no data before invoke
    return stored


@pytest.mark.slow
@pytest.mark.parametrize("method, stages, model_dir", [
    ("adaround", "  - quantize: {mode: int8, calibration_samples: 64, adaround: {iterations: 50}}\n", "02-quantize/model"),
    ("qat", "  - qat: {epochs: 1, calibration_samples: 64}\n  - quantize: {mode: int8, calibration_samples: 64}\n", "02-qat"),
])
def test_the_int8_file_holds_the_learned_integers(tmp_path, method, stages, model_dir):
    recipe = write(tmp_path / "r.yaml", TINY_HEAD + "stages:\n  - train: {epochs: 1}\n" + stages + "  - export: {}\n")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    expected = learned_integers(out / model_dir)
    export = next(p for p in out.iterdir() if p.name.endswith("-export"))
    stored = stored_int8_weights(export / "model_int8.tflite")
    # Every conv's learned integers are in the file, bit for bit (shapes are unique in vgg_small).
    for name, integers in expected.items():
        assert any(s.shape == integers.shape and np.array_equal(s, integers) for s in stored), name
    if method == "qat":
        import json

        details = json.loads((out / "02-qat" / "details.json").read_text())
        assert details["layers"] > len(expected)  # the convolutions and the classifier
        # The converter calibrates nearly the ranges QAT last trained with (moved by < 10 steps).
        assert 0.8 < details["scale_ratio_min"] <= details["scale_ratio_max"] < 1.25


def test_quantize_must_round_like_the_qat_stage():
    from edge_pipeline.errors import UserError
    from edge_pipeline.recipe import parse_recipe

    with pytest.raises(UserError, match=r"quantize.per_channel: qat stage 'qat' trained with per_channel: false"):
        parse_recipe(TINY_HEAD + "stages:\n  - train: {epochs: 1}\n  - qat: {per_channel: false}\n"
                     "  - quantize: {}\n  - export: {}\n", "r.yaml")
