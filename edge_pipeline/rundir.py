"""The one owner of the run-folder layout (see DESIGN.md, "Run directory contract").

```
runs/<name>/
  .edge-pipeline-run       marker: this folder was created by edge-pipeline (we write nowhere else)
  .lock                    one run at a time (flock)
  recipe.resolved.yaml  manifest.json  metrics.json  report.md  report.html  plots/  logs/
  profiles/<device>__<model>.json
  NN-<stage>/              stage.json (cache record: key, output sha256s), details.json, outputs
  .NN-<stage>.tmp/         a stage being computed (renamed into place when it succeeds)
  baseline/                the trained baseline converted to the shipped precisions, once per run, for
                           the profile stages (baseline_<precision>.tflite, model.onnx, stage.json)
  .baseline.tmp/           the baseline being converted
```

Everything else (pipeline, stages, report, cli) asks this module for paths. Safety rules live here:
- the tool writes only into an empty or missing folder, or one that carries its marker;
- the lock and the marker are opened with O_NOFOLLOW and never truncated, so a planted symlink
  cannot make us write through it;
- a stage folder is replaced or removed only if every file in it is one the tool recorded.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import read_json
from .errors import UserError

MARKER = ".edge-pipeline-run"
LOCK = ".lock"
STAGE_RECORD = "stage.json"
DETAILS_FILE = "details.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
RESOLVED_RECIPE = "recipe.resolved.yaml"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
PLOTS_DIR = "plots"
PROFILES_DIR = "profiles"
LOGS_DIR = "logs"
BASELINE_DIR = "baseline"
_BASELINE_TMP = f".{BASELINE_DIR}.tmp"
# Files inside stage folders that other stages and commands look for.
CALIBRATION_FILE = "calibration.npy"
QUANT_PLAN_FILE = "quantization.json"
# The model a quantize stage prepared for int8 (equalized, bias-corrected), when it changed it.
QUANT_MODEL_DIR = "model"
ONNX_FILE = "model.onnx"
# A marker-less folder holding only these is a harmless leftover we may adopt (e.g. `mkdir runs/x`).
_ADOPTABLE = frozenset({".DS_Store"})


def stage_dirname(index: int, name: str) -> str:
    """`NN-<name>` for the stage at 0-based recipe position `index`."""
    return f"{index + 1:02d}-{name}"


def tmp_dirname(index: int, name: str) -> str:
    return f".{stage_dirname(index, name)}.tmp"


def is_stage_dirname(name: str) -> bool:
    return len(name) > 3 and name[:2].isdigit() and name[2] == "-"


def is_tmp_dirname(name: str) -> bool:
    return name == _BASELINE_TMP or (name.startswith(".") and name.endswith(".tmp") and is_stage_dirname(name[1:-4]))


def profile_filename(device: str, model_file: str) -> str:
    return f"{device}__{Path(model_file).stem}.json"


def baseline_filename(precision: str) -> str:
    """The baseline's TFLite file in `baseline/`; its profiles are `<device>__baseline_<precision>.json`."""
    return f"baseline_{precision}.tflite"


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    # -- paths -------------------------------------------------------------------------------

    @property
    def metrics_path(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_FILE

    @property
    def resolved_recipe_path(self) -> Path:
        return self.root / RESOLVED_RECIPE

    @property
    def report_md(self) -> Path:
        return self.root / REPORT_MD

    @property
    def report_html(self) -> Path:
        return self.root / REPORT_HTML

    @property
    def plots_dir(self) -> Path:
        return self.root / PLOTS_DIR

    @property
    def profiles_dir(self) -> Path:
        return self.root / PROFILES_DIR

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS_DIR

    @property
    def baseline_dir(self) -> Path:
        return self.root / BASELINE_DIR

    def stage_dir(self, index: int, name: str) -> Path:
        return self.root / stage_dirname(index, name)

    def tmp_dir(self, index: int, name: str) -> Path:
        return self.root / tmp_dirname(index, name)

    def profile_rel(self, device: str, model_file: str) -> str:
        """A profile's path relative to the run folder, as metrics.json lists it."""
        return f"{PROFILES_DIR}/{profile_filename(device, model_file)}"

    def resolve(self, rel: str) -> Path:
        """A path that metrics.json names (relative to the run folder); never outside it."""
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise UserError(f"{self.metrics_path}: path {rel!r} leaves the run folder; the file is corrupt, rerun the recipe")
        return path

    # -- reading -----------------------------------------------------------------------------

    def is_run(self) -> bool:
        return self.metrics_path.is_file()

    def read_metrics(self) -> dict[str, Any]:
        if not self.metrics_path.is_file():
            raise UserError(f"{self.root}: no {METRICS_FILE}; give a run folder (runs/<name>) of a finished run")
        metrics = read_json(self.metrics_path)
        if not isinstance(metrics, dict) or not isinstance(metrics.get("stages"), list):
            raise UserError(f"{self.metrics_path}: expected an object with a `stages` list; the file is corrupt, rerun the recipe")
        return metrics

    def stage_entries(self, metrics: dict[str, Any]) -> Iterator[tuple[dict[str, Any], Path]]:
        """(metrics entry, stage folder) for every stage, in recipe order."""
        for index, entry in enumerate(metrics["stages"]):
            yield entry, self.stage_dir(index, entry["name"])

    def details(self, folder: Path) -> dict[str, Any]:
        path = folder / DETAILS_FILE
        data = read_json(path) if path.is_file() else {}
        return data if isinstance(data, dict) else {}

    def details_of(self, metrics: dict[str, Any], stage_type: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(metrics entry, details.json) for every stage of a type, in order."""
        return [(entry, self.details(folder)) for entry, folder in self.stage_entries(metrics) if entry["type"] == stage_type]

    def last_stage_of(self, metrics: dict[str, Any], stage_type: str) -> tuple[dict[str, Any], Path] | None:
        found = [(e, f) for e, f in self.stage_entries(metrics) if e["type"] == stage_type]
        return found[-1] if found else None

    def profile_paths(self, metrics: dict[str, Any]) -> list[Path]:
        """Every profile file metrics.json lists (shipped files, then baselines), checked to exist."""
        out = []
        for entry in metrics["stages"]:
            for rel in [*entry.get("profiles", []), *entry.get("baseline_profiles", [])]:
                path = self.resolve(rel)
                if not path.is_file():
                    raise UserError(f"{path}: listed in {self.metrics_path} but missing; rerun the recipe")
                out.append(path)
        return out

    @classmethod
    def of_profile(cls, path: Path) -> RunDir | None:
        """The run folder a profile file sits in (`<run>/profiles/<file>.json`), or None."""
        if path.parent.name != PROFILES_DIR:
            return None
        run = cls(path.parent.parent)
        return run if run.is_run() else None

    def read_manifest(self) -> dict[str, Any]:
        """manifest.json, or {} for a folder without one."""
        data = read_json(self.manifest_path) if self.manifest_path.is_file() else {}
        return data if isinstance(data, dict) else {}

    def read_resolved_recipe(self) -> str | None:
        path = self.resolved_recipe_path
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None

    # -- claiming and locking (write side) ---------------------------------------------------

    def claim(self) -> None:
        """Make the folder ours: create it with the marker, or check the marker is there.

        A folder with other content and no marker was not made by us: refuse (exit 2) rather than
        write into it, so `--out ~/Documents` cannot clobber anything.
        """
        if self.root.is_symlink() or (self.root.exists() and not self.root.is_dir()):
            raise UserError(f"--out {self.root}: exists and is not a folder; choose another --out")
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / MARKER
        if marker.is_file() and not marker.is_symlink():
            return
        foreign = sorted(p.name for p in self.root.iterdir() if p.name not in _ADOPTABLE)
        if foreign:
            raise UserError(
                f"--out {self.root}: folder is not empty and was not created by edge-pipeline "
                f"(it holds {foreign[0]!r}{' and more' if len(foreign) > 1 else ''}); choose an empty or new folder"
            )
        fd = _open_nofollow(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with os.fdopen(fd, "w") as fh:
            json.dump({"tool": "edge-pipeline", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, fh)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock; a second run on the same folder is refused with exit 2."""
        fd = _open_nofollow(self.root / LOCK, os.O_RDWR | os.O_CREAT)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"{self.root}: another edge-pipeline run is using this folder; wait for it or use --out") from None
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # -- stage folders -----------------------------------------------------------------------

    def fresh_tmp_dir(self, index: int, name: str) -> Path:
        """An empty temp folder for a stage; a leftover one of ours (from a killed run) is removed."""
        tmp = self.tmp_dir(index, name)
        if tmp.exists() or tmp.is_symlink():
            self.remove_ours(tmp)
        tmp.mkdir()
        return tmp

    def fresh_baseline_tmp_dir(self) -> Path:
        """An empty temp folder for the baseline's conversion (renamed to `baseline/` when it succeeds)."""
        tmp = self.root / _BASELINE_TMP
        if tmp.exists() or tmp.is_symlink():
            self.remove_ours(tmp)
        tmp.mkdir()
        return tmp

    def remove_ours(self, folder: Path) -> None:
        """Delete a stage or temp folder, but only if it holds nothing the tool did not write.

        A stage folder's own files are listed in its stage.json; a temp folder is ours by name
        (it only ever exists between mkdir and rename). Anything else found inside (a user's file)
        stops the run with exit 2 naming it, and nothing is deleted.
        """
        if folder.is_symlink() or not folder.is_dir():
            raise UserError(f"{folder}: expected a folder written by edge-pipeline, found something else; move it away and rerun")
        if not is_tmp_dirname(folder.name):
            foreign = self._unrecorded_files(folder)
            if foreign:
                raise UserError(
                    f"{foreign[0]}: not written by edge-pipeline, inside a stage folder it must replace; "
                    "move the file out of the run folder and rerun"
                )
        shutil.rmtree(folder)

    def _unrecorded_files(self, folder: Path) -> list[Path]:
        record_path = folder / STAGE_RECORD
        recorded: set[str] = {STAGE_RECORD}
        if record_path.is_file():
            try:
                record = read_json(record_path)
                recorded |= set(record.get("outputs", {})) if isinstance(record, dict) else set()
            except UserError:
                pass
        return [p for p in sorted(folder.rglob("*"))
                if (p.is_file() or p.is_symlink()) and str(p.relative_to(folder)) not in recorded]

    def remove_stale(self, wanted: set[str]) -> None:
        """Drop leftovers: temp folders of killed runs, stage folders no longer in the recipe."""
        for child in sorted(self.root.iterdir()):
            if child.is_symlink() or not child.is_dir():
                continue
            stale_stage = is_stage_dirname(child.name) and child.name not in wanted
            if is_tmp_dirname(child.name) or stale_stage:
                self.remove_ours(child)


def _open_nofollow(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{path}: is a symbolic link, which edge-pipeline never writes through; remove it and rerun") from None
        if exc.errno == errno.EEXIST:
            raise UserError(f"{path}: appeared while claiming the folder; is another run starting? retry") from None
        raise
