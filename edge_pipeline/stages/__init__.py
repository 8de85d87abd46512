"""Built-in stages, registered by their recipe key (importing this package registers them).

They register in pipeline order, which `edge-pipeline stages` shows: the imports below are in that
order on purpose (hence the isort markers).
"""

from .base import STAGES, Stage, StageConfig, register_stage

# isort: off
from . import train, restructure, prune, finetune, qat, early_exit, quantize, export, profile  # noqa: F401  (registration)
# isort: on

__all__ = ["STAGES", "Stage", "StageConfig", "register_stage"]
