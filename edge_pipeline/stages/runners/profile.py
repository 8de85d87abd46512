"""Running the `profile` stage (imported only when it runs; see `profile.py` for its config)."""

from __future__ import annotations

from ...artifacts import atomic_write_json
from ...errors import UserError
from ...profiling.devices import get_device
from ...profiling.runner import profile_model
from ...ui import console
from ..context import StageResult


def run(stage, ctx):
    export = ctx.upstream("tflite")
    artifacts = ctx.stage_entry(export.name)["artifacts"]
    wanted = stage.config.precisions or [a["precision"] for a in artifacts]
    missing = set(wanted) - {a["precision"] for a in artifacts}
    if missing:
        raise UserError(f"stages[{ctx.spec.index}].profile.precisions: {sorted(missing)} were not exported by {export.name}")
    samples = None
    if stage.config.outputs_check:
        # Real held-out inputs, normalized and NHWC as the TFLite model takes them.
        samples = ctx.data.sample("test", stage.config.outputs_check).permute(0, 2, 3, 1).numpy()
    profiles = []
    for device_name in stage.config.devices:
        device = get_device(device_name)
        for artifact in artifacts:
            if artifact["precision"] not in wanted:
                continue
            model = ctx.run.resolve(artifact["path"])
            profile = profile_model(model, device, stage.config.threads, samples=samples)
            filename = f"{device.name}__{model.stem}.json"
            atomic_write_json(ctx.out_dir / filename, profile)
            profiles.append(f"profiles/{filename}")
            lat = profile["latency_ms"]
            flag = "" if profile["valid"] else f"  [yellow]invalid: {'; '.join(profile['invalid_reasons'])}[/]"
            check = profile.get("outputs_check")
            if check and not check["match"]:
                flag += (f"  [yellow]outputs differ from the host: top-1 agreement {check.get('top1_agreement', 0):.0%}, "
                         f"max diff {check.get('max_abs_diff', float('nan')):.3g}[/]")
            emulated = " (emulated)" if profile.get("emulated") else ""
            console.print(
                f"  {device.name}{emulated}: {model.name} median {lat['median']:.3f} ms, "
                f"p90 {lat['p90'] or float('nan'):.3f} ms, peak {profile['peak_rss_mb'] or float('nan'):.1f} MB{flag}"
            )
    return StageResult(metrics={"profiles": profiles})
