"""Run a plan's variants on this machine, `jobs` at a time, each as its own `edge-pipeline run`.

A variant is a child process (through `procs`: it dies with the sweep, even on SIGKILL) running
`run variants/<id>.yaml --out runs/<id> --store STORE`, its output in `logs/<id>.log`. With more than
one job, each child gets `cores // jobs` threads and the cores lock, so profile stages time models
while nothing else computes (see cores.py). A failed variant is recorded with the last error line
of its log; the others go on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .. import procs
from ..ui import console
from .plan import LOGS_DIR, PLANNED, Plan, Variant, store_path

CORES_LOCK = ".cores.lock"
POLL_SECONDS = 0.5
TAIL_BYTES = 64 * 1024


@dataclass
class Outcome:
    code: int
    seconds: float
    error: str | None


@dataclass
class _Running:
    proc: subprocess.Popen
    started: float
    log: IO[str]

    def end(self, stop: bool = False) -> int:
        if stop:
            procs.stop(self.proc)
            code = self.proc.returncode
        else:
            code = procs.finish(self.proc)
        self.log.close()
        return code


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_variants(folder: Path, plan: Plan, jobs: int) -> dict[str, Outcome]:
    """Run every planned variant; id -> outcome."""
    todo = [v for v in plan.variants if v.status == PLANNED]
    jobs = max(1, min(jobs, len(todo)))
    threads = str(max(1, machine_cores() // jobs))
    store = store_path(folder, plan)
    (folder / LOGS_DIR).mkdir(exist_ok=True)
    running: dict[str, _Running] = {}
    outcomes: dict[str, Outcome] = {}
    queue = list(todo)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                variant = queue.pop(0)
                running[variant.id] = _start(folder, variant, store, threads, jobs > 1)
                console.print(f"[cyan]▶[/] {variant.id} running ({len(outcomes) + len(running)}/{len(todo)})")
            time.sleep(POLL_SECONDS)
            for vid, child in list(running.items()):
                if child.proc.poll() is None:
                    continue
                code = child.end()
                del running[vid]
                outcomes[vid] = Outcome(code, round(time.perf_counter() - child.started, 1),
                                        None if code == 0 else _last_error(folder / LOGS_DIR / f"{vid}.log", code))
                mark = "[green]✓[/]" if code == 0 else "[red]✗[/]"
                console.print(f"{mark} {vid} {'done' if code == 0 else 'failed'} in {outcomes[vid].seconds:.0f}s "
                              f"({len(outcomes)}/{len(todo)})" + (f": {outcomes[vid].error}" if code else ""))
    finally:
        for child in running.values():  # interrupted: no variant outlives the sweep
            child.end(stop=True)
    return outcomes


def _start(folder: Path, variant: Variant, store: Path, threads: str, parallel: bool) -> _Running:
    cmd = [sys.executable, "-m", "edge_pipeline.cli", "run", str(folder / variant.recipe),
           "--out", str(folder / variant.run_dir), "--store", str(store)]
    env = dict(os.environ)
    if parallel:
        cmd += ["--cores-lock", str(folder / CORES_LOCK)]
        env["OMP_NUM_THREADS"] = threads  # N jobs share the cores instead of each spinning all of them
    log = open(folder / LOGS_DIR / f"{variant.id}.log", "w", encoding="utf-8")  # noqa: SIM115 - closed when the child ends
    try:
        proc = procs.spawn(cmd, env=env, stdout=log, stderr=log)
    except BaseException:
        log.close()
        raise
    return _Running(proc, time.perf_counter(), log)


def _last_error(log: Path, code: int) -> str:
    """The run's own `error:` line (what it told the user), else the last line it printed."""
    try:
        with open(log, "rb") as fh:  # the tail only: a long run's log can be large
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - TAIL_BYTES))
            lines = [line.strip() for line in fh.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith("error:")]
    text = errors[-1] if errors else (lines[-1] if lines else "")
    return f"exit {code}: {text[:300]}" if text else f"exit {code}"
