"""`profile`: latency and memory of the exported TFLite models on each device of the recipe."""

from __future__ import annotations

from pydantic import Field

from .base import Stage, StageConfig, register_stage
from .export import Precision


class ProfileConfig(StageConfig):
    devices: list[str] = Field(default_factory=lambda: ["host"], min_length=1, description="Device names (devices/*.yaml).")
    precisions: list[Precision] | None = Field(None, min_length=1, description="Default: every exported precision.")
    threads: int | None = Field(None, ge=1, le=256, description="Override each device's thread count.")
    outputs_check: int = Field(
        8, ge=0, le=256,
        description="Test samples run on each device and compared with this host's outputs (0: skip).",
    )


@register_stage
class ProfileStage(Stage):
    type = "profile"
    Config = ProfileConfig
    produces = "profiles"
    needs = ("tflite",)

    def check(self, index, earlier):
        from ..errors import UserError
        from ..profiling.devices import get_device

        problems = []
        for i, name in enumerate(self.config.devices):
            try:
                get_device(name)
            except UserError as exc:
                problems.append((("devices", i), str(exc)))
        return problems

    def key_inputs(self, recipe, index):
        """The device profiles as resolved now: editing a device file (threads, budget, host)
        re-measures on it instead of reusing profiles measured under the old settings."""
        from ..profiling.devices import get_device

        return {"devices": {name: get_device(name).model_dump(mode="json") for name in self.config.devices}}

    def run(self, ctx):
        from ..artifacts import atomic_write_json
        from ..errors import UserError
        from ..pipeline import StageResult
        from ..profiling.devices import get_device
        from ..profiling.runner import profile_model
        from ..ui import console

        export = ctx.upstream("tflite")
        artifacts = ctx.stage_entry(export.name)["artifacts"]
        wanted = self.config.precisions or [a["precision"] for a in artifacts]
        missing = set(wanted) - {a["precision"] for a in artifacts}
        if missing:
            raise UserError(f"stages[{ctx.spec.index}].profile.precisions: {sorted(missing)} were not exported by {export.name}")
        samples = None
        if self.config.outputs_check:
            # Real held-out inputs, normalized and NHWC as the TFLite model takes them.
            samples = ctx.data.sample("test", self.config.outputs_check).permute(0, 2, 3, 1).numpy()
        profiles = []
        for device_name in self.config.devices:
            device = get_device(device_name)
            for artifact in artifacts:
                if artifact["precision"] not in wanted:
                    continue
                model = ctx.run_dir / artifact["path"]
                profile = profile_model(model, device, self.config.threads, samples=samples)
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
