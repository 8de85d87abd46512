"""Running the `early_exit` stage (see `early_exit.py` for its config), and the two hooks other stages
call for a model with exit branches: `export_chain` (export stage) and `adaptive_profile` (profile stage).
Both return {} for a model without exits, so nothing changes for other models."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...artifacts import atomic_write_json, read_json
from ...compress.early_exit import (
    ExitChain,
    attach_exits,
    choose_cuts,
    choose_threshold,
    cumulative_costs,
    exit_logits,
    freeze_backbone,
    joint_loss,
    outcome,
    rescale_branches,
    self_distillation,
    threshold_grid,
)
from ...convert.segments import (
    ChainRunner,
    SegmentWithExit,
    check_onnx_segment,
    convert_segment,
    export_segment_onnx,
    feature_layout,
    nhwc,
    segment_outputs,
)
from ...errors import PipelineError, UserError
from ...models.exit_branches import exits_of
from ...profiling.exits import EXITS_DIR, EXITS_FILE, profile_chain
from ...training import fit
from ...ui import console, status_line
from ..context import StageResult
from .batchnorm_check import batchnorm_check

OTHER_MEASURE = {"entropy": "max_softmax", "max_softmax": "entropy"}
# Test inputs each segment file is checked on against torch (ONNX and TFLite, outputs and features).
CHECK_SAMPLES = 32


def run(stage, ctx):
    cfg, data = stage.config, ctx.data
    where = f"stages[{ctx.spec.index}].early_exit"
    model = ctx.load_model()
    if exits_of(model.module) is not None:
        raise UserError(f"{where}: the incoming model already has exit branches; keep one early_exit stage")
    try:
        cuts = choose_cuts(model.module, data.input_shape, cfg.at)
    except ValueError as exc:
        raise UserError(f"{where}.at: {exc}") from None
    with torch.no_grad():
        num_classes = int(model.module.eval()(data.sample("train", 1)).shape[1])
    torch.manual_seed(ctx.seed)
    attach_exits(model, cuts, num_classes, cfg.conv_width, cfg.pool_size,
                 {"at": cfg.at, "conv_width": cfg.conv_width, "pool_size": cfg.pool_size})
    console.print(f"  {ctx.spec.name}: exits after {', '.join(c.label for c in cuts)}")
    frozen = [] if cfg.joint else freeze_backbone(model.module)
    chain = ExitChain(model.module, data.input_shape, frozen_backbone=not cfg.joint)
    loss = joint_loss(cfg.label_smoothing) if cfg.joint else self_distillation(cfg.temperature)
    history = fit(chain, data, cfg, ctx.seed, loss, ctx.spec.name)
    for p in frozen:
        p.requires_grad_(True)
    chain.frozen_backbone = False
    details: dict[str, Any] = {"mode": "joint" if cfg.joint else "self_distillation", "history": history,
                               "cuts": [{"node": c.node, "label": c.label, "shape": list(c.shape)} for c in cuts]}
    if cfg.joint:  # the backbone trained: its BatchNorm statistics get the same check as after finetune
        checked = batchnorm_check(model.module, data, "auto", cfg.epochs, ctx.spec.name, ctx.seed)
        if checked is not None:
            details["batchnorm"] = checked
    details.update(evaluate_exits(chain, data, cfg))
    model.meta["early_exit"] = {k: details[k] for k in ("measure", "threshold", "grid")}
    _print_choice(ctx.spec.name, details)
    return StageResult(model, details=details)


def evaluate_exits(chain: ExitChain, data, cfg) -> dict[str, Any]:
    """Per-exit accuracy, the threshold chosen on val and its outcome on test, for both measures."""
    val_logits, val_labels = exit_logits(chain, data.loader("val", batch_size=256))
    test_logits, test_labels = exit_logits(chain, data.loader("test", batch_size=256))
    segment_macs, branch_macs = chain.segment_macs()
    costs = cumulative_costs(segment_macs, branch_macs)
    plain = sum(segment_macs)
    chosen, reference = choose_threshold(val_logits, val_labels, cfg.measure, costs, cfg.max_accuracy_drop)
    test = outcome(test_logits, test_labels, cfg.measure, chosen.threshold, costs)
    grid = threshold_grid(val_logits, cfg.measure, chosen.threshold)
    other = OTHER_MEASURE[cfg.measure]
    other_val, _ = choose_threshold(val_logits, val_labels, other, costs, cfg.max_accuracy_drop)
    other_test = outcome(test_logits, test_labels, other, other_val.threshold, costs)
    exits = [{
        "index": k, "macs": costs[k], "segment_macs": segment_macs[k],
        "branch_macs": branch_macs[k] if k < len(branch_macs) else 0,
        "val_accuracy": round(float((val_logits[k].argmax(-1) == val_labels).mean()), 6),
        "test_accuracy": round(float((test_logits[k].argmax(-1) == test_labels).mean()), 6),
    } for k in range(len(costs))]
    test_reference = float((test_logits[-1].argmax(-1) == test_labels).mean())
    return {
        "measure": cfg.measure, "threshold": chosen.threshold, "max_accuracy_drop": cfg.max_accuracy_drop,
        "exits": exits, "plain_macs": plain, "worst_case_macs": costs[-1],
        "val": {**chosen.to_dict(), "reference_accuracy": round(reference, 6)},
        "test": {**test.to_dict(), "reference_accuracy": round(test_reference, 6),
                 "macs_ratio": round(test.expected_macs / plain, 4) if plain else None},
        "grid": grid,
        "test_curve": [outcome(test_logits, test_labels, cfg.measure, t, costs).to_dict() for t in grid],
        "other_measure": {"measure": other, "val": other_val.to_dict(),
                          "test": {**other_test.to_dict(), "macs_ratio": round(other_test.expected_macs / plain, 4) if plain else None}},
        "device": {"samples": cfg.device_samples, "repeats": cfg.device_repeats},
    }


def _print_choice(name: str, details: dict[str, Any]) -> None:
    test = details["test"]
    console.print(
        f"  {name}: {details['measure']} < {details['threshold']:g}: test accuracy {test['accuracy']:.2%} "
        f"(final classifier {test['reference_accuracy']:.2%}), expected MACs x{test['macs_ratio']:.2f} of the plain model, "
        f"exits {test['exit_counts']}"
    )


# ---------------------------------------------------------------------------------------------
# Export hook


def _exit_stage_details(ctx) -> dict[str, Any]:
    """details.json of the latest early_exit stage before this one."""
    for spec in reversed(ctx.recipe.stages[: ctx.spec.index]):
        if spec.type == "early_exit":
            return ctx.run.details(ctx.stage_dir(spec.name))
    raise PipelineError(f"{ctx.spec.name}: the model has exit branches but no early_exit stage made them")


def _follow_preparation(ctx, chain: ExitChain, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The quantize stage may have rescaled channels across a cut (equalize): the branches follow."""
    if not plan.get("model_dir") or not plan.get("model_stage"):
        return []
    reference = ExitChain(ctx.load_model(plan["model_stage"]).module, ctx.data.input_shape)
    try:
        return rescale_branches(chain, reference, ctx.data.sample("val", 64))
    except ValueError as exc:
        raise PipelineError(f"export: the quantize stage's preparation changed the model under the exit branches ({exc}); "
                            "turn off the quantize methods that change the float model (relu6_to_relu) or drop early_exit") from None


