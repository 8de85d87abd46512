"""Running the `export` stage (imported only when it runs; see `export.py` for its config)."""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np

from ... import __version__
from ...artifacts import atomic_write_json, atomic_write_text, read_json, read_npy, sha256_text
from ...convert.compat import check_device_models, ensure_loadable
from ...convert.diagnose import diagnose
from ...convert.fidelity import fidelity, tflite_logits
from ...convert.inspect import inspect_tflite
from ...convert.nhwc import fold_flatten_linear
from ...convert.onnx_export import compare_onnx_to_torch, export_onnx
from ...convert.runtime import median_latency_ms
from ...convert.tflite_convert import conversion_started
from ...data.chance import chance_accuracy, looks_untrained
from ...data.labels import labels_text
from ...deploy.bundle import add_runner_files
from ...errors import EdgePipelineError, PipelineError, UserError
from ...evaluation import predict
from ...models.store import load_model
from ...rundir import CALIBRATION_FILE, ONNX_FILE, QUANT_PLAN_FILE
from ...ui import console, status_line
from ..context import StageResult
from ..export import BUNDLE_MODEL
from .early_exit import export_chain
from .gates import FAIL, gate_result, relax_hint


def run(stage, ctx):
    cfg, data, out = stage.config, ctx.data, ctx.out_dir
    plan, calibration = _plan(stage, ctx)
    module = _model_to_convert(ctx, plan).module.eval()
    onnx_path = out / ONNX_FILE
    exported, folded = fold_flatten_linear(module, data.input_shape)
    rewrites = export_onnx(exported, data.input_shape, onnx_path, cfg.opset, getattr(exported, "export_scopes", None))

    precisions = ["float32"] + [m for m in plan.get("modes", []) if m != "float32"]
    mean, std = np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
    samples = calibration if calibration is not None else data.sample("train", 20).permute(0, 2, 3, 1).numpy()
    with conversion_started(
        onnx_path, out, precisions, samples * std + mean, calibration,
        io_type=plan.get("io_type", "int8"), per_channel=plan.get("per_channel", True),
        keep_float=plan.get("keep_float"), auto_keep_float=plan.get("auto_keep_float", 0),
        diagnose_samples=plan.get("diagnose_samples", 32),
        log_path=ctx.run.logs_dir / f"{ctx.spec.dirname}-convert.log", timeout=cfg.timeout_s,
    ) as pending:
        # The torch-side checks need only the ONNX file: they run while the worker imports TensorFlow
        # and converts (a failure here stops the worker).
        onnx_error = compare_onnx_to_torch(module, onnx_path, data.sample("test", 16).numpy(), cfg.onnx_tolerance)
        logits, labels = predict(module, data.loader("test", batch_size=256))
        reference = logits.numpy()
        targets = stage._targets(ctx.recipe, ctx.spec.index)
        conversion, artifact_of, facts_of = _convert_and_evaluate(stage, ctx, pending, reference, targets)
    if conversion.failed:
        raise PipelineError("export: " + "; ".join(
            f"{p} could not be converted ({message}): drop it from quantize.mode" for p, message in conversion.failed.items()
        ) + f"; full log: {ctx.run.logs_dir / f'{ctx.spec.dirname}-convert.log'}")
    for precision, ops in conversion.float_fallback.items():
        console.print(f"  [yellow]{precision}: {', '.join(ops)} has no {precision} kernel; kept in float[/]")
    float_accuracy = float((reference.argmax(1) == labels.numpy()).mean())
    details: dict[str, Any] = {
        "onnx_vs_torch_rel_error": float(f"{onnx_error:.3e}"), "flatten_linear_folded": folded,
        **rewrites,
        "float_accuracy": round(float_accuracy, 6), "conversion_seconds": conversion.seconds,
        "precisions": facts_of,
        "float_fallback": conversion.float_fallback,
        **_untrained_check(float_accuracy, data.num_classes, len(labels)),
    }
    artifacts = [artifact_of[p] for p in precisions]
    inputs = data.sample("test", plan.get("diagnose_samples", 32)).permute(0, 2, 3, 1).numpy()
    details["diagnosis"] = _diagnose(stage, conversion.files, precisions, inputs, onnx_path)
    if conversion.selective:
        details["keep_float"] = _keep_float_cost(stage, ctx, conversion, reference, details)
    details["gates"] = _gates(stage, ctx, plan, precisions, float_accuracy, details)
    details["compatibility"] = _compatibility(stage, conversion.files, precisions, targets)
    details["bundle"] = _bundle(stage, ctx, plan, conversion.files, precisions, details)
    details |= export_chain(stage, ctx, module, plan, calibration, precisions)  # early-exit segments; {} without exits
    return StageResult(metrics={"artifacts": artifacts}, details=details)


