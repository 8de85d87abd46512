"""Running the `profile` stage (imported only when it runs; see `profile.py` for its config)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...artifacts import atomic_write_json
from ...errors import EdgePipelineError, UserError
from ...profiling.devices import get_device
from ...profiling.predict import learn_from, predict_file_if_table
from ...profiling.runner import profile_model
from ...report.shipping import candidate, choose_file, gate_results
from ...rundir import PROFILES_DIR, profile_filename
from ...ui import console
from ..context import StageResult
from .early_exit import adaptive_profile
from .profile_baseline import Baseline, prepare_baseline


def run(stage, ctx):
    export = ctx.upstream("tflite")
    artifacts = ctx.stage_entry(export.name)["artifacts"]
    wanted = stage.config.precisions or [a["precision"] for a in artifacts]
    missing = set(wanted) - {a["precision"] for a in artifacts}
    if missing:
        raise UserError(f"stages[{ctx.spec.index}].profile.precisions: {sorted(missing)} were not exported by {export.name}")
    shipped = [a for a in artifacts if a["precision"] in wanted]
    samples = None
    if stage.config.outputs_check:
        # Real held-out inputs, normalized and NHWC as the TFLite model takes them.
        samples = ctx.data.sample("test", stage.config.outputs_check).permute(0, 2, 3, 1).numpy()
    baseline = prepare_baseline(ctx, export, [a["precision"] for a in artifacts]) if stage.config.baseline else None
    gates = gate_results(ctx.run.details(ctx.stage_dir(export.name)).get("gates"))
    profiles: list[str] = []
    baseline_profiles: list[str] = []
    baseline_failed: dict[str, dict[str, str]] = {}
    recommendations = []
    for device_name in stage.config.devices:
        device = get_device(device_name)
        measured = {}
        for artifact in shipped:
            model = ctx.run.resolve(artifact["path"])
            measured[artifact["precision"]] = _profile(ctx, model, device, stage.config.threads, samples, profiles)
        base_measured: dict[str, dict[str, Any]] = {}
        if baseline is not None:
            base_measured = _profile_baseline(ctx, baseline, device, stage.config.threads, samples, wanted,
                                              baseline_profiles, baseline_failed.setdefault(device.name, {}))
        _print_gains(device.name, shipped, measured, base_measured)
        facts = [candidate(a["precision"], a["path"], measured[a["precision"]], a, gates.get(a["precision"])) for a in shipped]
        recommendation = choose_file(device.name, facts, device.memory_mb)
        recommendations.append(recommendation)
        console.print(f"  [bold]{device.name}[/]: {recommendation['reason']}")
    metrics: dict[str, Any] = {"profiles": profiles}
    if baseline is not None:
        record = baseline.record(ctx.run.root)
        failed = {d: f for d, f in baseline_failed.items() if f}
        if failed:
            record["profile_failed"] = failed
        metrics |= {"baseline_profiles": baseline_profiles, "baseline": record}
    metrics["recommendations"] = recommendations
    return StageResult(metrics=metrics)


def _profile(ctx, model: Path, device, threads, samples, listed: list[str]) -> dict[str, Any]:
    """Profile one file, write `<device>__<model>.json` into the stage folder and list it."""
    profile = profile_model(model, device, threads, samples=samples)
    profile |= adaptive_profile(ctx, model, device, threads)  # an early-exit chain of this file's precision; {} without one
    profile |= _prediction(model, device, threads, profile)
    filename = profile_filename(device.name, model.name)
    atomic_write_json(ctx.out_dir / filename, profile)
    listed.append(f"{PROFILES_DIR}/{filename}")
    _print_profile(device, model, profile)
    return profile


def _prediction(model: Path, device, threads, profile: dict[str, Any]) -> dict[str, Any]:
    """predicted_ms beside the measurement when the device has a latency table (`profile --predict`
    or a latency target built it), and the measurement kept in the table (it learns from every
    measured model); a prediction that fails is a note, never a failed profile."""
    try:
        prediction = predict_file_if_table(model, device, threads)
        if prediction is not None:
            learn_from(device, profile, prediction, threads)
    except Exception as exc:
        why = str(exc) if isinstance(exc, EdgePipelineError) else f"{type(exc).__name__}: {exc}"
        console.print(f"  [yellow]{device.name}: no latency prediction for {model.name}: {why}[/]")
        return {}
    return prediction.fields() if prediction is not None else {}


def _profile_baseline(ctx, baseline: Baseline, device, threads, samples, wanted, listed, failed) -> dict[str, dict[str, Any]]:
    """The baseline's files in the profiled precisions, and float32 (the reference for every file)."""
    out = {}
    for precision in dict.fromkeys(["float32", *wanted]):
        path = baseline.files.get(precision)
        if path is None:
            if precision in baseline.failed:
                failed[precision] = f"not converted: {baseline.failed[precision]}"
            continue
        try:
            out[precision] = _profile(ctx, path, device, threads, samples, listed)
        except Exception as exc:  # the baseline is for comparison: its failure never fails the run
            why = str(exc) if isinstance(exc, EdgePipelineError) else f"{type(exc).__name__}: {exc}"
            failed[precision] = why
            console.print(f"  [yellow]{device.name}: baseline {precision} could not be profiled: {why}[/]")
    return out


def _print_profile(device, model: Path, profile: dict[str, Any]) -> None:
    lat = profile["latency_ms"]
    flag = "" if profile["valid"] else f"  [yellow]invalid: {'; '.join(profile['invalid_reasons'])}[/]"
    check = profile.get("outputs_check")
    if check and not check["match"]:
        flag += (f"  [yellow]outputs differ from the host: top-1 agreement {check.get('top1_agreement', 0):.0%}, "
                 f"max diff {check.get('max_abs_diff', float('nan')):.3g}[/]")
    emulated = " (emulated)" if profile.get("emulated") else ""
    predicted = f" (predicted {profile['predicted_ms']:.3f})" if profile.get("predicted_ms") is not None else ""
    console.print(
        f"  {device.name}{emulated}: {model.name} median {lat['median']:.3f} ms{predicted}, "
        f"p90 {lat['p90'] or float('nan'):.3f} ms, peak {profile['peak_rss_mb'] or float('nan'):.1f} MB{flag}"
    )


def _median(profile: dict[str, Any] | None) -> float | None:
    latency = (profile or {}).get("latency_ms")
    return latency.get("median") if isinstance(latency, dict) else None


def _print_gains(device: str, shipped, measured, base_measured) -> None:
    """One line per shipped file: its speed-up against the baseline file of the same precision."""
    for artifact in shipped:
        precision = artifact["precision"]
        median, base = _median(measured.get(precision)), _median(base_measured.get(precision))
        if median and base:
            console.print(f"  {device}: {precision} {median:.3f} ms vs the baseline's {precision} {base:.3f} ms: "
                          f"speed-up {base / median:.2f}x")
