"""The on-device runner (edge_predict.py) on real TFLite files: its preprocessing is the training
transform, its outputs are the interpreter's on independently prepared inputs (float32, int8 and
uint8 inputs; RGB and grayscale), and every bad input is one clear line with the right exit code."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_pipeline.deploy import edge_predict

RUNNER = Path(edge_predict.__file__)
TINY_CLASSES = ["ant", "bee", "cat", "dog"]


def training_input(image: Image.Image, size: int, channels: int, mean, std) -> np.ndarray:
    """What the training pipeline feeds the model (folders.py: RGB, torchvision Resize/CenterCrop/ToTensor/Normalize), NHWC."""
    from torchvision import transforms as T

    from edge_pipeline.data.folders import _to_tensor

    x = T.Compose([_to_tensor(size, channels), T.Normalize(mean, std)])(image.convert("RGB"))
    return x.permute(1, 2, 0).numpy()[None]


def interpreter_output(model: Path, x: np.ndarray) -> np.ndarray:
    """The reference: ai-edge-litert directly, quantizing and dequantizing by the tensor parameters."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if np.issubdtype(inp["dtype"], np.integer):
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale + zero), info.min, info.max)
    interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interp.invoke()
    y = interp.get_tensor(out["index"])
    if np.issubdtype(out["dtype"], np.integer):
        scale, zero = out["quantization"]
        return ((y.astype(np.float32) - zero) * scale)[0]
    return y[0].astype(np.float32)