def _convert_and_evaluate(stage, ctx, pending, reference, targets):
    """Wait for the conversion, evaluating each file as soon as the worker has written it for good:
    float32 is checked while int8 calibrates. (conversion, precision -> artifact, precision -> facts)."""
    artifact_of: dict[str, dict[str, Any]] = {}
    holder: dict[str, Any] = {"precisions": {}}  # _evaluate fills details["precisions"]

    def evaluate(precision, path):
        artifact_of[precision] = _evaluate(stage, ctx, precision, path, reference, holder, targets)

    conversion = pending.result(on_file=evaluate)
    return conversion, artifact_of, holder["precisions"]


def _model_to_convert(ctx, plan):
    """The quantize stage's prepared model (equalized, bias-corrected) if it made one, else the
    latest model stage's."""
    if plan.get("model_dir"):
        return load_model(ctx.stage_dir(ctx.upstream("calibration").name) / plan["model_dir"])
    return ctx.load_model()


def _plan(stage, ctx):
    if not any(s.stage.produces == "calibration" for s in ctx.recipe.stages[: ctx.spec.index]):
        return {}, None
    calib_dir = ctx.stage_dir(ctx.upstream("calibration").name)
    return read_json(calib_dir / QUANT_PLAN_FILE), read_npy(calib_dir / CALIBRATION_FILE, what="calibration array")


def _evaluate(stage, ctx, precision: str, path, reference, details, targets) -> dict[str, Any]:
    """Inspect and evaluate one file; the float32 file must match torch; Flex ops only for a
    device that allows them."""

    info = inspect_tflite(path)
    if info["flex_ops"] and not any(device.allow_flex for device, _ in targets):
        raise PipelineError(
            f"export: {path.name} needs Flex (SELECT_TF_OPS) ops {', '.join(info['flex_ops'])}, which TFLite runtimes "
            "without the TensorFlow delegate cannot run; replace the layers that need them (see `edge-pipeline inspect "
            f"{path.name}`), or deploy to a device with `allow_flex: true`"
        )
    try:
        ensure_loadable(path)  # in a subprocess first: a broken file must not crash this process
    except UserError as exc:
        raise PipelineError(
            f"export: {exc}; drop this precision from quantize.mode, or keep the failing layers in float"
        ) from None
    facts = fidelity(*tflite_logits(path, ctx.data), reference)
    if precision == "float32" and facts["max_rel_error"] > stage.config.float_tolerance:
        raise PipelineError(
            f"export: float32 TFLite differs from torch by {facts['max_rel_error']:.2e} (relative max-abs), "
            f"above float_tolerance {stage.config.float_tolerance:.0e}; inspect {path.name} ops {info['ops']}"
        )
    details["precisions"][precision] = {
        **facts, "file": path.name, "size_bytes": info["size_bytes"], "transposes": info["transposes"],
        "op_versions": info["op_versions"], "inputs": info["inputs"], "outputs": info["outputs"],
        "flex_ops": info["flex_ops"], "min_runtime_version": info["min_runtime_version"],
    }
    return {  # exactly DESIGN.md's artifact keys
        "format": "tflite", "precision": precision, "path": f"{ctx.spec.dirname}/{path.name}",
        "size_bytes": info["size_bytes"], "accuracy": facts["accuracy"], "ops": info["ops"],
    }


