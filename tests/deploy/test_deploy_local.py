"""deploy / list / rollback / remove / keep on the `local` transport (a real folder tree, the real
release script and runner), and the bundle the export stage writes for deployment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_pipeline import cli
from edge_pipeline.artifacts import sha256_file
from edge_pipeline.deploy import edge_predict
from edge_pipeline.deploy.names import check_release_id
from tests.deploy.conftest import current, deploy, local_device, release_dirs


def test_export_bundle_carries_the_runner_samples_and_android_assets(bundle_dir):
    assert (bundle_dir / "edge_predict.py").read_bytes() == Path(edge_predict.__file__).read_bytes()
    samples = json.loads((bundle_dir / "samples" / "labels.json").read_text())["samples"]
    assert [s["file"] for s in samples] == [f"{i:03d}.png" for i in range(16)]
    assert len({s["label"] for s in samples}) == 10  # stratified: every digit is there
    meta = json.loads((bundle_dir / "metadata.json").read_text())
    for name in ("model.tflite", "labels.txt", "metadata.json"):
        assert (bundle_dir / "android" / "assets" / name).read_bytes() == (bundle_dir / name).read_bytes()
    readme = (bundle_dir / "android" / "README.md").read_text()
    scale = meta["files"]["int8"]["input"]["quantization"]["scale"]
    assert "16x16x1 image (NHWC, uint8)" in readme and f"{scale}f" in readme and "coerceIn(0, 255)" in readme


def test_samples_are_the_test_split_images(tiny_data, tmp_path):
    """Each PNG, preprocessed by the runner, is the test input the model was evaluated on (to 8-bit rounding)."""
    from edge_pipeline.deploy.samples import _pick, write_samples

    record = write_samples(tiny_data, tmp_path / "samples")
    picks = _pick(tiny_data.test, 16)
    for entry, index in zip(record["samples"], picks):
        x, label = tiny_data.test[index]
        from PIL import Image

        got = edge_predict.preprocess(Image.open(tmp_path / "samples" / entry["file"]), (16, 16), 1, tiny_data.mean,
                                      tiny_data.std, np)
        assert entry["label"] == int(label)
        assert np.max(np.abs(got[..., 0] - x.numpy()[0])) <= 0.5 / 255 / tiny_data.std[0] + 1e-6


def test_deploy_list_rollback_remove_keep(deploy_run, tmp_path, capsys):
    root, device = tmp_path / "root", str(local_device(tmp_path))
    app = root / "tinydeploy"
    code, out, err = deploy(capsys, str(deploy_run), "--device", device, "--root", str(root))
    assert code == 0, err
    first = current(app)
    assert first is not None and check_release_id(first) and first.split("-")[1] == "int8"
    assert release_dirs(app) == [first]  # no upload folder left behind
    release = app / "releases" / first
    record = json.loads((release / "release.json").read_text())
    assert record["precision"] == "int8" and record["run"] == str(deploy_run.resolve())
    verified = record["verified"]
    assert verified["samples"] == 16 and verified["top1_agreement"] == 1.0 and verified["outputs_verified"]
    assert verified["max_abs_diff"] <= verified["tolerance"] and verified["runtime"]["name"] == "ai-edge-litert"
    assert {name: sha256_file(release / name) for name in record["files"]} == record["files"]
    assert "model_int8.tflite" in record["files"] and "samples/000.png" in record["files"]
    assert f"current -> {release}" in out and "deployed to 1 of 1 device(s)" in out

    # The installed runner runs from `current` with no arguments but images (it reads release.json).
    proc = subprocess.run([sys.executable, str(app / "current" / "edge_predict.py"), str(app / "current" / "samples"), "--json"],
                          capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and result["precision"] == "int8" and len(result["predictions"]) == 16

    code, _, err = deploy(capsys, str(deploy_run), "--device", device, "--root", str(root), "--precision", "float32")
    assert code == 0, err
    second = current(app)
    assert second != first and second.split("-")[1] == "float32" and release_dirs(app) == [first, second]

    code, out, _ = deploy(capsys, "--list", "--json", "--device", device, "--root", str(root))
    listed = json.loads(out)
    assert [r["id"] for r in listed] == [first, second] and [r["current"] for r in listed] == [False, True]
    assert {"id", "current", "precision", "verified", "created"} <= set(listed[0])
    assert listed[1]["verified"]["samples"] == 16 and listed[1]["verified"]["top1_agreement"] == 1.0
    code, out, _ = deploy(capsys, "--list", "--device", device, "--root", str(root))
    assert code == 0 and f"*  {second}" in out and "tinydeploy under" in out

    code, out, _ = deploy(capsys, "--rollback", "--device", device, "--root", str(root))
    assert code == 0 and f"current {second} -> {first}" in out and current(app) == first
    code, _, err = deploy(capsys, "--rollback", "--device", device, "--root", str(root))
    assert code == 2 and f"no verified release of tinydeploy older than {first}" in err and current(app) == first

    code, _, err = deploy(capsys, "--remove", first, "--device", device, "--root", str(root))
    assert code == 2 and "is the current one" in err and release_dirs(app) == [first, second]
    code, _, err = deploy(capsys, "--remove", "../../etc", "--device", device, "--root", str(root))
    assert code == 2 and "is not a release id" in err

    code, _, _ = deploy(capsys, str(deploy_run), "--device", device, "--root", str(root), "--keep", "1")
    third = current(app)
    assert code == 0 and release_dirs(app) == [third]  # --keep after a deploy: only the newest (current) stays
    code, _, _ = deploy(capsys, str(deploy_run), "--device", device, "--root", str(root))
    fourth = current(app)
    code, out, _ = deploy(capsys, "--rollback", "--device", device, "--root", str(root))
    assert current(app) == third
    code, out, _ = deploy(capsys, "--keep", "1", "--device", device, "--root", str(root))
    # the newest is kept, and the current one (older, after the rollback) always stays
    assert code == 0 and release_dirs(app) == [third, fourth] and "removed 0" in out
    code, out, _ = deploy(capsys, "--remove", fourth, "--device", device, "--root", str(root))
    assert code == 0 and release_dirs(app) == [third]


def test_failed_verification_leaves_current_alone(deploy_run, bare_python, tmp_path, capsys):
    root = tmp_path / "root"
    good = str(local_device(tmp_path, "box"))
    assert deploy(capsys, str(deploy_run), "--device", good, "--root", str(root))[0] == 0
    before = current(root / "tinydeploy")
    bare = str(local_device(tmp_path, "bare", python=str(bare_python)))  # no numpy, no runtime there
    code, _, err = deploy(capsys, str(deploy_run), "--device", bare, "--root", str(root))
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: device bare: numpy is not installed")
    assert current(root / "tinydeploy") == before and release_dirs(root / "tinydeploy") == [before]


def test_several_devices_in_parallel_one_failing(deploy_run, bare_python, tmp_path, capsys):
    roots = tmp_path / "shared-root"
    devices = [str(local_device(tmp_path, "box-a")), str(local_device(tmp_path, "bare", python=str(bare_python))),
               str(local_device(tmp_path, "box-b"))]
    code, out, err = deploy(capsys, str(deploy_run), *sum((["--device", d] for d in devices), []), "--root", str(roots))
    assert code == 1
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("  box") or line.startswith("  bare")}
    assert rows == {"box-a": "ok", "bare": "FAILED", "box-b": "ok"}
    assert "deployed to 2 of 3 device(s)" in out
    assert err.strip().splitlines()[-1] == ("error: deploy failed on bare (the reasons are above); current is unchanged there")
    assert len(release_dirs(roots / "tinydeploy")) == 2 and current(roots / "tinydeploy") in release_dirs(roots / "tinydeploy")


@pytest.mark.parametrize("argv, message", [
    ([], "give a run or export folder to deploy, or one of --list"),
    (["SRC", "--list"], "give a run or export folder to deploy, or --list, not both"),
    (["SRC", "--keep", "0"], "--keep: keep between 1 and"),
    (["SRC", "--app", "Bad App"], "--app: app name 'Bad App' must be lowercase"),
    (["SRC", "--precision", "int16x8"], "has no int16x8 file; it has: float32, int8"),
    (["SRC", "--root", "relative/dir"], "--root: 'relative/dir' must be an absolute folder"),
    (["SRC", "--root", "/"], "--root: '/' cannot hold releases"),
    (["SRC", "--device", "no-such-device"], "unknown device 'no-such-device'"),
    (["/nonexistent/run"], "/nonexistent/run: no such folder"),
])
def test_bad_arguments_are_one_line_exit_2(deploy_run, tmp_path, capsys, argv, message):
    argv = [str(deploy_run) if a == "SRC" else a for a in argv]
    if "--device" not in argv:
        argv += ["--device", str(local_device(tmp_path))]
    if "--root" not in argv:
        argv += ["--root", str(tmp_path / "root")]
    code, _, err = deploy(capsys, *argv)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0], err
    assert not (tmp_path / "root" / "tinydeploy" / "current").exists()


def test_predict_command_runs_the_device_runner_here(deploy_run, bundle_dir, capsys):
    code = cli.main(["predict", str(deploy_run), str(bundle_dir / "samples"), "--json", "--top-k", "2"])
    result = json.loads(capsys.readouterr().out)
    args = edge_predict.build_parser().parse_args([str(bundle_dir / "samples"), "--bundle", str(bundle_dir), "--top-k", "2"])
    assert code == 0 and result["predictions"] == edge_predict.classify(args)["predictions"]
    assert cli.main(["predict", str(bundle_dir), str(bundle_dir / "labels.txt")]) == 2
    assert "not a readable image" in capsys.readouterr().err


def test_default_roots(tmp_path, monkeypatch):
    from edge_pipeline.deploy.targets import open_target
    from edge_pipeline.profiling.devices import get_device

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert open_target(get_device("host")).root == str(tmp_path / "xdg" / "edge-pipeline" / "deploy")
    assert open_target(get_device("rpi4")).root == "~"  # the user's home on a board
    phone = open_target(get_device("pixel-7"))
    assert phone.root == "/data/local/tmp/edge-pipeline" and phone.has_python is False  # benchmark_model only
    assert open_target(get_device("qemu-aarch64")).root.endswith("/root/opt/edge-pipeline")  # inside the sysroot
