"""Will this .tflite load on that device's runtime? Checked before deployment.

A device profile names its runtime (`ai-edge-litert`, `tflite-runtime`, `benchmark_model`) and
optionally a version. When that runtime is installed here, the model is really loaded, allocated
and invoked once in a subprocess with it (a crash there cannot take the caller down):
- `ai-edge-litert` at the installed version (or no version stated): this environment's Python,
  or the device's own interpreter for a local device with `transport.python`;
- any other name/version: a side venv under ~/.cache/edge-pipeline/runtimes/<name>-<version>,
  made by `python -m edge_pipeline.convert.compat install tflite-runtime 2.14.0`
  (the one step that uses the package registry; checks never do).
Otherwise the check is static: Flex/custom ops, op versions a runtime is known not to load
(measured here, see KNOWN_MAX_OP_VERSIONS), and the model's `min_runtime_version` metadata.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import procs
from ..artifacts import LIMIT_TFLITE, check_regular_file
from ..errors import UserError
from .inspect import Graph, read_graph
from .runtime import interpreter_class, load_error_summary

CACHE = Path(os.environ.get("EDGE_PIPELINE_CACHE", "~/.cache/edge-pipeline")).expanduser()
RUNTIME_HOME = CACHE / "runtimes"
RUNTIME_MODULES = {"ai-edge-litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter"}
# What each pip runtime needs beside itself (tflite-runtime 2.14 is built against numpy 1.x).
RUNTIME_EXTRAS = {"tflite-runtime": ["numpy<2"], "ai-edge-litert": []}

# Highest op versions a runtime loads, where a real load test here found a limit. tflite-runtime
# 2.14 cannot load FULLY_CONNECTED v12, which TF 2.19's converter writes for dynamic-range models:
# "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'".
KNOWN_MAX_OP_VERSIONS: dict[tuple[str, str], dict[str, int]] = {
    ("tflite-runtime", "2.14"): {"FULLY_CONNECTED": 11},
}

UPGRADE = "pip install 'ai-edge-litert>=2.1' on the device (the runtime this project converts for)"

# A loader that runs under any runtime's Python (3.8+, numpy, no edge_pipeline). For each model in
# turn it prints a JSON line as it enters each phase, so a crash (abort, segfault) is still located,
# then a result line; one process (one runtime import) serves every model of a check.
# "reference" also runs the model without the default (XNNPACK) delegate, as diagnosis does.
LOADER = r"""
import json, sys
name, modes, models = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
def say(**fields):
    print(json.dumps(fields), flush=True)
try:
    if name == "ai-edge-litert":
        from ai_edge_litert import interpreter as mod
    elif name == "tflite-runtime":
        from tflite_runtime import interpreter as mod
    else:
        import tensorflow as tf
        mod = tf.lite.experimental
        mod.Interpreter = tf.lite.Interpreter
    import numpy as np
except Exception as exc:
    for index in range(len(models)):
        say(model=index, ok=False, phase="import", error="%s: %s" % (type(exc).__name__, exc))
    sys.exit(0)
for index, model in enumerate(models):
    phase = "load"
    try:
        for mode in modes:
            kwargs = {}
            if mode == "reference":
                kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            for phase in ("load", "allocate", "invoke"):
                phase = phase if mode == "default" else "%s (%s)" % (phase, mode)
                say(model=index, phase=phase)
                if phase.startswith("load"):
                    interpreter = mod.Interpreter(model_path=model, **kwargs)
                elif phase.startswith("allocate"):
                    interpreter.allocate_tensors()
                else:
                    for detail in interpreter.get_input_details():
                        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
                    interpreter.invoke()
            interpreter = None
        say(model=index, ok=True)
    except Exception as exc:
        say(model=index, ok=False, phase=phase, error=str(exc))
