"""One record type for every report: one model (a stage's torch model or an exported file) on one
device, or on none when it was not profiled.

`model_facts` reads what metrics.json says about each model; `build_record` is the one place that
joins those facts with a profile file (see DESIGN.md, "Profile file"). The stage table, the
Devices section and `compare` all show `ModelRecord`s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..artifacts import read_json
from ..data.chance import looks_untrained
from ..errors import UserError
from ..rundir import RunDir

TORCH = "torch"
TFLITE = "tflite"
FASTEST, SMALLEST = "fastest", "smallest"  # marks: the best model of its device (see compare.mark_best)
_PROFILE_KEYS = ("device", "model", "latency_ms")


@dataclass
class ModelRecord:
    # What the run knows about the model (metrics.json)
    stage: str | None = None
    status: str | None = None
    runtime: str = TFLITE  # TORCH or TFLITE
    precision: str | None = None  # float32, int8, ... (a torch model is float32)
    file: str | None = None  # the TFLite file's name; None for a torch model
    path: str | None = None  # the TFLite file relative to the run folder, as metrics.json names it
    baseline: bool = False  # the trained baseline converted for comparison (profile stage), not a shipped file
    accuracy: float | None = None  # top-1 on the held-out test split, 0..1
    params: int | None = None
    macs: int | None = None
    size_bytes: int | None = None
    transposes: int | None = None
    # Where it came from and how comparisons label it
    run: str | None = None
    model: str = ""  # label, unique within a comparison (see compare.unique_labels)
    sha256: str | None = None
    # One device's measurement (a profile file)
    device: str | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    std_ms: float | None = None
    peak_mb: float | None = None
    valid: bool | None = None
    emulated: bool = False
    outputs_match: bool | None = None
    notes: list[str] = field(default_factory=list)  # why a measurement is not to be trusted
    marks: list[str] = field(default_factory=list)  # FASTEST, SMALLEST on its device

    @property
    def kind(self) -> str:
        """'torch fp32' or 'tflite int8'."""
        return "torch fp32" if self.runtime == TORCH else f"tflite {self.precision}"


def model_facts(metrics: dict[str, Any]) -> list[ModelRecord]:
    """Every model the run produced, in stage order: torch models, then each stage's exported files."""
    out = []
    for entry in metrics["stages"]:
        base = {"stage": entry.get("name"), "status": entry.get("status")}
        model = entry.get("model")
        if model:
            out.append(ModelRecord(**base, runtime=TORCH, precision="float32", accuracy=model.get("accuracy"),
                                   params=model.get("params"), macs=model.get("macs"), size_bytes=model.get("size_bytes")))
        for art in entry.get("artifacts", []):
            name = Path(art["path"]).name
            out.append(ModelRecord(**base, runtime=TFLITE, precision=art.get("precision"), file=name, path=art["path"],
                                   model=Path(name).stem, accuracy=art.get("accuracy"), size_bytes=art.get("size_bytes"),
                                   transposes=(art.get("ops") or {}).get("TRANSPOSE")))
    return _note_chance_level(out, metrics)


UNTRAINED_NOTE = "untrained: chance accuracy"
FLOAT_UNTRAINED_NOTE = "float model untrained: not a result, no gate applied"


def _note_chance_level(records: list[ModelRecord], metrics: dict[str, Any]) -> list[ModelRecord]:
    """Flag figures that are not a result: a model at chance accuracy (untrained, or collapsed), the
    files exported from one (their gates could not judge them), and a reduced file at chance. Needs
    metrics.json's data record (classes, test samples); older runs without one get no flags."""
    data = _object(metrics.get("data"))
    classes, samples = data.get("classes"), _object(data.get("samples")).get("test")
    if not isinstance(classes, int) or not isinstance(samples, int):
        return records

    def at_chance(r: ModelRecord) -> bool:
        return isinstance(r.accuracy, (int, float)) and looks_untrained(r.accuracy, classes, samples)

    untrained_exports = {r.stage for r in records if r.runtime == TFLITE and r.precision == "float32" and at_chance(r)}
    for r in records:
        if r.runtime == TORCH and at_chance(r):
            r.notes.append(UNTRAINED_NOTE)
        elif r.runtime == TFLITE and r.stage in untrained_exports:
            r.notes.append(FLOAT_UNTRAINED_NOTE)
        elif r.runtime == TFLITE and at_chance(r):
            r.notes.append("chance accuracy")
    return records


def baseline_facts(metrics: dict[str, Any]) -> list[ModelRecord]:
    """The baseline's TFLite files that profile stages converted and measured (their `baseline` entry)."""
    out = []
    for entry in metrics["stages"]:
        baseline = _object(entry.get("baseline"))
        for precision, info in _object(baseline.get("files")).items():
            info = _object(info)
            if not isinstance(info.get("path"), str):
                continue
            name = Path(info["path"]).name
            out.append(ModelRecord(stage=baseline.get("model_stage"), status=entry.get("status"), runtime=TFLITE,
                                   precision=precision, file=name, path=info["path"], model=Path(name).stem,
                                   size_bytes=info.get("size_bytes"), baseline=True))
    return out


