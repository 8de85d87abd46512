"""Data-parallel training: 2 CPU ranks (gloo) compute what one process computes.

`fit` is compared directly (BatchNorm, Dropout, augmentation and a distillation adapter all in
play), and the whole pipeline is compared through `edge-pipeline run --nproc 2`.
"""

from __future__ import annotations

import json
import os
import socket
import sys

import pytest
import torch

from .conftest import REPO, write

TOLERANCE = 1e-5


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_tiny(out: str | None) -> dict[str, torch.Tensor]:
    """vgg_small (BatchNorm + Dropout) on augmented 8 px digits, distilled with a feature adapter."""
    from edge_pipeline.compress.distill import DistillLoss, FeatureSpec
    from edge_pipeline.data import build_data
    from edge_pipeline.models import BaseSpec, build_model
    from edge_pipeline.recipe import DataConfig
    from edge_pipeline.stages.train import TrainConfig
    from edge_pipeline.training import fit

    torch.set_num_threads(1)
    data = build_data(DataConfig(dataset="digits", image_size=8, batch_size=25, limit=120, augment=True), 0)
    torch.manual_seed(0)
    teacher = build_model(BaseSpec("vgg_small", 10, 1, 8, 1.0)).eval()
    student = build_model(BaseSpec("vgg_small", 10, 1, 8, 0.5))
    loss = DistillLoss(teacher, objective="logits+features", features=FeatureSpec([("features.5", "features.5")]),
                       student=student, example=torch.zeros(1, 1, 8, 8))
    fit(student, data, TrainConfig(epochs=2, lr=0.05, bn_l1=1e-3), 0, loss, "t", extra_params=loss.parameters())
    state = {k: v.detach().clone().contiguous() for k, v in student.state_dict().items()}
    state.update({f"adapter.{k}": v.detach().clone() for k, v in loss.adapters.state_dict().items()})
    if out:
        from safetensors.torch import save_file

        save_file(state, out)
    return state


def _rank(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from edge_pipeline import distributed

    distributed.init()
    try:
        train_tiny(out if rank == 0 else None)
    finally:
        distributed.shutdown()


def test_two_ranks_train_the_same_weights_as_one_process(tmp_path):
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    single = train_tiny(None)
    out = str(tmp_path / "ddp.safetensors")
    # fork: children inherit the imported modules (spawn re-imports torch: ~10 s per rank here)
    mp.start_processes(_rank, args=(2, _port(), out), nprocs=2, start_method="fork")
    ddp = load_file(out)
    assert set(ddp) == set(single) and any(k.startswith("adapter.") for k in ddp)
    worst = max(float((single[k].double() - ddp[k].double()).abs().max()) for k in single)
    assert worst < TOLERANCE


@pytest.mark.slow  # two pipeline runs, one of them as 2 processes: ~30-60 s on 2 shared cores
def test_nproc_2_run_matches_a_single_process_run(tmp_path):
    import subprocess

    from edge_pipeline.models.store import load_model

    recipe = write(tmp_path / "r.yaml", """\
name: ddp
seed: 0
data: {dataset: digits, image_size: 8, batch_size: 32, limit: 200}
model: {arch: vgg_small, width: 0.5}
stages:
  - train: {epochs: 2, lr: 0.05}
  - prune: {method: taylor, target_macs: 0.6, calibration_samples: 32, finetune: {epochs: 1}}
  - finetune: {epochs: 1, distill: {teacher: train, features: {}}}
""")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for name, extra in (("one", []), ("two", ["--nproc", "2"])):
        subprocess.run([sys.executable, "-m", "edge_pipeline.cli", "run", str(recipe), "--out", str(tmp_path / name), *extra],
                       check=True, env=env, capture_output=True)
    runs = {n: json.loads((tmp_path / n / "metrics.json").read_text())["stages"] for n in ("one", "two")}
    for a, b in zip(runs["one"], runs["two"]):
        assert a["model"]["macs"] == b["model"]["macs"] and abs(a["model"]["accuracy"] - b["model"]["accuracy"]) <= 0.02
    one, two = (load_model(tmp_path / n / "03-finetune").module.state_dict() for n in ("one", "two"))
    assert max(float((one[k].double() - two[k].double()).abs().max()) for k in one) < 1e-4
    assert (tmp_path / "two" / "logs" / "rank1.log").is_file()


@pytest.mark.slow  # two fresh processes import torch: ~15-35 s on 2 shared cores
def test_nproc_launch_reports_the_ranks_failure(tmp_path, capsys):
    """Both ranks start, the train stage fails (missing weights file): the launcher returns the
    bad-input exit code and the log of rank 1 says why; nothing hangs."""
    from edge_pipeline import procs
    from edge_pipeline.cli import main

    earlier = set(procs._live)
    recipe = write(tmp_path / "bad.yaml", "name: bad\ndata: {limit: 100, image_size: 8}\n"
                   "model: {arch: vgg_small, weights: missing.pth}\nstages:\n  - train: {epochs: 1}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"), "--nproc", "2"]) == 2
    assert "missing.pth" in (tmp_path / "run" / "logs" / "rank1.log").read_text()
    assert procs._live <= earlier  # both ranks were reaped and forgotten


def test_nproc_inside_a_distributed_launch_is_an_error(tmp_path, monkeypatch, capsys):
    from edge_pipeline.cli import main

    recipe = write(tmp_path / "r.yaml", "name: r\nmodel: {arch: vgg_small}\nstages:\n  - train: {epochs: 1}\n")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", str(recipe), "--nproc", "2"]) == 2
    assert "already launched distributed (torchrun); drop --nproc" in capsys.readouterr().err