"""

@dataclass
class Problem:
    op: str
    version: int | None
    reason: str


@dataclass
class Compatibility:
    model: str
    runtime: str
    version: str | None
    status: str  # "ok" | "incompatible" | "unverified"
    method: str  # "loaded" (a real load test) | "static"
    problems: list[Problem] = field(default_factory=list)
    fix: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "incompatible"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        target = f"{self.runtime} {self.version or '(any version)'}"
        if self.status == "ok":
            return f"{Path(self.model).name}: loads on {target} ({self.method})"
        if self.status == "unverified":
            return f"{Path(self.model).name}: not verified on {target}: {self.detail}"
        ops = "; ".join(f"{p.op}{f' v{p.version}' if p.version else ''}: {p.reason}" for p in self.problems)
        return f"{Path(self.model).name}: does not load on {target}: {ops or self.detail}. Fix: {self.fix}"


def version_tuple(text: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text or "")[:3])


def installed_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def venv_dir(name: str, version: str) -> Path:
    return RUNTIME_HOME / f"{name}-{version}"


def runtime_python(name: str, version: str | None, local_python: str | None = None) -> str | None:
    """A Python that has runtime `name` at `version`, or None if this machine has none."""
    if name not in RUNTIME_MODULES:
        return None  # benchmark_model is a native tool: static check only
    if local_python:
        return local_python
    here = installed_version(name)
    if here and (version is None or _same_release(here, version)):
        return sys.executable
    if version is None:
        return None
    for folder in sorted(RUNTIME_HOME.glob(f"{name}-*")) if RUNTIME_HOME.is_dir() else []:
        python = folder / "bin" / "python"
        if python.is_file() and _same_release(folder.name[len(name) + 1:], version):
            return str(python)
    return None


def _same_release(installed: str, wanted: str) -> bool:
    """'2.14.0' satisfies '2.14' and '2.14.0'; the device profile may give major.minor only."""
    want = version_tuple(wanted)
    return version_tuple(installed)[: len(want)] == want


def load_test(python: str, runtime: str, model: Path, reference: bool = False, timeout: float = 120) -> dict[str, Any]:
    """Load, allocate and invoke `model` with `runtime` under `python`, in a subprocess (also
    without default delegates if `reference`). {"ok": bool, "phase": ..., "error": ...}."""
    return load_tests(python, runtime, [model], reference, timeout)[0]


def load_tests(python: str, runtime: str, models: list[Path], reference: bool = False,
               timeout: float = 120) -> list[dict[str, Any]]:
    """`load_test` for several models in one subprocess, one result per model. A model that crashes
    the runtime gets that as its result, and the models after it are tested again without it."""
    modes = "default,reference" if reference else "default"
    for model in models:
        check_regular_file(model, LIMIT_TFLITE, "TFLite model")
    try:
        proc = procs.run(
            [python, "-c", LOADER, runtime, modes, *map(str, models)], timeout=timeout * len(models),
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
    except subprocess.TimeoutExpired:
        return [{"ok": False, "phase": "timeout", "error": f"no answer within {timeout:.0f}s"} for _ in models]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    results = {line["model"]: {k: v for k, v in line.items() if k != "model"} for line in lines if "ok" in line}
    if len(results) == len(models):
        return [results[index] for index in range(len(models))]
    crashed = len(results)  # the loader goes in order: the first model without a result crashed it
    phases = [line["phase"] for line in lines if line.get("model") == crashed and "ok" not in line]
    stderr = [line for line in proc.stderr.strip().splitlines() if line.strip() and not line.startswith("INFO:")]
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    crash = {"ok": False, "phase": phases[-1] if phases else "start",
             "error": f"the runtime crashed ({how}) {('after: ' + stderr[-1][:200]) if stderr else ''}".strip()}
    rest = load_tests(python, runtime, models[crashed + 1:], reference, timeout) if crashed + 1 < len(models) else []
    return [results[index] for index in range(crashed)] + [crash] + rest


_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'")
_CUSTOM_OP = re.compile(r"(?:unresolved custom op|Didn't find custom operator for name)\W+'?(\w+)'?", re.I)
_PREPARE = re.compile(r"Node number (\d+) \((\w+)\) failed to prepare")
_CHECK = re.compile(r"\.cc:\d+ (.+?)\.?Node number")  # "kernel_util.cc:350 <the failed check>.Node number 29 ..."


def problems_from_error(text: str) -> list[Problem]:
    problems = [Problem(op, int(v), "op version not registered in this runtime") for op, v in _MISSING_OP.findall(text)]
    problems += [Problem(op, None, "custom op not registered in this runtime") for op in _CUSTOM_OP.findall(text)]
    for node, op in _PREPARE.findall(text):
        why = _CHECK.search(text)
        reason = f" ({why.group(1).strip()})" if why else ""
        problems.append(Problem(op, None, f"node {node} failed to prepare{reason}"))
    return problems


def policy_problems(graph: Graph, allow_flex: bool) -> list[Problem]:
    """What the device forbids whatever its runtime could load."""
    flex = sorted({op.name for op in graph.ops if op.name.startswith("Flex")})
    return [] if allow_flex else [Problem(name, None, "Flex (SELECT_TF_OPS) op, and the device does not allow Flex") for name in flex]


def static_problems(graph: Graph, runtime: str, version: str | None) -> list[Problem]:
    """What a runtime version is known not to load, without loading."""
    if not version:
        return []
    problems = []
    limits = KNOWN_MAX_OP_VERSIONS.get((runtime, ".".join(map(str, version_tuple(version)[:2]))), {})
    for name, op_version in sorted({(op.name, op.version) for op in graph.ops}):
        if name in limits and op_version > limits[name]:
            problems.append(Problem(name, op_version, f"{runtime} {version} loads {name} up to v{limits[name]}"))
    # min_runtime_version counts in TensorFlow releases, as tflite-runtime does (ai-edge-litert does not).
    needed = graph.min_runtime_version
    if runtime == "tflite-runtime" and needed and version_tuple(needed) > version_tuple(version):
        problems.append(Problem("(model)", None, f"the model needs runtime >= {needed} (min_runtime_version)"))
    return problems


def fix_for(problems: list[Problem], runtime: str, version: str | None) -> str:
    if any(p.op.startswith("Flex") for p in problems):
        return ("every op must be a TFLite builtin: change the layer that needs TensorFlow ops (see `edge-pipeline "
                "inspect`), or set `allow_flex: true` on a device whose runtime links the Flex delegate")
    if any(p.version for p in problems):
        ops = ", ".join(sorted({f"{p.op} v{p.version}" for p in problems if p.version}))
        return (f"{ops} came from a newer converter than {runtime} {version or ''}: {UPGRADE}, "
                "or deploy a precision whose ops it loads (the compatibility table shows which)")
    if any("prepare" in p.reason for p in problems):
        return ("the runtime rejects this op's quantization parameters (typically an activation range too small or "
                "too large for the integer type): use another precision (int8 or float16) or recalibrate with real data")
    if any("needs runtime >=" in p.reason for p in problems):
        return f"{UPGRADE}, or deploy another precision"
    if any(p.reason.startswith("custom op") for p in problems):
        return "build the runtime with the custom op, or change the layer that needs it (see `edge-pipeline inspect`)"
    # Anything else (a damaged file, a crash): a package upgrade is no fix, so none is suggested.
    return "check the file with `edge-pipeline inspect` and re-export it, or deploy another precision"


def check_model(
    model: str | Path,
    runtime: str = "ai-edge-litert",
    version: str | None = None,
    allow_flex: bool = False,
    local_python: str | None = None,
    load: bool = True,
) -> Compatibility:
    """Static checks, then a real load test when the runtime exists here (and `load`)."""
    return check_models([model], runtime, version, allow_flex, local_python, load)[0]


def check_models(
    models: list[str | Path],
    runtime: str = "ai-edge-litert",
    version: str | None = None,
    allow_flex: bool = False,
    local_python: str | None = None,
    load: bool = True,
) -> list[Compatibility]:
    """`check_model` for several files against one runtime: the load tests share one subprocess."""
    paths = [Path(m) for m in models]
    graphs = [read_graph(path) for path in paths]  # a corrupt file is an error before anything runs
    python = runtime_python(runtime, version, local_python) if load else None
    outcomes: list[dict[str, Any] | None] = [None] * len(paths)
    if python is not None and paths:
        outcomes = list(load_tests(python, runtime, paths))
    return [_verdict(path, graph, runtime, version, allow_flex, python, outcome)
            for path, graph, outcome in zip(paths, graphs, outcomes)]


def _verdict(model: Path, graph: Graph, runtime: str, version: str | None, allow_flex: bool, python: str | None,
             outcome: dict[str, Any] | None) -> Compatibility:
    policy = policy_problems(graph, allow_flex)
    if outcome is not None and outcome.get("phase") != "import":
        note = ""
        if python == sys.executable and version is None:
            version = installed_version(runtime)
            note = f"no version in the device profile: checked with {runtime} {version} from this environment"
        error = "" if outcome["ok"] else load_error_summary(outcome["error"])
        problems = policy + ([] if outcome["ok"] else problems_from_error(outcome["error"]) or [Problem("(model)", None, error)])
        detail = f"{outcome['phase']}: {error}" if error else note
        return Compatibility(str(model), runtime, version, "incompatible" if problems else "ok", "loaded", problems,
                             fix_for(problems, runtime, version) if problems else None, detail)
    problems = policy + static_problems(graph, runtime, version)
    if outcome is not None:  # the runtime is there but does not import: say so, check statically
        detail = f"{runtime} does not import under {python}: {outcome['error'][:160]}"
        if not problems:
            return Compatibility(str(model), runtime, version, "unverified", "static", detail=detail)
    if problems:
        return Compatibility(str(model), runtime, version, "incompatible", "static", problems, fix_for(problems, runtime, version))
    if runtime in RUNTIME_MODULES and version:
        hint = f"install it for a real load test: python -m edge_pipeline.convert.compat install {runtime} {version}"
    else:
        hint = "no version in the device profile" if runtime in RUNTIME_MODULES else f"{runtime} is a native tool"
    return Compatibility(str(model), runtime, version, "unverified", "static",
                         detail=f"static checks passed, no load test ({hint})")


def check_device(model: str | Path, device, load: bool = True) -> Compatibility:
    """`check_model` for a DeviceProfile (runtime name/version, allow_flex, local interpreter)."""
    return check_device_models([model], device, load)[0]


def check_device_models(models: list[str | Path], device, load: bool = True) -> list[Compatibility]:
    """`check_device` for several files (one load-test subprocess for all of them)."""
    transport = getattr(device, "transport", None)
    local_python = getattr(transport, "python", None) if getattr(transport, "kind", None) == "local" else None
    return check_models(models, device.runtime.name, device.runtime.version, device.allow_flex, local_python, load)


def ensure_loadable(model: str | Path, reference: bool = True) -> None:
    """Raise a UserError unless `model` loads and runs in this environment's runtime (with and,
    if `reference`, without default delegates); the attempt happens in a subprocess, so a file
    that crashes the runtime cannot take this process down."""
    name, version, _ = interpreter_class()
    outcome = load_test(sys.executable, name, Path(model), reference)
    if not outcome["ok"]:
        problems = problems_from_error(outcome["error"])
        listed = "; ".join(f"{p.op}{f' v{p.version}' if p.version else ''}: {p.reason}" for p in problems)
        what = listed or load_error_summary(outcome["error"])
        raise UserError(f"{model}: does not load in {name} {version} ({outcome['phase']}: {what})")


def install_runtime(name: str, version: str, python: str | None = None) -> Path:
    """Create the side venv for runtime `name`==`version` (uses the package registry once)."""
    if name not in RUNTIME_MODULES:
        raise UserError(f"unknown runtime {name!r}; installable: {', '.join(RUNTIME_MODULES)}")
    folder = venv_dir(name, version)
    python = python or sys.executable
    folder.parent.mkdir(parents=True, exist_ok=True)
    if _import_error(folder, name) is None:
        return folder  # already there: no network
    if not (folder / "bin" / "python").is_file():
        _run_visible([python, "-m", "venv", str(folder)])
    _run_visible([str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{name}=={version}", *RUNTIME_EXTRAS[name]])
    error = _import_error(folder, name)
    if error is not None:
        raise UserError(f"{folder}: {name} {version} installed but does not import: {error}")
    return folder


def _run_visible(cmd: list[str]) -> None:
    """A setup command whose output the user sees; it dies with us (see procs)."""
    with procs.spawned(cmd) as proc:
        code = procs.finish(proc)
    if code != 0:
        raise subprocess.CalledProcessError(code, cmd)


def _import_error(folder: Path, name: str) -> str | None:
    """None if the side venv imports the runtime, else why not."""
    python = folder / "bin" / "python"
    if not python.is_file():
        return "no venv"
    try:
        check = procs.run([str(python), "-c", f"import {RUNTIME_MODULES[name]}"], timeout=300)
    except subprocess.TimeoutExpired:
        return "importing it took longer than 300s"
    return None if check.returncode == 0 else (check.stderr.strip().splitlines() or ["failed"])[-1]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m edge_pipeline.convert.compat",
                                     description="TFLite runtimes for compatibility checks")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help=f"create {RUNTIME_HOME}/<name>-<version> with that runtime")
    p.add_argument("name", choices=sorted(RUNTIME_MODULES))
    p.add_argument("version")
    p.add_argument("--python", help="base interpreter for the venv (default: this one)")
    p = sub.add_parser("check", help="check a .tflite against a runtime")
    p.add_argument("model")
    p.add_argument("name", choices=sorted(RUNTIME_MODULES))
    p.add_argument("version", nargs="?")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            print(f"{args.name} {args.version}: {install_runtime(args.name, args.version, args.python)}")
            return 0
        result = check_model(args.model, args.name, args.version)
        print(result.line())
        return 0 if result.ok else 1
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