@pytest.fixture(scope="module")
def rgb_bundle(tiny_models, tmp_path_factory) -> Path:
    """A bundle folder around the profiling tests' tiny 16x16 RGB models (float32, int8 in and out)."""
    folder = tmp_path_factory.mktemp("rgb-bundle")
    for precision in ("float32", "int8"):
        (folder / f"model_{precision}.tflite").write_bytes(tiny_models[precision].read_bytes())
    (folder / "metadata.json").write_text(json.dumps({
        "model": "model_int8.tflite", "model_precision": "int8", "input_shape": [1, 16, 16, 3], "layout": "NHWC",
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "class_names": TINY_CLASSES,
        "files": {p: {"file": f"model_{p}.tflite"} for p in ("float32", "int8")},
    }))
    rng = np.random.default_rng(0)
    images = folder / "images"
    images.mkdir()
    # Sizes that make the runner resize up, down, and crop non-square images both ways.
    for i, (w, h) in enumerate([(16, 16), (9, 7), (40, 23), (23, 40), (64, 64)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(images / "gray.png")  # 1 channel into an RGB model
    return folder


def run_main(*argv: str, stdin: bytes | None = None) -> tuple[int, dict | str]:
    out = io.StringIO()
    if stdin is not None:
        old = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        try:
            code = edge_predict.main(list(argv), stdout=out)
        finally:
            sys.stdin = old
    else:
        code = edge_predict.main(list(argv), stdout=out)
    text = out.getvalue()
    return code, (json.loads(text) if "--json" in argv and text.strip() else text)


@pytest.mark.parametrize("size", [(7, 5), (40, 23), (16, 16), (23, 40), (300, 200)])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
@pytest.mark.parametrize("channels", [1, 3])
def test_preprocessing_is_the_training_transform(size, mode, channels):
    rng = np.random.default_rng(sum(size) + channels)
    pixels = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    image = Image.fromarray(pixels if mode == "RGBA" else pixels[..., :3])
    image = image.convert(mode) if mode in ("L", "P") else image
    mean, std = [0.3, 0.4, 0.5][:channels], [0.2, 0.25, 0.3][:channels]
    got = edge_predict.preprocess(image, (16, 16), channels, mean, std, np)
    assert got.dtype == np.float32 and got.shape == (16, 16, channels)
    np.testing.assert_array_equal(got[None], training_input(image, 16, channels, mean, std))


@pytest.mark.parametrize("precision, dtype", [("float32", "float32"), ("int8", "int8")])
def test_rgb_models_match_the_interpreter_on_training_inputs(rgb_bundle, precision, dtype):
    code, result = run_main(str(rgb_bundle / "images"), "--bundle", str(rgb_bundle), "--precision", precision,
                            "--json", "--top-k", "4")
    assert code == 0 and result["ok"] and result["precision"] == precision
    assert result["input"]["dtype"] == dtype and result["model"] == f"model_{precision}.tflite"
    assert [Path(p["file"]).name for p in result["predictions"]] == ["0.png", "1.png", "2.png", "3.png", "4.png", "gray.png"]
    for p in result["predictions"]:
        image = Image.open(p["file"])
        expected = interpreter_output(rgb_bundle / result["model"], training_input(image, 16, 3, [0.5] * 3, [0.25] * 3))
        np.testing.assert_array_equal(np.asarray(p["output"], np.float32), expected)
        scores = [t["score"] for t in p["top_k"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 4
        assert p["top_k"][0]["index"] == int(np.argmax(expected))
        assert p["top_k"][0]["label"] == TINY_CLASSES[p["top_k"][0]["index"]]
        assert abs(sum(scores) - 1.0) < 1e-4  # logits -> softmax over all four classes


def test_grayscale_uint8_model_of_a_real_bundle(bundle_dir):
    meta = json.loads((bundle_dir / "metadata.json").read_text())
    code, result = run_main(str(bundle_dir / "samples"), "--bundle", str(bundle_dir), "--json", "--top-k", "1")
    assert code == 0 and result["precision"] == "int8" and result["model"] == "model.tflite"
    assert result["input"]["dtype"] == "uint8" and result["input"]["shape"] == [1, 16, 16, 1]
    assert len(result["predictions"]) == 16
    labels = {s["file"]: s["label"] for s in json.loads((bundle_dir / "samples" / "labels.json").read_text())["samples"]}
    correct = 0
    for p in result["predictions"]:
        x = training_input(Image.open(p["file"]), 16, 1, meta["normalization"]["mean"], meta["normalization"]["std"])
        expected = interpreter_output(bundle_dir / "model.tflite", x)
        np.testing.assert_array_equal(np.asarray(p["output"], np.float32), expected)
        correct += p["top_k"][0]["index"] == labels[Path(p["file"]).name]
    assert correct >= 8  # one epoch on digits: far above chance (1 in 10)


def test_float32_file_of_the_bundle_and_human_output(bundle_dir):
    code, text = run_main(str(bundle_dir / "samples" / "000.png"), "--bundle", str(bundle_dir), "--precision", "float32",
                          "--top-k", "3")
    assert code == 0
    line = text.strip()
    assert line.startswith(str(bundle_dir / "samples" / "000.png") + ": ") and line.count("(") == 3


def test_stdin_and_benchmark(rgb_bundle):
    data = (rgb_bundle / "images" / "1.png").read_bytes()
    code, result = run_main("-", "--bundle", str(rgb_bundle), "--json", "--benchmark", "5", stdin=data)
    assert code == 0 and result["predictions"][0]["file"] == "-"
    code_file, from_file = run_main(str(rgb_bundle / "images" / "1.png"), "--bundle", str(rgb_bundle), "--json")
    assert from_file["predictions"][0]["output"] == result["predictions"][0]["output"]
    bench = result["benchmark"]
    assert bench["runs"] == 5 and 0 < bench["min_ms"] <= bench["median_ms"] <= bench["max_ms"]


def test_release_json_picks_the_model(rgb_bundle, tmp_path):
    """In a release folder, release.json's precision chooses the file (one model per release)."""
    for name in ("metadata.json", "model_float32.tflite"):
        (tmp_path / name).write_bytes((rgb_bundle / name).read_bytes())
    (tmp_path / "release.json").write_text(json.dumps({"precision": "float32"}))
    code, result = run_main(str(rgb_bundle / "images" / "0.png"), "--bundle", str(tmp_path), "--json")
    assert code == 0 and result["model"] == "model_float32.tflite" and result["precision"] == "float32"


@pytest.mark.parametrize("case, code, message", [
    ("missing", 2, "image not found"),
    ("not-an-image", 2, "not a readable image (not a format Pillow can decode"),
    ("empty-dir", 2, "no image files"),
    ("no-bundle", 2, "no such bundle folder"),
    ("bad-precision", 2, "the bundle has no int16x8 model (metadata.json lists: float32, int8)"),
    ("corrupt-model", 1, "the model does not load with ai-edge-litert"),
])
def test_bad_input_is_one_clear_error(rgb_bundle, tmp_path, case, code, message):
    images, bundle, extra = [str(rgb_bundle / "images" / "0.png")], str(rgb_bundle), []
    if case == "missing":
        images = [str(tmp_path / "nope.png")]
    elif case == "not-an-image":
        (tmp_path / "notes.png").write_text("not an image")
        images = [str(tmp_path / "notes.png")]
    elif case == "empty-dir":
        (tmp_path / "empty").mkdir()
        images = [str(tmp_path / "empty")]
    elif case == "no-bundle":
        bundle = str(tmp_path / "nowhere")
    elif case == "bad-precision":
        extra = ["--precision", "int16x8"]
    elif case == "corrupt-model":
        (tmp_path / "metadata.json").write_bytes((rgb_bundle / "metadata.json").read_bytes())
        (tmp_path / "model_int8.tflite").write_bytes(b"TFL3" + bytes(range(256)) * 8)
        bundle = str(tmp_path)
    got, result = run_main(*images, "--bundle", bundle, *extra, "--json")
    assert got == code and result["ok"] is False and result["exit_code"] == code
    assert message in result["error"], result["error"]


def python_without(tmp_path: Path, *excluded: str) -> tuple[list[str], dict[str, str]]:
    """This venv's Python seeing its packages except `excluded` (a board where they are not installed)."""
    import site

    packages = Path(next(p for p in site.getsitepackages() if p.endswith("site-packages")))
    view = tmp_path / "site"
    view.mkdir()
    for entry in packages.iterdir():
        top = entry.name.split("-")[0].lower()
        if entry.suffix != ".pth" and top not in excluded and entry.name.split(".")[0] not in excluded:
            (view / entry.name).symlink_to(entry)
    return [sys.executable, "-S"], {"PYTHONPATH": str(view), "PATH": "/usr/bin:/bin"}


@pytest.mark.parametrize("excluded, message", [
    (("pil", "pillow", "PIL"), "Pillow is needed to read image files; install it: pip install pillow"),
    (("ai_edge_litert", "tflite_runtime", "tensorflow"), "no TFLite runtime importable"),
    (("numpy",), "numpy is not installed"),
])
def test_missing_packages_on_the_device(rgb_bundle, tmp_path, excluded, message):
    python, env = python_without(tmp_path, *excluded)
    proc = subprocess.run([*python, str(RUNNER), "--bundle", str(rgb_bundle), str(rgb_bundle / "images" / "0.png")],
                          capture_output=True, text=True, env=env, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_runner_is_a_standalone_python38_file():
    source = RUNNER.read_text()
    tree = ast.parse(source, feature_version=(3, 8))  # no syntax newer than the oldest Python it supports
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "argparse", "json", "os", "platform", "sys", "time", "io", "warnings", "importlib",
                        "numpy", "PIL", "ai_edge_litert", "tflite_runtime", "tensorflow"}, imported
