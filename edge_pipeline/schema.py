"""Leaf module: the pieces every config schema shares (imports nothing of ours).

`Strict` is the base of every config block (recipes, stages, device files): unknown keys are
errors and values are validated on assignment. `NAME_PATTERN` is the one rule for names that
become folder or file names (stages, recipes, devices, apps).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = r"^[a-z][a-z0-9_\-]*$"
# Names become folder and file names (`NN-<stage>`, `<device>__<model>.json`): keep them well
# below any filesystem's 255-byte limit.
NAME_MAX_LENGTH = 64


class Strict(BaseModel):
    """Base for every config block: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def config_dump(config: BaseModel) -> dict[str, Any]:
    """Canonical, JSON-safe form of a config (used for cache keys and the resolved recipe)."""
    return config.model_dump(mode="json")
