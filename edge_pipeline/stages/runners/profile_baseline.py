"""The trained baseline as TFLite files, for the profile stages' speed-up figures.

The baseline is the output of the recipe's first model stage (`train`). It is converted exactly as
the export stage converts the shipped model (fold Flatten+Linear, ONNX at the export's opset,
onnx2tf in the worker, the quantize stage's calibration set, io_type and per-channel setting), into
the shipped precisions, so a shipped file is compared with the baseline file of its own precision.
Layer-specific options (`keep_float`, `auto_keep_float`) are not carried over: they name layers of
the shipped model; the baseline is the plain conversion.

Converted once per run into `baseline/` (see rundir.py) and reused while its key holds: the
baseline stage's cache key and output hashes, the quantize plan and calibration set, the opset and
the precisions. A failed conversion is recorded, reported and never fails the run; a converter's
refusal of one precision is cached like a result, a crash is retried by the next profile run.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...artifacts import (
    atomic_write_json,
    canonical_json,
    read_json,
    read_npy,
    sha256_file,
    sha256_text,
    write_refused,
)
from ...convert.nhwc import fold_flatten_linear
from ...convert.onnx_export import export_onnx
from ...convert.tflite_convert import run_conversion
from ...errors import EdgePipelineError
from ...rundir import CALIBRATION_FILE, ONNX_FILE, QUANT_PLAN_FILE, STAGE_RECORD, baseline_filename
from ...ui import console

BASELINE_LOG = "baseline-convert.log"


@dataclass
class Baseline:
    """The baseline's files (precision -> path) and why any precision has none."""

    model_stage: str
    files: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    reused: bool = False
    same_as_shipped: bool = False

    def record(self, run_root: Path) -> dict[str, Any]:
        """The profile stage's `baseline` entry in metrics.json (paths relative to the run folder)."""
        files = {p: {"path": path.relative_to(run_root).as_posix(), "size_bytes": path.stat().st_size}
                 for p, path in self.files.items()}
        out: dict[str, Any] = {"model_stage": self.model_stage, "files": files, "failed": self.failed, "reused": self.reused}
        if self.same_as_shipped:
            out["same_as_shipped"] = True
        return out


def model_stages(ctx, before: int) -> list:
    return [s for s in ctx.recipe.stages[:before] if s.stage.produces == "model"]


def prepare_baseline(ctx, export_spec, precisions: list[str]) -> Baseline:
    """The baseline in `precisions` (the export's), converted now or reused from `baseline/`."""
    models = model_stages(ctx, export_spec.index)
    base, shipped = models[0], models[-1]
    if base is shipped:  # no model stage between training and export: the shipped files are the baseline's
        return Baseline(base.name, same_as_shipped=True)
    plan, calibration_hash = _plan(ctx, export_spec)
    key = sha256_text(canonical_json({
        "model": _stage_identity(ctx, base), "precisions": sorted(precisions), "opset": export_spec.config.opset,
        "plan": {k: plan.get(k) for k in ("io_type", "per_channel")}, "calibration": calibration_hash,
    }))
    reused = _reuse(ctx.run.baseline_dir, key, base.name)
    if reused is None and ctx.store is not None:
        with ctx.store.lock(key):
            return _from_store_or_convert(ctx, export_spec, base, precisions, plan, key)
    if reused is not None:
        console.print(f"  baseline: reusing the {base.name} stage's model as TFLite ({', '.join(sorted(reused.files))})")
        return reused
    return _convert_or_record_failure(ctx, export_spec, base, precisions, plan, key)


def _convert_or_record_failure(ctx, export_spec, base, precisions: list[str], plan: dict[str, Any], key: str) -> Baseline:
    console.print(f"  baseline: converting the {base.name} stage's model to {', '.join(precisions)} for the speed-up figures")
    try:
        return _convert(ctx, export_spec, base, precisions, plan, key)
    except Exception as exc:  # any failure here is recorded and reported, never fails the run
        if write_refused(exc) is not None:
            raise
        why = str(exc) if isinstance(exc, EdgePipelineError) else f"{type(exc).__name__}: {exc}"
        console.print(f"  [yellow]baseline: conversion failed, no speed-up figures: {why}[/]")
        return Baseline(base.name, failed=dict.fromkeys(precisions, why))


