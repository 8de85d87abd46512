"""What every stage is: a typed config (the recipe's mapping under its key) and a `run`.

A built-in stage is two modules: `stages/<type>.py` (the config, cross-stage checks and cache-key
inputs; pydantic only, so `validate` and `--help` stay fast) and `stages/runners/<type>.py` (the work,
importing torch and friends at top level), which `Stage.run` imports only when the stage runs.
"""

from __future__ import annotations

import builtins
import importlib
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ..errors import UserError
from ..profiling.devices import get_device
from ..registry import Registry
from ..schema import NAME_MAX_LENGTH, NAME_PATTERN, Strict, config_dump

if TYPE_CHECKING:  # pragma: no cover
    from .context import StageContext, StageResult

class StageConfig(Strict):
    name: str | None = Field(
        None, pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH, description="Stage name, needed when a stage type appears twice."
    )


# What a stage leaves for the stages after it.
Produces = Literal["model", "calibration", "tflite", "profiles"]


class Stage:
    """A pipeline stage. Subclasses set `type`, `Config`, `produces` and implement `run`."""

    type: ClassVar[str]
    # `builtins.type`: in this class body the name `type` is the ClassVar above.
    Config: ClassVar[builtins.type[StageConfig]]
    produces: ClassVar[Produces]
    # The kinds of upstream output this stage needs (checked when the recipe is validated).
    needs: ClassVar[tuple[Produces, ...]] = ()
    # Does the stage time models on this machine's cores? Then parallel runs (sweep --jobs) let it
    # run alone (see cores.py).
    measures_time: ClassVar[bool] = False

    def __init__(self, config: StageConfig) -> None:
        self.config = config

    def check(self, index: int, earlier: list[tuple[str, Stage]]) -> list[tuple[tuple, str]]:
        """Cross-stage checks on the recipe; return (loc relative to the stage body, message)."""
        return []

    def key_inputs(self, recipe: Any, index: int) -> dict[str, Any]:
        """Facts outside the stage's own config that its output depends on (e.g. the contents of
        device files); JSON-safe, and part of the stage's cache key."""
        return {}

    def run(self, ctx: StageContext) -> StageResult:
        """Import the stage's run module (`stages/runners/<type>.py`) and call its `run(stage, ctx)`."""
        module = importlib.import_module(f"{__package__}.runners.{self.type}")
        return module.run(self, ctx)


STAGES: Registry[type[Stage]] = Registry("stage")


def unknown_devices(names: list[str], field: str) -> list[tuple[tuple, str]]:
    """`Stage.check` problems for device names (under the stage's `field`) that no device file defines."""
    problems: list[tuple[tuple, str]] = []
    for i, name in enumerate(names):
        try:
            get_device(name)
        except UserError as exc:
            problems.append(((field, i), str(exc)))
    return problems


def register_stage(cls: type[Stage]) -> type[Stage]:
    STAGES.register(cls.type, cls)
    return cls


__all__ = ["NAME_PATTERN", "Strict", "config_dump", "STAGES", "Stage", "StageConfig", "register_stage"]
