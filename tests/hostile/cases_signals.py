"""Signals in the middle of real work (issue 11.9): a killed or terminated run leaves no child process
(the converter worker, the profiling agent) and no temp folder. These need a real export or profile
of a tiny model, so they are slow; only the CLI's own pid receives the signal, as `kill PID` does."""

from __future__ import annotations

import signal

from .builders import tiny_recipe
from .harness import Case, Interrupt, Sandbox, process_running, run_cli

RUNS = ("runs",)
EXPORT_STAGES = ("  - train: {epochs: 0}\n  - quantize: {mode: int8, calibration_samples: 32}\n"
                 "  - export: {format: tflite}\n")
LONG_TRAIN = "  - train: {epochs: 500}\n"
# A device whose measurement takes a minute: the signal always arrives while the agent runs.
SLOW_DEVICE = """\
name: slow
description: this machine, measuring for a long time
transport: {kind: local}
runtime: {name: ai-edge-litert}
threads: 1
budget: {warmup_runs: 1, min_runs: 1000000, min_seconds: 60.0, max_seconds: 120.0, max_rel_std: 100.0}
"""
# What a terminated CLI may exit with: killed by the signal, or its handler's own code.
TERMINATED = (-signal.SIGTERM, 1, 130, 128 + signal.SIGTERM)
INTERRUPTED = (-signal.SIGINT, 1, 130)


def _run(stages: str):
    def setup(sandbox: Sandbox) -> list[str]:
        sandbox.write("tiny.yaml", tiny_recipe(stages))
        return ["run", "tiny.yaml"]

    return setup


def _profile(sandbox: Sandbox) -> list[str]:
    sandbox.write("model.tflite", sandbox.shared.tflite()["int8"].read_bytes())
    sandbox.write("slow.yaml", SLOW_DEVICE)
    return ["profile", "model.tflite", "--device-file", "slow.yaml"]


def _stage_started(folder: str):
    """Ready once the run's hidden temp folder of a stage exists (the stage is computing)."""
    return lambda sandbox: (sandbox.work / "runs" / "tiny" / folder).exists()


def _signal_case(id: str, setup, ready, sig: int, expect, *, outputs: tuple[str, ...] = RUNS, settle_s: float = 2.0) -> Case:
    return Case(id, "signals", setup, expect, outputs=outputs, error_lines=None, timeout_s=400, slow=True,
                interrupt=Interrupt(ready, sig, settle_s))


def _killed_then_rerun(sandbox: Sandbox) -> list[str]:
    """Kill -9 a run during export (as the case above), then the case is the next start: it resumes."""
    first = _signal_case("first", _run(EXPORT_STAGES), process_running("tflite_worker"), signal.SIGKILL, -signal.SIGKILL)
    outcome = run_cli(first, sandbox, first.setup(sandbox))
    assert outcome.interrupted, f"the first run was never killed: {outcome.stderr[-500:]}"
    return ["run", "tiny.yaml"]


def _temp_swept(sandbox: Sandbox, outcome) -> list[str]:
    left = sorted(p.name for p in sandbox.tmp.iterdir() if p.name.startswith("edge-pipeline"))
    return [f"the next start did not sweep the killed run's temp folders: {', '.join(left)}"] if left else []


CASES = [
    _signal_case("signal-kill9-during-export", _run(EXPORT_STAGES), process_running("tflite_worker"), signal.SIGKILL,
                 -signal.SIGKILL),
    _signal_case("signal-term-during-export", _run(EXPORT_STAGES), process_running("tflite_worker"), signal.SIGTERM,
                 TERMINATED),
    _signal_case("signal-term-during-profile", _profile, process_running("agent.py"), signal.SIGTERM, TERMINATED,
                 outputs=()),
    _signal_case("signal-int-during-profile", _profile, process_running("agent.py"), signal.SIGINT, INTERRUPTED,
                 outputs=()),
    _signal_case("signal-term-during-train", _run(LONG_TRAIN), _stage_started(".01-train.tmp"), signal.SIGTERM,
                 TERMINATED),
    # Issue 11.9: "swept on the next start": the rerun resumes and removes what the killed run left.
    Case("signal-kill9-during-export-then-rerun", "signals", _killed_then_rerun, 0, outputs=RUNS, check=_temp_swept,
         timeout_s=400, slow=True),
]
