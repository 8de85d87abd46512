"""Predicted latency of a model on a device, from the device's latency table.

A model's latency = one invoke's fixed cost + the sum over its ops of (the op's time alone - one
invoke's fixed cost): each single-op measurement includes the invoke overhead once, the whole
model pays it once. That *raw* sum misses one thing no single op shows: inside a model, an op's
weights are evicted by the other ops' data between two inferences, while an op timed alone keeps
them in cache (measured on this host: raw sums 20-45 % low for models with 5-40 MB of float32
weights, within a few % for models under 1 MB). So the device's table also keeps whole models it
measured (every profile run with a prediction adds one) and learns the cost of weights from them:
`ms_per_weight_mb`, the median over those models of (measured - raw) / weight MB, per weight type
(float, int8), never negative; a prediction = raw + ms_per_weight_mb x the model's weight MB.

Ops come from a .tflite file (`predict_file`: each op extracted with its own weights) or from
signatures built before any export (`predict_signatures`: e.g. a torch model's predicted ops,
generated from the signature). Missing table entries are measured on the device first.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..convert.inspect import ELEMENT_BYTES
from .devices import DeviceProfile
from .latency_table import LatencyTable, load_table, measure, record_model
from .opmodels import extract, generate
from .opsig import OpSig, Unit, unit_key, units

MIN_MODELS = 3  # whole-model measurements needed before the weight term is learned
MIN_WEIGHT_MB = 0.25  # models lighter than this say nothing about the cost of weights


@dataclass
class Prediction:
    ms: float  # raw + the learned weight term
    table: str  # "<device>@<runtime version>"
    table_entries: int
    ops: int  # timing units: ops, or a PAD with the conv it feeds
    unpriced: list[str] = field(default_factory=list)  # ops the device could not run alone (not counted)
    per_op: list[tuple[str, float]] = field(default_factory=list)  # (op key, ms it adds)
    raw_ms: float = 0.0  # the sum of the ops timed alone
    weights: str = "float"  # the model's weight type: "float" or "int8"
    weight_mb: float = 0.0
    ms_per_weight_mb: float = 0.0
    calibration_models: int = 0  # whole models the weight term was learned from

    def fields(self) -> dict[str, Any]:
        """The profile contract's additions (DESIGN.md)."""
        predictor: dict[str, Any] = {
            "table": self.table, "entries": self.table_entries, "ops": self.ops, "raw_ms": round(self.raw_ms, 4),
            "weight_mb": round(self.weight_mb, 3), "ms_per_weight_mb": round(self.ms_per_weight_mb, 5),
            "calibration_models": self.calibration_models}
        if self.unpriced:
            predictor["unpriced_ops"] = self.unpriced[:20]
        return {"predicted_ms": round(self.ms, 4), "predictor": predictor}

    def sample(self, measured_ms: float) -> dict[str, Any]:
        """What the table keeps of this model once it is measured (see `latency_table.record_model`)."""
        return {"weights": self.weights, "weight_mb": self.weight_mb, "raw_ms": self.raw_ms, "measured_ms": measured_ms}


def weights_of(chains: Sequence[Unit]) -> tuple[str, float]:
    """The weight type ("int8" if any weight is int8, else "float") and MB of constant tensors."""
    total, int8 = 0, False
    for unit in chains:
        for sig in unit:
            for t in sig.inputs:
                if t.const:
                    total += math.prod(t.shape or (1,)) * ELEMENT_BYTES.get(t.dtype, 4)
                    int8 = int8 or t.dtype == "int8"
    return ("int8" if int8 else "float"), total / 2**20


def weight_cost(table: LatencyTable, weights: str) -> tuple[float, int]:
    """(ms per weight MB, models it was learned from) for this weight type on the table's device."""
    ratios = [(m["measured_ms"] - m["raw_ms"]) / m["weight_mb"] for m in table.models.values()
              if m["weights"] == weights and m["weight_mb"] >= MIN_WEIGHT_MB]
    if len(ratios) < MIN_MODELS:
        return 0.0, len(ratios)
    return max(0.0, float(statistics.median(ratios))), len(ratios)


def price(keys: list[str], table: LatencyTable) -> Prediction:
    """The prediction for ops `keys` (each must be in the table, or be an error entry)."""
    empty = table.empty_ms or 0.0
    total, per_op, unpriced = empty, [], []
    for key in keys:
        ms = table.ms(key)
        if ms is None:
            unpriced.append(key)
            continue
        added = max(ms - empty, 0.0)
        per_op.append((key, added))
        total += added
    return Prediction(total, table.name, len(table.entries), len(keys), unpriced, per_op)


def predict_signatures(sigs: Sequence[OpSig | Unit], device: DeviceProfile, threads: int | None = None,
                       makers: dict[str, Callable[[], bytes]] | None = None, what: str = "ops") -> Prediction:
    """Predict ops given as signatures (or timing units of them); missing entries are timed on the
    device first (`makers` may supply exact models, e.g. extracted from a file; the rest are generated
    from the signatures)."""
    chains: list[Unit] = [(s,) if isinstance(s, OpSig) else tuple(s) for s in sigs]
    keys = [unit_key(u) for u in chains]
    models: dict[str, Callable[[], bytes]] = {}
    for unit, key in zip(chains, keys):
        if key not in models:
            models[key] = (makers or {}).get(key) or partial(generate, unit)
    table = load_table(device, threads)
    if table is None or any(not table.has(k) for k in models):
        table = measure(device, models, threads, what)
    return calibrated(price(keys, table), chains, table)


def calibrated(raw: Prediction, chains: Sequence[Unit], table: LatencyTable) -> Prediction:
    raw.weights, raw.weight_mb = weights_of(chains)
    raw.ms_per_weight_mb, raw.calibration_models = weight_cost(table, raw.weights)
    raw.raw_ms = raw.ms
    raw.ms = raw.raw_ms + raw.ms_per_weight_mb * raw.weight_mb
    return raw


def predict_file(path: str | Path, device: DeviceProfile, threads: int | None = None) -> Prediction:
    """Predict a .tflite file on `device`, its missing ops timed as extracted from the file."""
    from ..convert.inspect import read_graph

    graph = read_graph(path)
    grouped = units(graph)
    makers: dict[str, Callable[[], bytes]] = {unit_key(u): partial(extract, graph.model, i) for i, u in grouped}
    return predict_signatures([u for _, u in grouped], device, threads, makers, what=f"ops of {Path(path).name}")


def predict_file_if_table(path: str | Path, device: DeviceProfile, threads: int | None = None) -> Prediction | None:
    """`predict_file` only when the device already has a table (the profile stage's case: it never
    starts building a table on its own)."""
    if load_table(device, threads) is None:
        return None
    return predict_file(path, device, threads)


def learn_from(device: DeviceProfile, profile: dict[str, Any], prediction: Prediction, threads: int | None = None) -> None:
    """Keep a valid measurement of a whole model in the device's table (the weight term learns from it).
    Emulated latency is kept too: it is that device's own (relative) time."""
    median = (profile.get("latency_ms") or {}).get("median")
    if profile.get("valid") and isinstance(median, (int, float)) and profile.get("model_sha256"):
        record_model(device, profile["model_sha256"], prediction.sample(float(median)), threads)
