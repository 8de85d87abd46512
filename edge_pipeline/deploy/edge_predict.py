#!/usr/bin/env python3
"""edge-pipeline runner: classify images with a TFLite model bundle, on a board, a phone or a PC.

    python3 edge_predict.py [--bundle DIR] IMAGE|DIR|- ... [--top-k K] [--json] [--benchmark N]

Self-contained on purpose: it is shipped in every export bundle and every release on a device, so
it needs only Python 3.8+, numpy, one TFLite runtime (ai-edge-litert, tflite-runtime or
tensorflow) and Pillow for image files, and it never imports edge_pipeline. `edge-pipeline
predict` runs this same file on the host, and a deployment is verified by comparing what it
prints on the device with what it prints on the host for the same image files.

Everything comes from the bundle's `metadata.json`: the input size and channels, the
normalization, the class names and each model file's precision. Preprocessing repeats the training
pipeline's exactly (torchvision on PIL images): convert to RGB (then to grayscale for 1-channel
models), resize the shorter side to the input size (bilinear, antialiased), center-crop, scale to
[0, 1], normalize per channel, then quantize for an integer input (int8/uint8/int16).

Which model: `--precision P` (the file metadata.json lists for P); else the precision a release
records in `release.json` (a release on a device holds one model file); else metadata's `model`.

Exit codes: 0 ok; 2 bad input (bundle, image, arguments, a missing runtime or Pillow); 1 the model
failed to load or run. Errors are one line, `error: ...` (or `{"ok": false, "error": ...}` with
--json), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

RUNNER_VERSION = "1"
METADATA = "metadata.json"
RELEASE = "release.json"
MAX_METADATA_BYTES = 1 << 20  # metadata.json / release.json are a few KiB
MAX_MODEL_BYTES = 2 << 30  # a flatbuffer cannot address more
MAX_IMAGE_BYTES = 64 << 20
MAX_IMAGE_PIXELS = 120_000_000  # above a 108 MP photo; decompression bombs claim billions
MAX_IMAGES = 100_000
MAX_TOP_K = 1000
MAX_BENCHMARK_RUNS = 1_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff")
INTEGER_DTYPES = ("int8", "uint8", "int16")


class InputError(Exception):
    """Bad input (exit 2): the user fixes a path, an image, an argument or an install."""

    exit_code = 2


class ModelError(Exception):
    """The model did not load or run (exit 1)."""

    exit_code = 1


# ---------------------------------------------------------------------------------------------
# The bundle


def read_json_file(path, what):
    """A small JSON file, read with a size bound (a FIFO or /dev/zero behind the name is refused)."""
    check_regular_file(path, MAX_METADATA_BYTES, what)
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read(MAX_METADATA_BYTES + 1).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable {what} ({first_line(exc)}); re-export the bundle") from None


def check_regular_file(path, limit, what):
    if not os.path.exists(path):
        raise InputError(f"{path}: {what} not found")
    if not os.path.isfile(path):  # follows symlinks; true only for a regular file
        raise InputError(f"{path}: {what} is not a regular file")
    if os.path.getsize(path) > limit:
        raise InputError(f"{path}: {what} is larger than {limit} bytes")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: {what} is empty")


def load_bundle(folder):
    """metadata.json of a bundle folder, checked for what this runner needs."""
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: no such bundle folder; give the export folder (or a release folder) with --bundle")
    meta = read_json_file(os.path.join(folder, METADATA), "metadata.json")
    if not isinstance(meta, dict):
        raise InputError(f"{folder}/{METADATA}: expected a JSON object; re-export the bundle")
    shape = meta.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise InputError(f"{folder}/{METADATA}: input_shape must be [1, height, width, channels], got {shape!r}")
    if meta.get("layout", "NHWC") != "NHWC":
        raise InputError(f"{folder}/{METADATA}: layout {meta.get('layout')!r} is not supported (NHWC only)")
    channels = shape[3]
    if channels not in (1, 3):
        raise InputError(f"{folder}/{METADATA}: {channels} input channels; images have 1 (grayscale) or 3 (RGB)")
    norm = meta.get("normalization") or {}
    for key in ("mean", "std"):
        values = norm.get(key)
        if not (isinstance(values, list) and len(values) == channels and all(isinstance(v, (int, float)) for v in values)):
            raise InputError(f"{folder}/{METADATA}: normalization.{key} must list {channels} numbers, got {values!r}")
    if any(v <= 0 for v in norm["std"]):
        raise InputError(f"{folder}/{METADATA}: normalization.std must be positive, got {norm['std']!r}")
    if not isinstance(meta.get("class_names", []), list):
        raise InputError(f"{folder}/{METADATA}: class_names must be a list")
    return meta


def choose_model(folder, meta, precision):
    """(model file path, precision) as the module docstring says."""
    files = meta.get("files") if isinstance(meta.get("files"), dict) else {}
    if not precision:
        release_path = os.path.join(folder, RELEASE)
        if os.path.isfile(release_path):
            precision = (read_json_file(release_path, "release.json") or {}).get("precision")
    if precision:
        entry = files.get(precision)
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            known = ", ".join(sorted(files)) or "none"
            raise InputError(f"{folder}: the bundle has no {precision} model (metadata.json lists: {known})")
        name = entry["file"]
    else:
        name, precision = meta.get("model"), meta.get("model_precision")
        if not isinstance(name, str):
            raise InputError(f"{folder}/{METADATA}: no `model` entry; pass --precision")
    if os.path.basename(name) != name or name.startswith("."):
        raise InputError(f"{folder}/{METADATA}: model file name {name!r} must be a plain file name")
    path = os.path.join(folder, name)
    check_regular_file(path, MAX_MODEL_BYTES, "model file")
    return path, precision


# ---------------------------------------------------------------------------------------------
# The runtime and the model


def load_runtime():
    """(name, version, Interpreter class) of the first importable TFLite runtime."""
    errors = []
    for name in ("ai-edge-litert", "tflite-runtime", "tensorflow"):
        try:
            if name == "ai-edge-litert":
                from ai_edge_litert import interpreter as mod

                return name, dist_version("ai-edge-litert", "ai_edge_litert"), mod.Interpreter
            if name == "tflite-runtime":
                from tflite_runtime import interpreter as mod

                return name, dist_version("tflite-runtime", "tflite_runtime"), mod.Interpreter
            import tensorflow as tf

            return name, tf.__version__, tf.lite.Interpreter
        except Exception as exc:  # ImportError, or a broken native library
            errors.append(f"{name}: {first_line(exc)}")
    raise InputError("no TFLite runtime importable (" + "; ".join(errors) + "); install one: "
                     "pip install ai-edge-litert (or tflite-runtime)")


def dist_version(dist, module):
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:
        return getattr(__import__(module), "__version__", "unknown")


def import_numpy():
    try:
        import numpy
    except ImportError:
        raise InputError("numpy is not installed; install it: pip install numpy") from None
    return numpy


class Model:
    """One TFLite model with the bundle's preprocessing."""

    def __init__(self, folder, precision=None, threads=1):
        self.np = import_numpy()
        self.meta = load_bundle(folder)
        self.path, self.precision = choose_model(folder, self.meta, precision)
        self.runtime = load_runtime()
        try:
            self.interpreter = self.runtime[2](model_path=self.path, num_threads=threads)
            self.interpreter.allocate_tensors()
        except Exception as exc:
            raise ModelError(f"{self.path}: the model does not load with {self.runtime[0]} {self.runtime[1]} "
                             f"({first_line(exc)}); export it again or use another precision") from None
        self.threads = threads
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        _, height, width, channels = self.meta["input_shape"]
        if [int(s) for s in self.input["shape"]] != [1, height, width, channels]:
            raise InputError(f"{self.path}: input shape {list(self.input['shape'])} does not match metadata.json's "
                             f"{self.meta['input_shape']}; the model and metadata.json are from different exports")
        self.size, self.channels = (height, width), channels
        self.class_names = [str(c) for c in self.meta.get("class_names") or []]

    def describe(self):
        return {"model": os.path.basename(self.path), "precision": self.precision,
                "runtime": {"name": self.runtime[0], "version": self.runtime[1]},
                "input": tensor_facts(self.input, self.np), "output": tensor_facts(self.output, self.np),
                "threads": self.threads}

    def preprocess(self, image):
        """A PIL image -> the model's input tensor (normalized, then quantized for an integer input)."""
        norm = self.meta["normalization"]
        x = preprocess(image, self.size, self.channels, norm["mean"], norm["std"], self.np)
        return quantize(x[None], self.input, self.np)

    def run(self, tensor):
        """One inference: the dequantized output vector (float32)."""
        try:
            self.interpreter.set_tensor(self.input["index"], tensor)
            self.interpreter.invoke()
            raw = self.interpreter.get_tensor(self.output["index"])
        except Exception as exc:
            raise ModelError(f"{self.path}: inference failed ({first_line(exc)})") from None
        return dequantize(raw, self.output, self.np).reshape(-1)

    def label(self, index):
        return self.class_names[index] if index < len(self.class_names) else str(index)

    def top_k(self, output, k):
        np = self.np
        scores = output if looks_like_probabilities(output, np) else softmax(output, np)
        order = np.argsort(-scores, kind="stable")[:k]
        return [{"index": int(i), "label": self.label(int(i)), "score": round(float(scores[i]), 6)} for i in order]


