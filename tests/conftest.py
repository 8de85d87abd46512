"""Shared fixtures: tiny recipes on real data (digits at 16 px), so pipeline tests take seconds."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TINY_HEAD = """\
name: tiny
seed: 0
data: {dataset: digits, image_size: 16, batch_size: 64}
model: {arch: vgg_small, width: 0.5}
"""

TINY_TORCH_STAGES = """\
stages:
  - train: {epochs: 3, lr: 0.05}
  - restructure: {depthwise_separable: {min_channels: 8}}
  - prune: {method: l1, ratio: 0.5, round_to: 4}
  - finetune: {epochs: 3, lr: 0.01, distill: {teacher: train, temperature: 4.0, alpha: 0.7}}
"""

FAST_DEVICE = """\
name: fast-host
description: host with a short budget, for tests
transport: {kind: local}
runtime: {name: ai-edge-litert}
threads: 1
budget: {warmup_runs: 2, min_runs: 10, min_seconds: 0.05, max_seconds: 5.0, max_rel_std: 10.0}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    """train -> restructure -> prune -> finetune on 16 px digits (a few seconds)."""
    return write(tmp_path / "tiny.yaml", TINY_HEAD + TINY_TORCH_STAGES)


@pytest.fixture(scope="session")
def fast_device(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("devices") / "fast-host.yaml", FAST_DEVICE)


@pytest.fixture(scope="session")
def tiny_data():
    from edge_pipeline.data import build_data
    from edge_pipeline.recipe import DataConfig

    return build_data(DataConfig(dataset="digits", image_size=16), seed=0)
