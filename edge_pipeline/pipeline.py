"""Runs a recipe's stages in order, with content-addressed caching and resume.

Cache key of stage k = hash(stage type, its canonical config, the cache key and output hashes of
stage k-1, the recipe's data/model/seed, and the versions of the tools that shape the result).
Changing stage k therefore reruns k and everything after it, and nothing before it.

Each stage writes into a hidden temp folder; when it succeeds the pipeline records the sha256 of
every output in `stage.json` and renames the folder into place. On the next run a stage is reused
only if its `stage.json` key matches and every output file still hashes the same: a truncated,
edited or half-written artifact is recomputed, never used. A run killed mid-stage leaves only a
temp folder, which the next run deletes before redoing that stage.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__, distributed, procs
from .artifacts import atomic_write_json, atomic_write_text, canonical_json, read_json, sha256_file, sha256_text
from .cores import CoresLock
from .data import DataBundle, build_data
from .data.identity import DataIdentity, data_identity
from .errors import UserError
from .evaluation import model_facts
from .models.store import save_model
from .recipe import Recipe, StageSpec
from .rundir import DETAILS_FILE, STAGE_RECORD, RunDir
from .schema import config_dump
from .stages.context import StageContext
from .stagestore import StageStore
from .ui import console, status_line

VERSIONED_PACKAGES = ("torch", "tensorflow", "onnx2tf", "ai-edge-litert")


def code_fingerprint() -> str:
    """Hash of this package's source: a code change invalidates caches even at the same version."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def tool_versions() -> dict[str, str]:
    versions = {"edge-pipeline": f"{__version__}+{code_fingerprint()}"}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