def _check_branches_fit(chain: ExitChain, input_shape) -> None:
    """A stage after early_exit that changed channel counts (prune, restructure) leaves branches that no
    longer fit their cut points."""
    x = torch.zeros(input_shape)
    with torch.no_grad():
        for k, branch in enumerate(chain.branches):
            x = chain.segments[k].eval()(x)
            if x.dim() != 4 or x.shape[1] != branch.in_channels:
                raise PipelineError(f"export: exit branch {k} expects {branch.in_channels} channels but its cut point now has "
                                    f"{tuple(x.shape[1:])}; put early_exit after the last prune/restructure stage")


def export_chain(stage, ctx, module, plan: dict[str, Any], calibration: np.ndarray | None,
                 precisions: list[str]) -> dict[str, Any]:
    """For a model with exit branches: each segment (with its exit as a second output) converted to
    every precision, checked against torch, the TFLite chain evaluated exit by exit on the test split,
    and `exits.json` describing the chain. {} for any other model."""
    if exits_of(module) is None:
        return {}
    cfg, data = stage.config, ctx.data
    facts = _exit_stage_details(ctx)
    chain = ExitChain(module, data.input_shape)
    _check_branches_fit(chain, data.input_shape)
    rescaled = _follow_preparation(ctx, chain, plan)
    parts = [SegmentWithExit(s, b) for s, b in zip(chain.segments, chain.branches)] + [SegmentWithExit(chain.segments[-1], None)]
    folder = ctx.out_dir / EXITS_DIR
    folder.mkdir()
    calibration_nchw = torch.from_numpy(calibration).permute(0, 3, 1, 2) if calibration is not None else data.sample("train", 32)
    calibration_inputs = [x for _, x in segment_outputs(parts, calibration_nchw.float())]
    check = segment_outputs(parts, data.sample("test", CHECK_SAMPLES))
    mean, std = np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
    images01 = nhwc(calibration_nchw.float()) * std + mean
    files: dict[str, list[Path]] = {p: [] for p in precisions}
    segments: list[dict[str, Any]] = []
    for k, part in enumerate(parts):
        shape = (1, *check[k][1].shape[1:])
        onnx_path = folder / f"segment{k}.onnx"
        exported = SegmentWithExit(part.segment, part.branch, nhwc_features=True)
        with status_line(f"exporting early-exit segment {k + 1}/{len(parts)}"):
            rewrites = export_segment_onnx(exported, shape, onnx_path, cfg.opset)
            onnx_error = check_onnx_segment(onnx_path, exported, check[k][1].numpy(), cfg.onnx_tolerance)
        console.print(f"  early exit: converting segment {k + 1}/{len(parts)} (input {list(shape[1:])})")
        work = folder / f".segment{k}"
        converted = convert_segment(onnx_path, work, precisions, images01, nhwc(calibration_inputs[k]), plan,
                                    ctx.run.logs_dir / f"{ctx.spec.dirname}-segment{k}-convert.log", cfg.timeout_s)
        for precision, path in converted.items():
            target = folder / f"segment{k}_{precision}.tflite"
            path.replace(target)
            files[precision].append(target)
        shutil.rmtree(work, ignore_errors=True)
        segments.append({"index": k, "cut": facts["cuts"][k]["label"] if k < len(facts["cuts"]) else None,
                         "input_shape_nchw": list(shape), "onnx": onnx_path.name,
                         "onnx_vs_torch_rel_error": float(f"{onnx_error:.3e}"), **rewrites})
    precision_facts = {p: _evaluate_chain(stage, ctx, p, files[p], parts, check, facts) for p in precisions}
    description = {
        "format": 1, "measure": facts["measure"], "threshold": facts["threshold"], "grid": facts["grid"],
        "num_classes": chain.branches[0].num_classes,
        "layout": "NHWC", "exits": facts["exits"], "plain_macs": facts["plain_macs"],
        "segments": segments, "device": facts["device"],
        "rule": "run segment k on its input; if k is the last, or the uncertainty of its logits output "
                "(measure) is below the precision's threshold (precisions.<p>.threshold, chosen on validation from those "
                "files' own logits; the top-level threshold is torch's), answer argmax(logits); else feed its features "
                "output to segment k + 1 "
                "(inputs are NHWC; a features output whose features_layout is NCHW is transposed to NHWC first)",
        "precisions": precision_facts,
        "note": "segment files are full int8 (keep_float applies to the plain model file only)" if plan.get("keep_float")
                or plan.get("auto_keep_float") else None,
        "branches_rescaled": rescaled,
    }
    atomic_write_json(ctx.out_dir / EXITS_FILE, description)
    _point_metadata_to_chain(ctx.out_dir, description)
    summary = {p: {k: v for k, v in f.items() if k != "segments"} for p, f in precision_facts.items()}
    return {"early_exit": {"file": EXITS_FILE, "segments": len(parts), "threshold": facts["threshold"],
                           "measure": facts["measure"], "precisions": summary}}


