"""Built-in stages, registered by their recipe key (importing this package registers them)."""

from .base import STAGES, Stage, StageConfig, register_stage
# In pipeline order: `edge-pipeline stages` lists them in registration order.
from . import train, restructure, prune, finetune, quantize, export, profile  # noqa: F401  (registration)

__all__ = ["STAGES", "Stage", "StageConfig", "register_stage"]