def preprocess(image, size, channels, mean, std, np):
    """A PIL image -> normalized float32 HWC, exactly as training made it with torchvision: RGB
    (then grayscale, PIL's L, for 1 channel), Resize(size[0]) of the shorter side, CenterCrop(size),
    ToTensor (pixel / 255), Normalize(mean, std)."""
    image = image.convert("RGB")
    if channels == 1:
        image = image.convert("L")
    image = center_crop(resize_shorter(image, size[0]), size)
    x = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    if x.ndim == 2:
        x = x[:, :, None]
    return ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)


def tensor_facts(detail, np):
    """Shape, dtype and (for integer tensors) the quantization of one input or output tensor."""
    dtype = np.dtype(detail["dtype"]).name
    scale, zero = detail.get("quantization") or (0.0, 0)
    facts = {"shape": [int(s) for s in detail["shape"]], "dtype": dtype, "quantization": None}
    if dtype in INTEGER_DTYPES and scale:
        facts["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
    return facts


def quantize(x, detail, np):
    dtype = np.dtype(detail["dtype"])
    if dtype.name not in INTEGER_DTYPES:
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    if not scale:
        raise ModelError(f"integer input without quantization parameters ({dtype.name}); export the model again")
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize(y, detail, np):
    dtype = np.dtype(detail["dtype"])
    if dtype.name not in INTEGER_DTYPES:
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    if not scale:
        return y.astype(np.float32)
    return (y.astype(np.float32) - np.float32(zero)) * np.float32(scale)


def looks_like_probabilities(output, np):
    """A softmax output already (every value in [0, 1], summing to 1); else logits."""
    return bool(output.size and output.min() >= 0 and output.max() <= 1 and abs(float(output.sum()) - 1.0) < 1e-3)


def softmax(output, np):
    z = output.astype(np.float64) - float(output.max())
    e = np.exp(z)
    return e / e.sum()


# ---------------------------------------------------------------------------------------------
# Images


def import_pillow():
    try:
        from PIL import Image
    except ImportError:
        raise InputError("Pillow is needed to read image files; install it: pip install pillow "
                         "(Debian, Raspberry Pi OS: sudo apt install python3-pil)") from None
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    return Image


def read_image_bytes(path):
    if path == "-":
        data = sys.stdin.buffer.read(MAX_IMAGE_BYTES + 1)
        if len(data) > MAX_IMAGE_BYTES:
            raise InputError(f"-: the image on standard input is larger than {MAX_IMAGE_BYTES} bytes")
        if not data:
            raise InputError("-: no image on standard input")
        return data
    check_regular_file(path, MAX_IMAGE_BYTES, "image")
    with open(path, "rb") as fh:
        return fh.read(MAX_IMAGE_BYTES + 1)


def open_image(path):
    """A decoded PIL image (any mode), or one InputError naming the file."""
    import io
    import warnings

    Image = import_pillow()
    data = read_image_bytes(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputError(f"{path}: {width}x{height} pixels is above the limit of {MAX_IMAGE_PIXELS}")
            image.load()
            return image
        except InputError:
            raise
        except Exception as exc:
            why = first_line(exc)
            if type(exc).__name__ == "UnidentifiedImageError":  # its message names our in-memory buffer
                why = "not a format Pillow can decode, e.g. PNG, JPEG, BMP, GIF, WebP, TIFF"
            raise InputError(f"{path}: not a readable image ({why})") from None


def resize_shorter(image, size):
    """The shorter side to `size`, the longer one scaled and truncated, bilinear (torchvision's Resize(int))."""
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if (new_w, new_h) == (width, height):
        return image
    return image.resize((new_w, new_h), 2)  # 2 = PIL's BILINEAR (antialiased when shrinking), in every Pillow version


def center_crop(image, size):
    """torchvision's CenterCrop for an image at least as large as `size` (height, width)."""
    height, width = size
    top = int(round((image.size[1] - height) / 2.0))
    left = int(round((image.size[0] - width) / 2.0))
    if (top, left) == (0, 0) and image.size == (width, height):
        return image
    return image.crop((left, top, left + width, top + height))


def expand_inputs(paths):
    """Image paths: files as given, folders listed (sorted, non-recursive, image suffixes only), '-' for stdin."""
    out = []
    for path in paths:
        if path != "-" and os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith("."))
            if not names:
                raise InputError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            out += [os.path.join(path, n) for n in names]
        else:
            out.append(path)
        if len(out) > MAX_IMAGES:
            raise InputError(f"more than {MAX_IMAGES} images; classify them in smaller batches")
    return out


# ---------------------------------------------------------------------------------------------
# Commands


def benchmark(model, tensor, runs):
    """`runs` timed inferences on one input (after one warm-up run): latency statistics in ms."""
    model.run(tensor)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.run(tensor)
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    middle = len(times) // 2
    median = times[middle] if len(times) % 2 else (times[middle - 1] + times[middle]) / 2.0
    return {"runs": runs, "median_ms": round(median, 4), "mean_ms": round(sum(times) / runs, 4),
            "min_ms": round(times[0], 4), "max_ms": round(times[-1], 4)}


def classify(args):
    model = Model(args.bundle, args.precision, args.threads)
    paths = expand_inputs(args.images)
    predictions, first = [], None
    for path in paths:
        tensor = model.preprocess(open_image(path))
        first = tensor if first is None else first
        output = model.run(tensor)
        predictions.append({"file": path, "top_k": model.top_k(output, args.top_k),
                            "output": [float(v) for v in output]})
    result = {"ok": True, "runner_version": RUNNER_VERSION, **model.describe(), "arch": platform.machine(),
              "python": platform.python_version(), "predictions": predictions, "benchmark": None}
    if args.benchmark:
        if first is None:
            first = model.np.zeros([int(s) for s in model.input["shape"]], model.input["dtype"])
        result["benchmark"] = benchmark(model, first, args.benchmark)
    return result


def print_human(result, out):
    for p in result["predictions"]:
        best = ", ".join(f"{t['label']} ({t['score']:.3f})" for t in p["top_k"])
        out.write(f"{p['file']}: {best}\n")
    bench = result.get("benchmark")
    if bench:
        out.write(f"{result['model']} ({result['runtime']['name']} {result['runtime']['version']}, {result['threads']} thread(s)): "
                  f"median {bench['median_ms']:.3f} ms over {bench['runs']} runs (min {bench['min_ms']:.3f}, "
                  f"max {bench['max_ms']:.3f})\n")


def first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def bounded_int(low, high):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value
    return parse


def build_parser():
    parser = argparse.ArgumentParser(
        prog="edge_predict.py", description="Classify images with an edge-pipeline TFLite bundle (the on-device runner).")
    parser.add_argument("images", nargs="*", metavar="IMAGE|DIR|-", help="image files, folders of images, or - for stdin")
    parser.add_argument("--bundle", default=os.path.dirname(os.path.abspath(__file__)),
                        help="the bundle folder with metadata.json (default: this file's folder)")
    parser.add_argument("--precision", help="which model of the bundle (default: the release's, else metadata's model)")
    parser.add_argument("--top-k", type=bounded_int(1, MAX_TOP_K), default=5, metavar="K", help="classes per image (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout (with every output value)")
    parser.add_argument("--benchmark", type=bounded_int(1, MAX_BENCHMARK_RUNS), metavar="N",
                        help="also time N inferences (on the first image, or zeros without images)")
    parser.add_argument("--threads", type=bounded_int(1, 256), default=1, help="interpreter threads (default 1)")
    return parser


def main(argv=None, stdout=None):
    stdout = stdout or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        if not args.images and not args.benchmark:
            raise InputError("give image files, a folder of images or - (or --benchmark N)")
        result = classify(args)
    except (InputError, ModelError) as exc:
        if args.json:
            stdout.write(json.dumps({"ok": False, "error": str(exc), "exit_code": exc.exit_code}) + "\n")
        else:
            sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    if args.json:
        stdout.write(json.dumps(result) + "\n")
    else:
        print_human(result, stdout)
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