def _evaluate_chain(stage, ctx, precision: str, paths: list[Path], parts, check, facts) -> dict[str, Any]:
    """One precision's segment files: each against torch on real inputs (float32 within the export's
    float tolerance), then the whole chain on the test split, exit by exit, and adaptively."""
    runner = ChainRunner(paths)
    per_segment = []
    for k, (logits, inputs) in enumerate(check):
        outputs = [runner.run_segment(k, x[None]) for x in nhwc(inputs)]  # raw: the feature layout is not known yet
        got = np.concatenate([o[0] for o in outputs])
        reference = logits.numpy()
        error = float(np.max(np.abs(got - reference)) / (np.max(np.abs(reference)) or 1.0))
        layout, features_error = None, 0.0
        if k + 1 < len(check):
            layout, features_error = feature_layout(np.concatenate([o[1] for o in outputs]), check[k + 1][1].numpy())
            runner.layouts[k] = layout
        if precision == "float32" and max(error, features_error) > stage.config.float_tolerance:
            raise PipelineError(f"export: early-exit segment {paths[k].name} differs from torch by {max(error, features_error):.2e} "
                                f"(relative max-abs), above float_tolerance {stage.config.float_tolerance:.0e}")
        per_segment.append({"file": f"{EXITS_DIR}/{paths[k].name}", "size_bytes": paths[k].stat().st_size,
                            "max_rel_error": float(f"{error:.3e}"), "features_max_rel_error": float(f"{features_error:.3e}"),
                            "agreement": round(float((got.argmax(1) == reference.argmax(1)).mean()), 6),
                            "logits_output": runner.roles[k][0], "features_output": runner.roles[k][1], "features_layout": layout})
    with status_line(f"evaluating the {precision} early-exit chain on the validation and test splits"):
        val_logits, val_labels = _chain_logits(runner, ctx.data, "val")
        logits, labels_all = _chain_logits(runner, ctx.data, "test")
    costs = [e["macs"] for e in facts["exits"]]
    # The threshold this precision's files run with, chosen again on validation from their own logits:
    # int8 exits are less (or more) sure than torch's, and a threshold chosen in float can overshoot
    # the accuracy budget on the device (mobilenet_v2 at 64 px: -0.78 points at float's choice).
    chosen, reference = choose_threshold(val_logits, val_labels, facts["measure"], costs, facts["max_accuracy_drop"])
    adaptive = outcome(logits, labels_all, facts["measure"], chosen.threshold, costs)
    plain_file = f"model_{precision}.tflite"
    return {
        "segments": per_segment, "plain_file": plain_file, "threshold": chosen.threshold,
        "val": {**chosen.to_dict(), "reference_accuracy": round(reference, 6)},
        "exit_accuracy": [round(float((logits[k].argmax(-1) == labels_all).mean()), 6) for k in range(len(logits))],
        "adaptive": {**adaptive.to_dict(), "macs_ratio": round(adaptive.expected_macs / facts["plain_macs"], 4)},
        "size_bytes": sum(p.stat().st_size for p in paths),
    }