def _diagnose(stage, files, precisions, inputs, onnx_path) -> dict[str, Any]:
    """Per-layer comparison of every reduced file with the float32 file (a failure is a note)."""
    out = {}
    for precision in precisions[1:]:
        with status_line(f"diagnosing {files[precision].name} layer by layer"):
            try:
                out[precision] = diagnose(files["float32"], files[precision], inputs, onnx_path).to_dict(top=10)
            except (EdgePipelineError, ValueError, RuntimeError) as exc:
                out[precision] = {"error": str(exc)}
    return out


def _keep_float_cost(stage, ctx, conversion, reference, details) -> dict[str, Any]:
    """What keeping layers in float bought (accuracy) and cost (size, host latency) vs full int8."""
    sel = conversion.selective
    full, mixed_path = sel["full_int8"], conversion.files["int8"]
    mixed = details["precisions"]["int8"]
    cost = {
        "layers": sel["layers"], "denylisted_tensors": len(sel["denylisted_tensors"]),
        "auto_ranked": sel.get("auto_ranked", []), "full_int8_file": full.name,
        "mixed": {"accuracy": mixed["accuracy"], "agreement": mixed["agreement"], "size_bytes": mixed["size_bytes"]},
    }
    try:
        ensure_loadable(full)
    except UserError as exc:  # the plain int8 model may be the broken one: that is why layers stay float
        cost["full_int8"] = {"error": str(exc), "size_bytes": full.stat().st_size}
        cost["mixed"]["host_latency_ms"] = round(median_latency_ms(mixed_path, runs=100), 4)
        console.print(f"  keep_float {', '.join(sel['layers'])}: the full int8 model does not load; the mixed one does")
        return cost
    full_facts = fidelity(*tflite_logits(full, ctx.data), reference)
    with status_line("timing int8 with and without float layers"):
        # Interleaved, so both see the same machine load.
        times: dict[str, list[float]] = {"full": [], "mixed": []}
        for _ in range(3):
            times["full"].append(median_latency_ms(full, runs=100))
            times["mixed"].append(median_latency_ms(mixed_path, runs=100))
    cost["full_int8"] = {"accuracy": full_facts["accuracy"], "agreement": full_facts["agreement"],
                         "size_bytes": full.stat().st_size, "host_latency_ms": round(min(times["full"]), 4)}
    cost["mixed"]["host_latency_ms"] = round(min(times["mixed"]), 4)
    cost["accuracy_gain"] = round(cost["mixed"]["accuracy"] - cost["full_int8"]["accuracy"], 6)
    cost["latency_ratio"] = round(cost["mixed"]["host_latency_ms"] / max(cost["full_int8"]["host_latency_ms"], 1e-9), 3)
    console.print(
        f"  keep_float {', '.join(sel['layers'])}: accuracy {cost['full_int8']['accuracy']:.2%} -> "
        f"{cost['mixed']['accuracy']:.2%}, host latency x{cost['latency_ratio']:.2f}"
    )
    return cost


def _untrained_check(float_accuracy: float, num_classes: int, samples: int) -> dict[str, Any]:
    """Is the float model at chance? Then its files are not a result and the gates cannot judge them."""
    untrained = looks_untrained(float_accuracy, num_classes, samples)
    if untrained:
        console.print(f"  [yellow]export: the float model is untrained: test accuracy {float_accuracy:.2%} is at chance "
                      f"(1/{num_classes} = {chance_accuracy(num_classes):.2%}); the quantization gates do not apply[/]")
    return {"untrained": untrained, "chance_accuracy": round(chance_accuracy(num_classes), 6), "test_samples": samples}


