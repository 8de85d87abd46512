"""Real profiles for compare tests: the tiny models measured on two short-budget local device
profiles (1 and 2 threads), laid out as two run dirs with metrics.json as the pipeline writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.profiling.tiny_models import shared_tiny_models

SHORT = "budget: {warmup_runs: 2, min_runs: 10, min_seconds: 0.05, max_seconds: 10.0, max_rel_std: 10.0}\n"
ACCURACY = {"run-a": {"float32": 0.91, "int8": 0.9}, "run-b": {"float32": 0.95, "int8": 0.93}}


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory) -> list[Path]:
    """runs/run-a and runs/run-b, each: export (float32, int8) profiled on fast-1t and fast-2t."""
    from edge_pipeline.profiling.devices import load_device_file
    from edge_pipeline.profiling.runner import profile_model

    root = tmp_path_factory.mktemp("compare")
    models = shared_tiny_models(tmp_path_factory)
    devices = []
    for name, threads in (("fast-1t", 1), ("fast-2t", 2)):
        path = root / f"{name}.yaml"
        path.write_text(f"name: {name}\ntransport: {{kind: local}}\nthreads: {threads}\n" + SHORT)
        devices.append(load_device_file(path))
    runs = []
    for run_name, accuracy in ACCURACY.items():
        run = root / run_name
        (run / "03-export").mkdir(parents=True)
        (run / "profiles").mkdir()
        artifacts, profiles = [], []
        for precision in ("float32", "int8"):
            model = run / "03-export" / f"model_{precision}.tflite"
            model.write_bytes(models[precision].read_bytes())
            artifacts.append({"format": "tflite", "precision": precision, "path": f"03-export/{model.name}",
                              "size_bytes": model.stat().st_size, "accuracy": accuracy[precision], "ops": {}})
            for device in devices:
                rel = f"profiles/{device.name}__{model.stem}.json"
                (run / rel).write_text(json.dumps(profile_model(model, device)))
                profiles.append(rel)
        metrics = {"recipe": run_name, "version": "0.1.0", "stages": [
            {"name": "export", "type": "export", "status": "done", "seconds": 1.0, "artifacts": artifacts},
            {"name": "profile", "type": "profile", "status": "done", "seconds": 1.0, "profiles": profiles},
        ]}
        (run / "metrics.json").write_text(json.dumps(metrics))
        runs.append(run)
    return runs
