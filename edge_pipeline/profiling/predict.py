"""Predicted latency of a model on a device, from the device's latency table.

A model's latency = one invoke's fixed cost + the sum over its ops of (the op's time alone - one
invoke's fixed cost): each single-op measurement includes the invoke overhead once, the whole
model pays it once. Ops come from a .tflite file (`predict_file`: each op extracted with its own
weights) or from signatures built before any export (`predict_signatures`: e.g. a torch model's
predicted ops, generated from the signature). Missing table entries are measured on the device first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .devices import DeviceProfile
from .latency_table import LatencyTable, load_table, measure
from .opmodels import extract, generate
from .opsig import OpSig, Unit, unit_key, units


@dataclass
class Prediction:
    ms: float
    table: str  # "<device>@<runtime version>"
    table_entries: int
    ops: int  # timing units: ops, or a PAD with the conv it feeds
    unpriced: list[str] = field(default_factory=list)  # ops the device could not run alone (not counted)
    per_op: list[tuple[str, float]] = field(default_factory=list)  # (op key, ms it adds)

    def fields(self) -> dict[str, Any]:
        """The profile contract's additions (DESIGN.md)."""
        out: dict[str, Any] = {"predicted_ms": round(self.ms, 4),
                               "predictor": {"table": self.table, "entries": self.table_entries, "ops": self.ops}}
        if self.unpriced:
            out["predictor"]["unpriced_ops"] = self.unpriced[:20]
        return out


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
    return price(keys, table)


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
