"""`early_exit`: self-distilled exit branches (FastBERT for CNNs): easy inputs stop early.

Branches (a 1x1 conv, average pooling to a small map and a Linear) are attached at the end
of each spatial-resolution stage (`at: auto`: where exactly one tensor crosses, never inside a
residual block) or after named modules. By default they are trained as FastBERT does: backbone and
final classifier frozen, each branch distilled from the model's own final classifier (KL at
`temperature`, no labels); `joint: true` trains branches and backbone together on labels (BranchyNet).

Adaptive inference stops at the first exit whose uncertainty (normalized entropy, or 1 - the
largest probability) is below the threshold. The stage picks the threshold on the validation split:
the fastest (lowest expected MACs) whose accuracy is at most `max_accuracy_drop` below the final
classifier's, and reports it on the test split. The model keeps returning the final logits (every
later stage sees the same network); the export stage also converts the chain of segments, and the
profile stage runs adaptive inference on each device for a grid of thresholds.

Put it after the last stage that changes the architecture (prune, restructure) and before quantize.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Stage, register_stage
from .train import TrainingConfig


class EarlyExitConfig(TrainingConfig):
    at: Literal["auto"] | list[str] = Field(
        "auto", description="Where branches go: `auto` (the end of each spatial-resolution stage but the last, where one "
        "tensor crosses and at least 5% of the MACs are done), or a list of module names (a name that is not a valid cut "
        "point is an error listing the valid ones).")
    conv_width: float = Field(
        2.0, ge=0, le=16, description="A 1x1 conv + BN + ReLU first in each branch, with this many times the cut's channels "
        "(0: none).")
    pool_size: int = Field(
        2, ge=1, le=8, description="Each branch averages its map down to pool_size x pool_size before its Linear (1: global "
        "average pooling; 2 keeps coarse layout, which early features need: on digits the first exit of vgg_small scores "
        "97% with 2 and 54% with 1).")
    joint: bool = Field(
        False, description="false: FastBERT self-distillation (backbone and final classifier frozen, no labels); "
        "true: branches and backbone trained together on labels (BranchyNet).")
    temperature: float = Field(4.0, gt=0, le=100, description="Softening of the final classifier's predictions the branches learn.")
    measure: Literal["entropy", "max_softmax"] = Field(
        "entropy", description="Uncertainty of an exit: normalized entropy of its softmax, or 1 - its largest probability.")
    max_accuracy_drop: float = Field(
        0.005, ge=0, le=1, description="Threshold choice: the fastest one whose validation accuracy is at most this below the "
        "final classifier's (0.005 = half a point).")
    device_samples: int = Field(256, ge=8, le=100000, description="Test inputs run adaptively on each profiled device.")
    device_repeats: int = Field(3, ge=1, le=100, description="Timed passes over those inputs per threshold on a device.")
    epochs: int = Field(5, ge=0, le=100000, description="Passes over the train split.")
    lr: float = Field(0.05, gt=0, le=10, description="Peak learning rate.")


@register_stage
class EarlyExitStage(Stage):
    type = "early_exit"
    Config = EarlyExitConfig
    config: EarlyExitConfig
    produces = "model"
    needs = ("model",)

    def check(self, index, earlier):
        if any(stage.type == "early_exit" for _, stage in earlier):
            return [((), "a model gets its exit branches once: keep one early_exit stage")]
        return []