def read_profile(path: Path) -> dict[str, Any]:
    profile = read_json(path)
    missing = [k for k in _PROFILE_KEYS if not isinstance(profile, dict) or k not in profile]
    if missing:
        raise UserError(f"{path}: not a profile file (missing {', '.join(missing)}); expected profiles/<device>__<model>.json")
    problem = _profile_problem(profile)
    if problem:
        raise UserError(f"{path}: {problem}; the profile file is damaged or hand-edited: profile the model again")
    return profile


# Fields the reports compute with: (path, check, what it must be). null is allowed for every
# measurement (a failed memory run has no peak); JSON's NaN and Infinity are not.
def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


_PROFILE_FIELDS: tuple[tuple[tuple[str, ...], Any, str], ...] = (
    (("device",), lambda v: isinstance(v, str) and v != "", "a device name"),
    (("model",), lambda v: isinstance(v, str) and v != "", "a model file name"),
    (("latency_ms",), lambda v: v is None or isinstance(v, dict), "an object of latency figures"),
    *((("latency_ms", key), lambda v: v is None or _finite(v), "a finite number of milliseconds >= 0")
      for key in ("min", "median", "mean", "p90", "max", "std")),
    (("peak_rss_mb",), lambda v: v is None or _finite(v), "a finite number of MB >= 0"),
    (("model_size_bytes",), lambda v: v is None or (_finite(v) and float(v).is_integer()), "a byte count"),
    (("valid",), lambda v: isinstance(v, bool), "true or false"),
    (("emulated",), lambda v: isinstance(v, bool), "true or false"),
    (("model_sha256",), lambda v: v is None or isinstance(v, str), "a hex digest"),
    (("invalid_reasons",), lambda v: v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
     "a list of strings"),
    (("outputs_check",), lambda v: v is None or isinstance(v, dict), "an object"),
)


def _profile_problem(profile: dict[str, Any]) -> str | None:
    """The first field of a profile that the reports could not use, as `field: must be ..., got ...`."""
    for keys, ok, what in _PROFILE_FIELDS:
        value: Any = profile
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
            if value is None:
                break
        present = value is not None or (len(keys) == 1 and keys[0] in profile)
        if present and not ok(value):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            return f"{'.'.join(keys)}: must be {what}, got {shown}"
    return None


def _object(value: Any) -> dict[str, Any]:
    """A JSON object field, or {} when absent (null) or not an object."""
    return value if isinstance(value, dict) else {}


def build_record(facts: ModelRecord | None, profile: dict[str, Any] | None, run: str | None = None) -> ModelRecord:
    """The record of a model on a device: the run's facts about it joined with its profile (either may be absent)."""
    record = replace(facts, notes=list(facts.notes), marks=[]) if facts else ModelRecord()
    record.run = run or record.run
    if profile is None:
        return record
    latency = _object(profile["latency_ms"])
    check = _object(profile.get("outputs_check"))
    record.file = profile["model"]
    record.model = Path(profile["model"]).stem
    record.device = profile["device"]
    record.median_ms, record.p90_ms, record.std_ms = latency.get("median"), latency.get("p90"), latency.get("std")
    record.peak_mb = profile.get("peak_rss_mb")
    record.size_bytes = profile.get("model_size_bytes", record.size_bytes)
    record.sha256 = profile.get("model_sha256")
    record.valid = bool(profile.get("valid", True))
    record.emulated = bool(profile.get("emulated", False))
    record.outputs_match = check.get("match") if check else None
    record.notes += list(profile.get("invalid_reasons") or [])
    if record.outputs_match is False:
        record.notes.append("outputs differ from the host")
    return record


def run_name(run: RunDir, metrics: dict[str, Any]) -> str:
    return metrics.get("recipe") or run.root.name


def facts_by_file(metrics: dict[str, Any]) -> dict[str, ModelRecord]:
    """What the run says about each TFLite file it profiled, shipped or baseline, by file name."""
    return {r.file: r for r in [*model_facts(metrics), *baseline_facts(metrics)] if r.file}


def profile_records(run: RunDir, metrics: dict[str, Any], label_run: bool = False) -> list[ModelRecord]:
    """One record per profile the run lists (shipped files, then baselines)."""
    facts = facts_by_file(metrics)
    name = run_name(run, metrics) if label_run else None
    out = []
    for path in run.profile_paths(metrics):
        profile = read_profile(path)
        out.append(build_record(facts.get(profile["model"]), profile, name))
    return out


def stage_records(run: RunDir, metrics: dict[str, Any]) -> list[ModelRecord]:
    """The stage table: every model in stage order, an exported file once per device it was profiled on."""
    profiled: dict[str, list[ModelRecord]] = {}
    for record in profile_records(run, metrics):
        profiled.setdefault(record.file or "", []).append(record)
    out = []
    for facts in model_facts(metrics):
        measured = profiled.get(facts.file, []) if facts.file else []
        out += measured or [facts]
    return out
