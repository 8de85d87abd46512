"""The export folder as a deployment bundle: what the export stage adds to it for deployment
(`add_runner_files`), and reading one back (`open_bundle`) from an export folder or a run folder.

Added to every bundle: `edge_predict.py` (the runner), `samples/` (test images as PNG files +
labels.json, for verification on a device) and `android/` (the model, labels and metadata laid
out as app assets, with a README of the Kotlin calls that load them, filled in with this model's
input size, normalization and quantization).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_text, read_json
from ..errors import UserError
from ..rundir import RunDir
from .samples import SAMPLES_DIR, read_sample_labels

RUNNER_SOURCE = Path(__file__).resolve().with_name("edge_predict.py")
RUNNER = RUNNER_SOURCE.name
METADATA = "metadata.json"
LABELS = "labels.txt"
ANDROID_DIR = "android"
ANDROID_ASSETS = f"{ANDROID_DIR}/assets"


def add_runner_files(out_dir: Path, data) -> dict[str, Any]:
    """Called at the end of the export stage: the runner, the verification samples and android/."""
    from .samples import write_samples

    shutil.copyfile(RUNNER_SOURCE, out_dir / RUNNER)
    samples = write_samples(data, out_dir / SAMPLES_DIR)
    metadata = read_json(out_dir / METADATA)
    assets = out_dir / ANDROID_ASSETS
    assets.mkdir(parents=True, exist_ok=True)
    model = metadata["model"]
    for name in (model, LABELS, METADATA):
        shutil.copyfile(out_dir / name, assets / name)
    atomic_write_text(out_dir / ANDROID_DIR / "README.md", android_readme(metadata))
    return {"runner": RUNNER, "samples": len(samples["samples"]), "android": ANDROID_DIR}


def android_readme(meta: dict[str, Any]) -> str:
    """How an Android app loads this bundle's model (LiteRT's Interpreter API), with its numbers."""
    _, height, width, channels = meta["input_shape"]
    norm = meta["normalization"]
    entry = (meta.get("files") or {}).get(meta.get("model_precision")) or {}
    dtype = (entry.get("input") or {}).get("dtype", "float32")
    quant = (entry.get("input") or {}).get("quantization") or {}
    out_quant = (entry.get("output") or {}).get("quantization") or {}
    mean = ", ".join(f"{v:.6g}f" for v in norm["mean"])
    std = ", ".join(f"{v:.6g}f" for v in norm["std"])
    pixel = ("val values = floatArrayOf(0.299f * r + 0.587f * g + 0.114f * b)  // grayscale as PIL converts it"
             if channels == 1 else "val values = floatArrayOf(r, g, b)")
    if dtype in ("int8", "uint8"):
        lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
        put = f"input.put((Math.round(v / {quant.get('scale')}f) + ({quant.get('zero_point')})).coerceIn({lo}, {hi}).toByte())"
        element, buffer_bytes = 1, f"{height} * {width} * {channels}"
    else:
        put, element, buffer_bytes = "input.putFloat(v)", 4, f"4 * {height} * {width} * {channels}"
    dequant = f"(raw - ({out_quant.get('zero_point')})) * {out_quant.get('scale')}f" if out_quant else "raw"
    output_read = ("val out = Array(1) { ByteArray(labels.size) }\n"
                   "interpreter.run(input, out)\n"
                   f"val scores = out[0].map {{ raw -> {dequant} }}" if out_quant else
                   "val out = Array(1) { FloatArray(labels.size) }\n"
                   "interpreter.run(input, out)\n"
                   "val scores = out[0].toList()")
    return f"""# {meta.get('recipe', 'model')}: Android app assets

Copy `assets/*` into your app's `app/src/main/assets/`: `{meta['model']}` ({meta.get('model_precision')}),
`labels.txt` (one class per line, in output order) and `metadata.json` (what the numbers below come
from). The model takes one {height}x{width}x{channels} image (NHWC, {dtype}) and returns one score per class.

```kotlin
// app/build.gradle.kts
android {{ androidResources {{ noCompress += "tflite" }} }}   // the model is memory-mapped: keep it uncompressed
dependencies {{ implementation("com.google.ai.edge.litert:litert:1.0.1") }}   // LiteRT (formerly TensorFlow Lite)
```

```kotlin
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel

val fd = context.assets.openFd("{meta['model']}")
val model = FileInputStream(fd.fileDescriptor).channel
    .map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
val interpreter = Interpreter(model, Interpreter.Options().setNumThreads(4))
val labels = context.assets.open("labels.txt").bufferedReader().readLines()

// Preprocess exactly as in training: resize the shorter side to {height} (bilinear), center-crop
// {height}x{width}, scale pixels to [0, 1], normalize per channel with mean [{mean}], std [{std}].
val mean = floatArrayOf({mean}); val std = floatArrayOf({std})
val input = ByteBuffer.allocateDirect({buffer_bytes}).order(ByteOrder.nativeOrder())
for (y in 0 until {height}) for (x in 0 until {width}) {{
    val p = bitmap.getPixel(x, y)          // bitmap: already resized and cropped to {width}x{height}
    val r = ((p shr 16) and 0xFF) / 255f; val g = ((p shr 8) and 0xFF) / 255f; val b = (p and 0xFF) / 255f
    {pixel}
    for (c in values.indices) {{
        val v = (values[c] - mean[c]) / std[c]
        {put}
    }}
}}
input.rewind()
{output_read}
val best = scores.indices.maxByOrNull {{ scores[it] }}!!
println("${{labels[best]}} ${{scores[best]}}")
```