class Pipeline:
    """`store`: a stage store shared with other runs (sweeps), consulted when this run has no valid
    copy of a stage and fed with every stage this run computes. `cores`: the machine's cores lock,
    when other runs compute in parallel (timed stages then measure alone; see cores.py)."""

    def __init__(self, recipe: Recipe, run_dir: str | os.PathLike, force: list[str] | None = None,
                 store: StageStore | None = None, cores: CoresLock | None = None) -> None:
        self.recipe = recipe
        self.rundir = RunDir(run_dir)
        self.force = set(force or [])
        self.store = store
        self.cores = cores
        names = {s.name for s in recipe.stages}
        unknown = self.force - names - {"all"}
        if unknown:
            raise UserError(f"--force {sorted(unknown)[0]}: no such stage; stages are: {', '.join(s.name for s in recipe.stages)}")
        self.versions = tool_versions()
        self.entries: list[dict[str, Any]] = []
        self.manifest: list[dict[str, Any]] = []

    @cached_property
    def data(self) -> DataBundle:
        with status_line(f"loading {self.recipe.data.dataset} data"):
            return build_data(self.recipe.data, self.recipe.seed)

    @cached_property
    def data_identity(self) -> DataIdentity:
        """Fingerprint + metrics record of the data, from file stats only (no decoding, no torch)."""
        return data_identity(self.recipe.data, self.recipe.seed)

    # -- keys --------------------------------------------------------------------------------

    def root_key(self) -> str:
        r = self.recipe
        return sha256_text(canonical_json({
            "data": config_dump(r.data), "data_fingerprint": self.data_identity.fingerprint,
            "model": config_dump(r.model), "seed": r.seed}))

    def stage_key(self, spec: StageSpec, upstream: dict[str, Any]) -> str:
        material = {"type": spec.type, "config": config_dump(spec.config), "upstream": upstream, "versions": self.versions}
        extra = spec.stage.key_inputs(self.recipe, spec.index)
        if extra:
            material["inputs"] = extra
        return sha256_text(canonical_json(material))

    # -- running -----------------------------------------------------------------------------

    def context(self, spec: StageSpec, out_dir: Path) -> StageContext:
        return StageContext(self.recipe, spec, out_dir, self.rundir, lambda: self.data, self.store)

    def run(self) -> list[dict[str, Any]]:
        if not distributed.is_leader():
            return self._follow()
        self.rundir.claim()
        with self.rundir.lock():
            atomic_write_text(self.rundir.resolved_recipe_path, self.recipe.resolved_yaml())
            self.rundir.remove_stale({s.dirname for s in self.recipe.stages})
            upstream: dict[str, Any] = {"root": self.root_key()}
            try:
                for spec in self.recipe.stages:
                    record = self._run_or_reuse(spec, upstream)
                    upstream = {"key": record["key"], "outputs": record["outputs"]}
            finally:
                self._write_summaries()
        return self.entries

    def _run_or_reuse(self, spec: StageSpec, upstream: dict[str, Any]) -> dict[str, Any]:
        key = self.stage_key(spec, upstream)
        final = self.rundir.stage_dir(spec.index, spec.name)
        started = time.perf_counter()
        forced = spec.name in self.force or "all" in self.force
        # With a shared store, the key's lock is held from lookup to publication: a run that needs
        # the same stage at the same time waits and copies instead of computing it again.
        with self._key_lock(key):
            record, source = (None, None) if forced else self._reusable(spec, key, final)
            distributed.broadcast_object(record is None)  # distributed runs: tell the followers (see _follow)
            if record is not None:
                status = "cached"
                console.print(f"[green]✓[/] {spec.dirname:<18} cached{' (shared store)' if source == 'store' else ''}")
            else:
                status = "done"
                record = self._execute(spec, key, upstream, final)
                if self.store is not None and not forced:
                    self.store.publish(key, final)
        seconds = round(time.perf_counter() - started, 3)
        self._publish(spec, final, record)
        entry = {"name": spec.name, "type": spec.type, "status": status, "seconds": seconds, **record["entry"]}
        self.entries.append(entry)
        step = {
            "name": spec.name, "type": spec.type, "dir": spec.dirname, "status": status, "key": key,
            "inputs": upstream, "outputs": record["outputs"], "versions": record["versions"],
            "seconds": record["seconds"],
        }
        if source == "store":
            step["source"] = "store"
        self.manifest.append(step)
        self._write_summaries()
        return record

    def _key_lock(self, key: str) -> AbstractContextManager[None]:
        return self.store.lock(key) if self.store is not None else nullcontext()

    def _reusable(self, spec: StageSpec, key: str, final: Path) -> tuple[dict[str, Any] | None, str | None]:
        """(record, "run" | "store") of a valid earlier result for `key`, or (None, None)."""
        record = self._valid_record(final, key)
        if record is not None:
            return record, "run"
        if self.store is None:
            return None, None
        tmp = self.rundir.fresh_tmp_dir(spec.index, spec.name)
        record = self.store.install(key, tmp, final, self.rundir.remove_ours)
        if record is None:
            return None, None
        return record, "store"

    def _cores(self, spec: StageSpec) -> AbstractContextManager[None]:
        """Shared use of the cores while computing, sole use while a stage times a model."""
        if self.cores is None:
            return nullcontext()
        return self.cores.hold(exclusive=spec.stage.measures_time)

    def _execute(self, spec: StageSpec, key: str, upstream: dict[str, Any], final: Path) -> dict[str, Any]:
        tmp = self.rundir.fresh_tmp_dir(spec.index, spec.name)
        console.print(f"[cyan]▶[/] {spec.dirname:<18} running")
        started = time.perf_counter()
        ctx = self.context(spec, tmp)
        try:
            with self._cores(spec):
                result = spec.stage.run(ctx)
                entry, details = dict(result.metrics), dict(result.details)
                if result.model is not None:
                    save_model(result.model, tmp)
                    facts = model_facts(result.model, self.data, tmp)
                    details["val_accuracy"] = facts.pop("val_accuracy")
                    entry["model"] = facts
            if details:
                atomic_write_json(tmp / DETAILS_FILE, details)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = round(time.perf_counter() - started, 3)
        outputs = {
            str(p.relative_to(tmp)): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name != STAGE_RECORD
        }
        record = {
            "name": spec.name, "type": spec.type, "key": key, "inputs": upstream, "outputs": outputs,
            "versions": self.versions, "seconds": seconds, "entry": entry,
        }
        atomic_write_json(tmp / STAGE_RECORD, record)
        if final.exists() or final.is_symlink():
            self.rundir.remove_ours(final)
        os.replace(tmp, final)
        console.print(f"[green]✓[/] {spec.dirname:<18} done in {seconds:.1f}s")
        return record

    def _follow(self) -> list[dict[str, Any]]:
        """Ranks > 0 of a distributed run (see distributed.py): for each stage the leader runs, run it
        too if it trains (`Stage.distributed`), so `training.fit` has its data-parallel partners.
        Inputs are read from the leader's run folder; outputs go to a scratch folder and are dropped."""
        for spec in self.recipe.stages:
            runs = distributed.broadcast_object(None)
            if runs and getattr(spec.stage, "distributed", False):
                with procs.temp_dir("follower") as scratch:
                    spec.stage.run(self.context(spec, scratch))
        return []

    def _valid_record(self, folder: Path, key: str) -> dict[str, Any] | None:
        """The stage's record if it matches `key` and every output is intact, else None."""
        path = folder / STAGE_RECORD
        if not path.is_file():
            return None
        try:
            record = read_json(path)
        except UserError:
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        for rel, digest in record.get("outputs", {}).items():
            file = folder / rel
            if not file.is_file() or sha256_file(file) != digest:
                console.print(f"[yellow]![/] {folder.name}: {rel} is missing or changed; recomputing the stage")
                return None
        return record

    def _publish(self, spec: StageSpec, folder: Path, record: dict[str, Any]) -> None:
        """Copy profile JSONs (shipped files and baseline) to the run's `profiles/` folder (the contract's location)."""
        for rel in [*record["entry"].get("profiles", []), *record["entry"].get("baseline_profiles", [])]:
            src = folder / Path(rel).name
            dst = self.rundir.resolve(rel)
            if src.is_file() and (not dst.is_file() or sha256_file(dst) != sha256_file(src)):
                atomic_write_text(dst, src.read_text())

    def _write_summaries(self) -> None:
        metrics = {"recipe": self.recipe.name, "version": __version__, "data": self.data_identity.record, "stages": self.entries}
        # The file to ship per profiled device, gathered from the profile stages (a later stage wins per device).
        shipping = {r["device"]: r for e in self.entries for r in e.get("recommendations", [])}
        if shipping:
            metrics["recommendations"] = list(shipping.values())
        atomic_write_json(self.rundir.metrics_path, metrics)
        atomic_write_json(
            self.rundir.manifest_path,
            {"recipe": self.recipe.name, "versions": self.versions, "stages": self.manifest},
        )
