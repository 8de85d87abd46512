"""What a running stage sees (`StageContext`) and hands back (`StageResult`).

Imported by the pipeline and by the stages' run modules only, never on the CLI's fast paths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts import read_json
from ..errors import PipelineError
from ..models.store import TrackedModel, load_model
from ..rundir import STAGE_RECORD, RunDir
from ..stagestore import StageStore

if TYPE_CHECKING:  # pragma: no cover
    from ..data import DataBundle
    from ..recipe import Recipe, StageSpec


@dataclass
class StageResult:
    """What a stage hands back. Model stages return `model`; the pipeline saves and evaluates it."""

    model: TrackedModel | None = None
    # Keys of this stage's metrics.json entry beyond name/type/status/seconds/model (the contract).
    metrics: dict[str, Any] = field(default_factory=dict)
    # Everything else worth keeping (history, per-layer facts): written to details.json.
    details: dict[str, Any] = field(default_factory=dict)


class StageContext:
    """Everything a running stage may use: its config, its output folder, data and upstream outputs."""

    def __init__(self, recipe: Recipe, spec: StageSpec, out_dir: Path, run: RunDir,
                 data: Callable[[], DataBundle], store: StageStore | None = None) -> None:
        self.recipe = recipe
        self.spec = spec
        self.config = spec.config
        self.out_dir = out_dir
        self.run = run
        self.seed = recipe.seed
        self._data = data
        # The stage store shared with other runs (a sweep's), for results keyed like stages (the baseline).
        self.store = store

    @property
    def data(self) -> DataBundle:
        return self._data()

    def upstream(self, produces: str) -> StageSpec:
        """The latest earlier stage producing `produces` (the recipe validator guarantees one exists)."""
        for spec in reversed(self.recipe.stages[: self.spec.index]):
            if spec.stage.produces == produces:
                return spec
        raise PipelineError(f"{self.spec.name}: no earlier stage produces a {produces}")

    def stage_dir(self, name: str) -> Path:
        spec = self.recipe.stage(name)
        return self.run.stage_dir(spec.index, spec.name)

    def stage_entry(self, name: str) -> dict[str, Any]:
        return read_json(self.stage_dir(name) / STAGE_RECORD)["entry"]

    def load_model(self, name: str | None = None) -> TrackedModel:
        """The model saved by stage `name`, or by the latest earlier model stage."""
        spec = self.recipe.stage(name) if name else self.upstream("model")
        return load_model(self.run.stage_dir(spec.index, spec.name))