Input element: {element} byte(s); `interpreter.getInputTensor(0).quantizationParams()` gives the same
scale and zero point as above. On a device with Python, `edge_predict.py` (next to this folder)
does all of this: `python3 edge_predict.py image.jpg`.
"""


@dataclass
class Bundle:
    """An export folder, and the run it belongs to (if any)."""

    folder: Path
    metadata: dict[str, Any]
    run_dir: Path | None = None
    recommendations: dict[str, str] = field(default_factory=dict)  # device -> precision the run recommends shipping

    @property
    def precisions(self) -> list[str]:
        return list(self.metadata.get("files") or {})

    @property
    def default_precision(self) -> str:
        return str(self.metadata.get("model_precision") or "float32")

    @property
    def app(self) -> str:
        return str(self.metadata.get("recipe") or "model")

    def precision_for(self, device: str, asked: str | None) -> tuple[str, str]:
        """(precision, why) to deploy on `device`: asked for, else the run's recommendation, else the bundle's model."""
        if asked:
            precision, why = asked, "--precision"
        elif device in self.recommendations:
            precision, why = self.recommendations[device], "the run's recommendation for this device"
        else:
            precision, why = self.default_precision, "the bundle's model.tflite"
        if precision not in self.precisions:
            raise UserError(f"--precision: the bundle {self.folder} has no {precision} file; it has: {', '.join(self.precisions)}")
        return precision, why

    def model_file(self, precision: str) -> Path:
        name = self.metadata["files"][precision]["file"]
        return self._file(name)

    def _file(self, name: str) -> Path:
        path = self.folder / name
        if Path(name).name != name or not path.is_file():
            raise UserError(f"{self.folder}: {name} is missing; the bundle is incomplete: rerun the recipe to export it again")
        return path

    def release_files(self, precision: str) -> dict[str, Path]:
        """What a release of `precision` holds: {name on the device: file here}."""
        files = {self.metadata["files"][precision]["file"]: self.model_file(precision)}
        for name in (LABELS, METADATA):
            files[name] = self._file(name)
        files[RUNNER] = RUNNER_SOURCE  # this version's runner: the very code that computes the host's reference
        samples = self.samples()
        for image in samples:
            files[f"{SAMPLES_DIR}/{image.name}"] = image
        return files

    def samples(self) -> list[Path]:
        folder = self.folder / SAMPLES_DIR
        images = sorted(p for p in folder.glob("*.png") if p.is_file()) if folder.is_dir() else []
        if not images:
            raise UserError(f"{self.folder}: no {SAMPLES_DIR}/*.png test images to verify a deployment with (the bundle was "
                            "exported by an older edge-pipeline); rerun the recipe to export it again")
        return images

    def sample_labels(self) -> dict[str, int]:
        return read_sample_labels(self.folder / SAMPLES_DIR)


def open_bundle(path: str | Path) -> Bundle:
    """A run folder (its last export stage) or an export folder (with metadata.json)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such folder; give a run folder (runs/<name>) or its export folder")
    run = RunDir(path)
    if run.is_run():
        metrics = run.read_metrics()
        export = run.last_stage_of(metrics, "export")
        if export is None:
            raise UserError(f"{path}: the run has no export stage; add `- export: {{format: tflite}}` to the recipe")
        folder = export[1]
        if not (folder / METADATA).is_file():
            raise UserError(f"{folder}: no {METADATA}; the export did not finish: rerun the recipe")
        return _bundle(folder, path, metrics)
    if (path / METADATA).is_file():
        parent = RunDir(path.parent)
        return _bundle(path, path.parent if parent.is_run() else None, parent.read_metrics() if parent.is_run() else None)
    raise UserError(f"{path}: neither a run folder (metrics.json) nor an export folder (metadata.json)")


def _bundle(folder: Path, run_dir: Path | None, metrics: dict[str, Any] | None) -> Bundle:
    metadata = read_json(folder / METADATA, limit=1 << 20)
    if not isinstance(metadata, dict) or not isinstance(metadata.get("files"), dict) or not metadata["files"]:
        raise UserError(f"{folder / METADATA}: expected an object with `files`; the bundle is corrupt: rerun the recipe")
    recommendations = {}
    for rec in (metrics or {}).get("recommendations") or []:
        if isinstance(rec, dict) and rec.get("ship") and rec.get("precision") in metadata["files"]:
            recommendations[str(rec.get("device"))] = str(rec["precision"])
    return Bundle(folder.resolve(), metadata, run_dir.resolve() if run_dir else None, recommendations)
