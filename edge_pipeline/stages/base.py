"""What every stage is: a typed config (the recipe's mapping under its key) and a `run`.

Stage modules import only pydantic at top level, so `validate` and `--help` stay fast; torch and
tensorflow are imported inside `run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline import StageContext, StageResult

NAME_PATTERN = r"^[a-z][a-z0-9_\-]*$"


class Strict(BaseModel):
    """Base for every config block: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StageConfig(Strict):
    name: str | None = Field(
        None, pattern=NAME_PATTERN, description="Stage name, needed when a stage type appears twice."
    )


# What a stage leaves for the stages after it.
Produces = Literal["model", "calibration", "tflite", "profiles"]


class Stage:
    """A pipeline stage. Subclasses set `type`, `Config`, `produces` and implement `run`."""

    type: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    produces: ClassVar[Produces]
    # The kinds of upstream output this stage needs (checked when the recipe is validated).
    needs: ClassVar[tuple[Produces, ...]] = ()

    def __init__(self, config: StageConfig) -> None:
        self.config = config

    def check(self, index: int, earlier: list[tuple[str, "Stage"]]) -> list[tuple[tuple, str]]:
        """Cross-stage checks on the recipe; return (loc relative to the stage body, message)."""
        return []

    def key_inputs(self, recipe: Any, index: int) -> dict[str, Any]:
        """Facts outside the stage's own config that its output depends on (e.g. the contents of
        device files); JSON-safe, and part of the stage's cache key."""
        return {}

    def run(self, ctx: "StageContext") -> "StageResult":  # pragma: no cover - abstract
        raise NotImplementedError


STAGES: Registry[type[Stage]] = Registry("stage")


def register_stage(cls: type[Stage]) -> type[Stage]:
    STAGES.register(cls.type, cls)
    return cls


def config_dump(config: BaseModel) -> dict[str, Any]:
    """Canonical, JSON-safe form of a config (used for cache keys and the resolved recipe)."""
    return config.model_dump(mode="json")
