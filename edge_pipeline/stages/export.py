"""`export`: torch -> ONNX (checked) -> onnx2tf -> TFLite in every requested precision, evaluated."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Stage, StageConfig, register_stage

Precision = Literal["float32", "float16", "dynamic_int8", "int8", "int16x8"]


class ExportConfig(StageConfig):
    format: Literal["tflite"] = "tflite"
    precisions: list[Precision] | None = Field(
        None, min_length=1, description="Default: float32, plus the quantize stage's mode if there is one."
    )
    opset: int = Field(17, ge=13, le=21)
    onnx_tolerance: float = Field(1e-4, gt=0, description="Max relative error onnxruntime vs torch.")
    float_tolerance: float = Field(1e-4, gt=0, description="Max relative error float32 TFLite vs torch.")
    timeout_s: int = Field(3600, ge=10, description="Stop a conversion that takes longer.")


@register_stage
class ExportStage(Stage):
    type = "export"
    Config = ExportConfig
    produces = "tflite"
    needs = ("model",)

    def check(self, index, earlier):
        quantized = {"int8", "int16x8"} & set(self.config.precisions or [])
        if quantized and not any(stage.produces == "calibration" for _, stage in earlier):
            return [(("precisions",), f"{sorted(quantized)} need calibration data: add a `quantize` stage before export")]
        return []

    def precisions(self, plan: dict | None) -> list[str]:
        if self.config.precisions:
            return list(dict.fromkeys(self.config.precisions))
        return ["float32"] + ([plan["mode"]] if plan else [])

    def run(self, ctx):
        import numpy as np

        from ..artifacts import atomic_write_json, atomic_write_text, read_json, sha256_text
        from ..convert.fidelity import fidelity, tflite_logits
        from ..convert.inspect import inspect_tflite
        from ..convert.nhwc import fold_flatten_linear
        from ..convert.onnx_export import compare_onnx_to_torch, export_onnx
        from ..convert.tflite_convert import convert_to_tflite
        from ..errors import PipelineError
        from ..evaluation import predict
        from ..pipeline import StageResult
        from .quantize import CALIBRATION_FILE, PLAN_FILE

        cfg, data, out = self.config, ctx.data, ctx.out_dir
        model = ctx.load_model()
        module = model.module.eval()
        onnx_path = out / "model.onnx"
        exported, folded = fold_flatten_linear(module, data.input_shape)
        export_onnx(exported, data.input_shape, onnx_path, cfg.opset)
        onnx_error = compare_onnx_to_torch(module, onnx_path, data.sample("test", 16).numpy(), cfg.onnx_tolerance)

        plan = calibration = None
        if any(s.stage.produces == "calibration" for s in ctx.recipe.stages[: ctx.spec.index]):
            calib_dir = ctx.stage_dir(ctx.upstream("calibration").name)
            plan = read_json(calib_dir / PLAN_FILE)
            calibration = np.load(calib_dir / CALIBRATION_FILE)
        precisions = self.precisions(plan)
        mean = np.asarray(data.mean, np.float32)
        std = np.asarray(data.std, np.float32)
        samples = calibration if calibration is not None else data.sample("train", 20).permute(0, 2, 3, 1).numpy()
        files = convert_to_tflite(
            onnx_path, out, precisions, samples * std + mean, calibration,
            io_type=(plan or {}).get("io_type", "int8"), per_channel=(plan or {}).get("per_channel", True),
            log_path=ctx.run_dir / "logs" / f"{ctx.spec.dirname}-convert.log", timeout=cfg.timeout_s,
        )

        reference, _ = predict(module, data.loader("test", batch_size=256))
        reference = reference.numpy()
        details = {"onnx_vs_torch_rel_error": float(f"{onnx_error:.3e}"), "flatten_linear_folded": folded, "precisions": {}}
        artifacts = []
        for precision in precisions:
            path = files[precision]
            info = inspect_tflite(path)
            logits, labels = tflite_logits(path, data)
            facts = fidelity(logits, labels, reference)
            if precision == "float32" and facts["max_rel_error"] > cfg.float_tolerance:
                raise PipelineError(
                    f"export: float32 TFLite differs from torch by {facts['max_rel_error']:.2e} (relative max-abs), "
                    f"above float_tolerance {cfg.float_tolerance:.0e}; inspect {path.name} ops {info['ops']}"
                )
            artifacts.append({
                "format": "tflite", "precision": precision, "path": f"{ctx.spec.dirname}/{path.name}",
                "size_bytes": info["size_bytes"], "accuracy": facts["accuracy"], "ops": info["ops"],
            })
            details["precisions"][precision] = {
                **facts, "transposes": info["transposes"], "op_versions": info["op_versions"],
                "inputs": info["inputs"], "outputs": info["outputs"], "flex_ops": info["flex_ops"],
            }
        atomic_write_text(out / "labels.txt", "\n".join(data.class_names) + "\n")
        atomic_write_json(out / "metadata.json", {
            "input_shape": [1, data.image_size, data.image_size, data.in_channels], "layout": "NHWC",
            "normalization": {"mean": data.mean, "std": data.std, "note": "input = (pixel/255 - mean) / std"},
            "class_names": data.class_names,
            "files": {p: {"file": files[p].name, "input": details["precisions"][p]["inputs"][0],
                          "output": details["precisions"][p]["outputs"][0]} for p in precisions},
            "quantization": plan, "recipe": ctx.recipe.name,
            "recipe_sha256": sha256_text(ctx.recipe.resolved_yaml()),
        })
        return StageResult(metrics={"artifacts": artifacts}, details=details)
