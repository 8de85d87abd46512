"""One row per model a run produced: every model stage, then every exported file on every device."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    stage: str
    kind: str  # "torch" or the TFLite precision
    status: str
    accuracy: float | None = None
    params: int | None = None
    macs: int | None = None
    size_bytes: int | None = None
    device: str | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    peak_mb: float | None = None
    valid: bool | None = None
    notes: list[str] = field(default_factory=list)


def _load_profiles(run_dir: Path, entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Profiles keyed by model file name."""
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        for rel in entry.get("profiles", []):
            path = run_dir / rel
            if path.is_file():
                profile = json.loads(path.read_text())
                out.setdefault(profile["model"], []).append(profile)
    return out


def build_rows(run_dir: Path, metrics: dict[str, Any]) -> list[Row]:
    entries = metrics["stages"]
    profiles = _load_profiles(run_dir, entries)
    rows: list[Row] = []
    for entry in entries:
        if "model" in entry:
            m = entry["model"]
            rows.append(Row(entry["name"], "torch fp32", entry["status"], m["accuracy"], m["params"], m["macs"], m["size_bytes"]))
        for art in entry.get("artifacts", []):
            name = Path(art["path"]).name
            base = dict(stage=entry["name"], kind=f"tflite {art['precision']}", status=entry["status"],
                        accuracy=art.get("accuracy"), size_bytes=art["size_bytes"])
            if art.get("ops", {}).get("TRANSPOSE"):
                base_notes = [f"{art['ops']['TRANSPOSE']} TRANSPOSE"]
            else:
                base_notes = []
            device_profiles = profiles.get(name) or [None]
            for profile in device_profiles:
                row = Row(**base, notes=list(base_notes))
                if profile:
                    row.device = profile["device"]
                    row.median_ms = profile["latency_ms"]["median"]
                    row.p90_ms = profile["latency_ms"]["p90"]
                    row.peak_mb = profile["peak_rss_mb"]
                    row.valid = profile["valid"]
                    if not profile["valid"]:
                        row.notes.append("invalid: " + "; ".join(profile["invalid_reasons"]))
                rows.append(row)
    return rows


def fmt_count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


HEADERS = ["stage", "model", "status", "accuracy", "params", "MACs", "size", "device", "median ms", "p90 ms", "peak MB", "notes"]


def cells(row: Row) -> list[str]:
    return [
        row.stage, row.kind, row.status, fmt(row.accuracy * 100 if row.accuracy is not None else None, ".2f"),
        fmt_count(row.params), fmt_count(row.macs), fmt_bytes(row.size_bytes), row.device or "-",
        fmt(row.median_ms, ".3f"), fmt(row.p90_ms, ".3f"), fmt(row.peak_mb, ".1f"), "; ".join(row.notes),
    ]