def _chain_logits(runner: ChainRunner, data, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(exits, N, classes) logits of the converted chain and the N labels of one split."""
    x, labels = zip(*data.batches(split))
    return runner.all_exits(np.concatenate(x).transpose(0, 2, 3, 1)), np.concatenate(labels)


def _point_metadata_to_chain(out: Path, description: dict[str, Any]) -> None:
    """metadata.json (written by the export stage) names the chain description (an added key)."""
    path = out / "metadata.json"
    if not path.is_file():
        return
    metadata = read_json(path)
    metadata["early_exit"] = {
        "description": EXITS_FILE, "measure": description["measure"], "threshold": description["threshold"],
        "thresholds": {p: f["threshold"] for p, f in description["precisions"].items()},
        "files": {p: [s["file"] for s in f["segments"]] for p, f in description["precisions"].items()},
    }
    atomic_write_json(path, metadata)


# ---------------------------------------------------------------------------------------------
# Profile hook


def adaptive_profile(ctx, model: Path, device, threads: int | None) -> dict[str, Any]:
    """{"early_exit": ...} for a plain model file whose export folder holds an early-exit chain of the
    same precision (adaptive inference on the device), {} otherwise."""
    description_path = model.parent / EXITS_FILE
    if not description_path.is_file():
        return {}
    description = read_json(description_path)
    precision = next((p for p, f in description.get("precisions", {}).items() if f.get("plain_file") == model.name), None)
    if precision is None:
        return {}
    samples = int(description["device"]["samples"])
    xs, ys = zip(*ctx.data.batches("test", limit=samples))
    inputs = np.concatenate(xs).transpose(0, 2, 3, 1)
    block = profile_chain(device, model.parent, description, precision, np.ascontiguousarray(inputs, np.float32),
                          np.concatenate(ys), threads or device.threads)
    if block.get("thresholds"):
        chosen = next((t for t in block["thresholds"] if t["threshold"] == block["chosen"]), None)
        if chosen:
            console.print(f"  {device.name}: early exit ({precision}) at {block['chosen']:g}: mean {chosen['mean_ms']:.3f} ms vs "
                          f"plain {block['plain_ms']:.3f} ms (speed-up {block['speedup']:.2f}x), accuracy {chosen['accuracy']:.2%} vs "
                          f"{block['plain_accuracy']:.2%}; no exit firing costs {block['worst_case_ratio']:.2f}x the plain model")
    return {"early_exit": block}