def _gates(stage, ctx, plan, precisions, float_accuracy, details) -> dict[str, Any]:
    """Every reduced file against the quantize stage's gates (defaults where the recipe sets none);
    a failure stops the run with the diagnosis and the fix."""
    configured = plan.get("gates") or {}
    results = {}
    for precision in precisions[1:]:
        facts = details["precisions"][precision]
        result = gate_result(facts, float_accuracy, configured, precision, details["test_samples"], details["untrained"])
        results[precision] = result
        if result["status"] == FAIL:
            failures = result["failures"]
            diagnosis = details["diagnosis"].get(precision, {})
            log = ctx.run.logs_dir / f"{ctx.spec.dirname}-diagnosis-{precision}.json"
            atomic_write_json(log, {"gate_failures": failures, "gate": result, "diagnosis": diagnosis, "fidelity": facts})
            worst = ", ".join(f"{r['layer']} ({r['op']}, added error {r['added']:.3f})" for r in diagnosis.get("ranked", [])[:3])
            more = plan.get("auto_keep_float", 0) + 1
            hint = f"quantize.auto_keep_float: {more} (or keep_float: [layer])" if precision == "int8" else "another precision"
            raise PipelineError(
                f"export: {precision} fails the quantization gate: {'; '.join(failures)}. "
                f"Worst layers: {worst or 'diagnosis unavailable'}. Try {hint}{relax_hint(result, precision)}; details: {log}"
            )
    return {**configured, "results": results}


def _compatibility(stage, files, precisions, targets) -> list[dict[str, Any]]:
    """Every file the profile stages will deploy, against each device's runtime (real load where
    the runtime is installed here). Flex ops or ops the runtime lacks stop the run."""

    rows, failures = [], []
    for device, wanted in targets:
        checked = [p for p in precisions if not wanted or p in wanted]
        with status_line(f"checking {', '.join(files[p].name for p in checked)} on {device.name}'s runtime"):
            results = dict(zip(checked, check_device_models([files[p] for p in checked], device)))  # one subprocess
        loads = [p for p in precisions if p in results and results[p].status == "ok"]
        for precision, result in results.items():
            rows.append({**result.to_dict(), "device": device.name, "precision": precision, "model": files[precision].name})
            if result.status == "unverified":
                console.print(f"  [yellow]{device.name}: {result.line()}[/]")
            elif not result.ok:
                others = ", ".join(p for p in loads if p != precision) or "none of the exported precisions"
                failures.append(f"{device.name}: {result.line()} (loads there: {others})")
    if failures:
        raise PipelineError("export: device runtime check failed:\n" + "\n".join(failures))
    return rows


def _bundle(stage, ctx, plan, files, precisions, details) -> dict[str, Any]:
    data, out = ctx.data, ctx.out_dir
    primary = precisions[1] if len(precisions) > 1 else "float32"
    shutil.copyfile(files[primary], out / BUNDLE_MODEL)
    outputs = details["precisions"][primary]["outputs"][0]["shape"][-1]  # labels.txt has one line per output
    atomic_write_text(out / "labels.txt", labels_text(data.class_names, int(outputs)))
    atomic_write_json(out / "metadata.json", {
        "model": BUNDLE_MODEL, "model_precision": primary, "onnx": ONNX_FILE, "labels": "labels.txt",
        "input_shape": [1, data.image_size, data.image_size, data.in_channels], "layout": "NHWC",
        "normalization": {
            "mean": data.mean, "std": data.std,
            "formula": "input = (x - mean) / std per channel, x in [0, 1] (pixel / 255 for 8-bit images), "
                       "after resizing and center-cropping to the input size",
        },
        "class_names": data.class_names,
        "files": {p: {"file": files[p].name, "dtype": details["precisions"][p]["inputs"][0]["dtype"],
                      "input": details["precisions"][p]["inputs"][0], "output": details["precisions"][p]["outputs"][0]}
                  for p in precisions},
        "quantization": plan or None, "recipe": ctx.recipe.name,
        "recipe_sha256": sha256_text(ctx.recipe.resolved_yaml()), "edge_pipeline": __version__,
    })
    runner = add_runner_files(out, data)  # edge_predict.py, samples/ (test images), android/ (app assets)
    return {"model.tflite": primary, "files": sorted(p.name for p in out.iterdir() if p.is_file()), **runner}