def _from_store_or_convert(ctx, export_spec, base, precisions: list[str], plan: dict[str, Any], key: str) -> Baseline:
    """With a shared store (a sweep): the variants that share the baseline convert it once. Called
    holding the key's lock; only from a profile stage, which holds the cores alone (cores.py), so
    this lock taken inside the cores lock cannot close a cycle."""
    record = ctx.store.install(key, ctx.run.fresh_baseline_tmp_dir(), ctx.run.baseline_dir, ctx.run.remove_ours)
    if record is None:
        baseline = _convert_or_record_failure(ctx, export_spec, base, precisions, plan, key)
        if _reuse(ctx.run.baseline_dir, key, base.name) is not None:  # converted (a crash left no folder): share it
            ctx.store.publish(key, ctx.run.baseline_dir)
        return baseline
    console.print(f"  baseline: the {base.name} stage's model as TFLite, from the shared store")
    reused = _reuse(ctx.run.baseline_dir, key, base.name)
    assert reused is not None
    return reused


def _stage_identity(ctx, spec) -> dict[str, Any]:
    """The stage's cache key and output hashes, from its stage.json (the pipeline wrote it)."""
    record = read_json(ctx.run.stage_dir(spec.index, spec.name) / STAGE_RECORD)
    return {"key": record.get("key"), "outputs": record.get("outputs")}


def _quantize_spec(ctx, export_spec):
    """The quantize stage that planned the export (the latest one before it), or None."""
    found = [s for s in ctx.recipe.stages[: export_spec.index] if s.stage.produces == "calibration"]
    return found[-1] if found else None


def _plan(ctx, export_spec) -> tuple[dict[str, Any], str | None]:
    spec = _quantize_spec(ctx, export_spec)
    if spec is None:
        return {}, None
    folder = ctx.run.stage_dir(spec.index, spec.name)
    return read_json(folder / QUANT_PLAN_FILE), sha256_file(folder / CALIBRATION_FILE)


def _reuse(folder: Path, key: str, model_stage: str) -> Baseline | None:
    """The converted baseline if `baseline/` holds one for this key with every file intact."""
    record_path = folder / STAGE_RECORD
    if folder.is_symlink() or not record_path.is_file():
        return None
    try:
        record = read_json(record_path)
    except EdgePipelineError:
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    for rel, digest in (record.get("outputs") or {}).items():
        path = folder / rel
        if not path.is_file() or sha256_file(path) != digest:
            return None
    files = {p: folder / name for p, name in (record.get("files") or {}).items()}
    return Baseline(model_stage, files, dict(record.get("failed") or {}), reused=True)


def _convert(ctx, export_spec, base, precisions: list[str], plan: dict[str, Any], key: str) -> Baseline:
    run, data = ctx.run, ctx.data
    tmp = run.fresh_baseline_tmp_dir()
    try:
        module = ctx.load_model(base.name).module.eval()
        exported, _ = fold_flatten_linear(module, data.input_shape)
        onnx_path = tmp / ONNX_FILE
        export_onnx(exported, data.input_shape, onnx_path, export_spec.config.opset, getattr(exported, "export_scopes", None))
        calibration = None
        quantize = _quantize_spec(ctx, export_spec)
        if quantize is not None:
            calibration = read_npy(run.stage_dir(quantize.index, quantize.name) / CALIBRATION_FILE, what="calibration array")
        samples = calibration if calibration is not None else data.sample("train", 20).permute(0, 2, 3, 1).numpy()
        mean, std = np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
        conversion = run_conversion(
            onnx_path, tmp, precisions, samples * std + mean, calibration,
            io_type=plan.get("io_type", "int8"), per_channel=plan.get("per_channel", True),
            log_path=run.logs_dir / BASELINE_LOG, timeout=export_spec.config.timeout_s,
        )
        names = {}
        for precision, path in conversion.files.items():
            names[precision] = baseline_filename(precision)
            os.replace(path, tmp / names[precision])
        failed = {p: f"the converter refused it: {m}" for p, m in conversion.failed.items()}
        for precision in failed:
            console.print(f"  [yellow]baseline: {precision} could not be converted ({conversion.failed[precision]})[/]")
        outputs = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        atomic_write_json(tmp / STAGE_RECORD, {"key": key, "model_stage": base.name, "files": names, "failed": failed,
                                               "outputs": outputs})
        final = run.baseline_dir
        if final.exists() or final.is_symlink():
            run.remove_ours(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Baseline(base.name, {p: final / name for p, name in names.items()}, failed)
