"""Built-in stages, registered by their recipe key (importing this package registers them)."""

from .base import STAGES, Stage, StageConfig, register_stage
from . import train, restructure, prune, finetune, quantize, export, profile  # noqa: F401  (registration)

__all__ = ["STAGES", "Stage", "StageConfig", "register_stage"]
