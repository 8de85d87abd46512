"""Fixtures shared by the stage tests."""

from __future__ import annotations

import json

import pytest

from edge_pipeline.cli import main

from ..conftest import write

HARD_HEAD = """\
name: hard
seed: 0
data: {dataset: digits, image_size: 16, batch_size: 64}
model: {arch: vgg_small, width: 0.5}
"""


@pytest.fixture(scope="session")
def hard_weights(tmp_path_factory):
    """vgg_small trained 3 epochs through the pipeline, then given one channel with a 1000x range
    after features.0 (BN scale and shift) that features.3 compensates: same float function, and an
    int8 file that fails unless the range is repaired (or the layer kept in float)."""
    import torch
    from safetensors.torch import save_file

    from edge_pipeline.models.store import read_state_dict

    root = tmp_path_factory.mktemp("hard")
    recipe = write(root / "train.yaml", HARD_HEAD + "stages:\n  - train: {epochs: 3, lr: 0.05}\n")
    assert main(["run", str(recipe), "--out", str(root / "train-run")]) == 0
    state = {k: v.clone() for k, v in read_state_dict(root / "train-run" / "01-train" / "model.safetensors").items()}
    with torch.no_grad():
        state["features.1.weight"][0] *= 1000.0
        state["features.1.bias"][0] *= 1000.0
        state["features.3.weight"][:, 0] /= 1000.0
    path = root / "hard.safetensors"
    save_file(state, str(path))
    accuracy = json.loads((root / "train-run" / "metrics.json").read_text())["stages"][0]["model"]["accuracy"]
    return path, accuracy
