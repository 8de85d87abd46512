"""`qat`: quantization-aware training, a few epochs with int8 rounding in the forward pass.

Every convolution and Linear trains with its weights rounded exactly as the TFLite converter will
round them (BatchNorm folded, symmetric int8 per output channel, or per tensor with
`per_channel: false`) and its input rounded to int8 over a range that follows the data (the
converter's min/max calibration measures the same). BatchNorm statistics are frozen. Gradients pass
the rounding straight through. At the end the weights are left on the int8 grid, so the later
`quantize` + `export` produce a file with exactly the integers QAT trained with; the stage reports how
the converter's calibrated input ranges compare with the ranges learned in training.

On a model with badly scaled channels (one channel's range orders of magnitude above the others),
plain QAT diverges: that channel's gradients are as many times too large. `equalize: true` rescales
the channels first (same float function), as the quantize stage's option does.

Put it after the last model-changing stage and before `quantize` (whose `per_channel` must match).
`distill` works as in `finetune` (e.g. from the float model: `distill: {teacher: finetune}`).
"""

from __future__ import annotations

from pydantic import Field

from .base import Stage, register_stage
from .finetune import DistillConfig
from .train import TrainingConfig


class QatConfig(TrainingConfig):
    epochs: int = Field(2, ge=0, le=100000, description="Passes over the train split with int8 rounding in the forward pass.")
    lr: float = Field(0.005, gt=0, le=10, description="Peak learning rate (small: the model is already trained).")
    per_channel: bool = Field(True, description="Per-channel weight scales (per-tensor if false); must match quantize.per_channel.")
    calibration_samples: int = Field(256, ge=8, le=100000, description="Train images that set the initial input ranges.")
    equalize: bool = Field(
        False, description="Cross-layer equalization (and high-bias absorption) before training: a model whose channel "
        "ranges differ by orders of magnitude gets gradients of the same orders, which QAT alone cannot train through.")
    relu6_to_relu: bool = Field(False, description="Replace ReLU6 by ReLU first, so equalization can cross them (as in quantize).")
    distill: DistillConfig | None = None


@register_stage
class QatStage(Stage):
    type = "qat"
    Config = QatConfig
    config: QatConfig
    produces = "model"
    needs = ("model",)

    def check(self, index, earlier):
        distill = self.config.distill
        if distill is None:
            return []
        models = [name for name, stage in earlier if stage.produces == "model"]
        if distill.teacher in models:
            return []
        return [(("distill", "teacher"), f"{distill.teacher!r} is not an earlier model stage ({', '.join(models)})")]
