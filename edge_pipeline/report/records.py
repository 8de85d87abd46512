"""One record type for every report: one model (a stage's torch model or an exported file) on one
device, or on none when it was not profiled.

`model_facts` reads what metrics.json says about each model; `build_record` is the one place that
joins those facts with a profile file (see DESIGN.md, "Profile file"). The stage table, the
Devices section and `compare` all show `ModelRecord`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..artifacts import read_json
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
            out.append(ModelRecord(**base, runtime=TFLITE, precision=art.get("precision"), file=name, model=Path(name).stem,
                                   accuracy=art.get("accuracy"), size_bytes=art.get("size_bytes"),
                                   transposes=(art.get("ops") or {}).get("TRANSPOSE")))
    return out


def read_profile(path: Path) -> dict[str, Any]:
    profile = read_json(path)
    missing = [k for k in _PROFILE_KEYS if not isinstance(profile, dict) or k not in profile]
    if missing:
        raise UserError(f"{path}: not a profile file (missing {', '.join(missing)}); expected profiles/<device>__<model>.json")
    return profile


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
    return {r.file: r for r in model_facts(metrics) if r.file}


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
