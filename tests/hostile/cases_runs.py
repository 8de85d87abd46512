"""Hostile run folders and their files: a planted `.lock` symlink, `--out` on folders the tool did not
make, stale temp folders that are symlinks, tampered profiles and metrics for `compare`/`diagnose`,
a read-only run folder and a full disk (exit 1, one line naming the path, completed stages intact)."""

from __future__ import annotations

import json

from .builders import symlink, tiny_recipe
from .harness import Case, Sandbox, make_read_only

RUNS = ("runs",)
NOTES = "my notes: do not lose them\n"
PROFILE = {
    "device": "host", "model": "model_int8.tflite", "model_sha256": "0" * 64, "model_size_bytes": 1000,
    "runtime": {"name": "ai-edge-litert", "version": "2.1.0"}, "threads": 1, "arch": "x86_64",
    "init_ms": 1.0, "first_inference_ms": 1.0, "warmup": {"runs": 5, "mean_ms": 1.0},
    "latency_ms": {"runs": 50, "min": 1, "median": 1, "mean": 1, "p90": 1, "max": 1, "std": 0.1},
    "peak_rss_mb": 1.0, "valid": True, "invalid_reasons": [],
}


def _run_into(out: str, prepare):
    """`prepare(sandbox)` plants files, then `run tiny.yaml --out OUT`."""

    def setup(sandbox: Sandbox) -> list[str]:
        sandbox.write("tiny.yaml", tiny_recipe())
        prepare(sandbox)
        return ["run", "tiny.yaml", "--out", out]

    return setup


def _lock_symlink_fresh(sandbox: Sandbox) -> None:
    """Issue 11.2: `ln -s ~/notes runs/tiny/.lock` in a folder that holds nothing else."""
    notes = sandbox.victim(sandbox.home / "notes", NOTES)
    symlink(sandbox.work / "runs" / "tiny" / ".lock", notes)


def _lock_symlink_in_our_run(sandbox: Sandbox) -> None:
    """The same planted in a real run folder (it carries the tool's marker)."""
    run = sandbox.shared.copy_run(sandbox)
    (run / ".lock").unlink()
    notes = sandbox.victim(sandbox.home / "notes", NOTES)
    symlink(run / ".lock", notes)


def _marker_symlink(sandbox: Sandbox) -> None:
    """A planted marker that is a symlink must not make a foreign folder look like ours."""
    notes = sandbox.victim(sandbox.home / "notes", NOTES)
    symlink(sandbox.work / "runs" / "tiny" / ".edge-pipeline-run", notes)
    sandbox.victim(sandbox.work / "runs" / "tiny" / "report.md", "the user's own report\n")


def _user_files(sandbox: Sandbox) -> None:
    """Issue 11.3: a folder the tool did not make, holding files with the tool's own names."""
    base = sandbox.work / "runs" / "mine"
    sandbox.victim(base / "01-train" / "mine.txt", "user data\n")
    sandbox.victim(base / ".02-x.tmp" / "keep.txt", "user data\n")
    sandbox.victim(base / "report.md", "the user's report\n")
    sandbox.victim(base / "metrics.json", '{"mine": true}\n')


def _nothing(sandbox: Sandbox) -> None:
    pass


def _out_is_file(sandbox: Sandbox) -> None:
    sandbox.victim(sandbox.work / "notes.txt", NOTES)


def _run_into_home(sandbox: Sandbox) -> list[str]:
    sandbox.victim(sandbox.home / "notes", NOTES)
    return _run_into(str(sandbox.home), _nothing)(sandbox)


def _stale_tmp_symlink(sandbox: Sandbox) -> None:
    """A stale `.01-train.tmp` in our run folder that is a symlink to the user's folder of files."""
    run = sandbox.shared.copy_run(sandbox)
    precious = sandbox.home / "precious"
    for name in ("a.txt", "b.txt"):
        sandbox.victim(precious / name, f"{name}\n")
    symlink(run / ".01-train.tmp", precious)


def _compare(profile_text):
    def setup(sandbox: Sandbox) -> list[str]:
        text = profile_text(sandbox) if callable(profile_text) else profile_text
        if text is not None:
            sandbox.write("p.json", text)
        return ["compare", "p.json", "--out", "cmp"]

    return setup


def _profile_with_median(value) -> str:
    profile = json.loads(json.dumps(PROFILE))
    profile["latency_ms"]["median"] = value
    return json.dumps(profile)  # NaN is written as the bare token NaN, as Python's json does


def _profile_dev_zero(sandbox: Sandbox) -> None:
    symlink(sandbox.work / "p.json", "/dev/zero")


def _diagnose_swapped(sandbox: Sandbox) -> list[str]:
    files = sandbox.shared.tflite()
    sandbox.write("model_float32.tflite", files["float32"].read_bytes())
    sandbox.write("model_int8.tflite", files["int8"].read_bytes())
    return ["diagnose", "model_int8.tflite", "model_float32.tflite"]


def _diagnose_tampered_metrics(sandbox: Sandbox) -> list[str]:
    """A run folder whose metrics.json points the export's files outside the run (and at /dev/zero)."""
    run = sandbox.shared.copy_run(sandbox)
    sandbox.victim(sandbox.home / "notes", NOTES)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["stages"].append({"name": "export", "type": "export", "status": "done", "artifacts": [
        {"format": "tflite", "precision": "float32", "path": "../../../home/notes"},
        {"format": "tflite", "precision": "int8", "path": "/dev/zero"}]})
    (run / "metrics.json").write_text(json.dumps(metrics))
    return ["diagnose", "runs/tiny"]


def _blocked_run(block):
    """The shared run (train done) plus a prune stage to compute, with `block(sandbox, run)` in the way."""

    def setup(sandbox: Sandbox) -> list[str]:
        run = sandbox.shared.copy_run(sandbox)
        for path in sorted((run / "01-train").iterdir()):
            sandbox.victim(path)  # completed stages stay intact
        sandbox.write("tiny.yaml", tiny_recipe("  - train: {epochs: 0}\n  - prune: {method: l1, ratio: 0.25}\n"))
        block(sandbox, run)
        return ["run", "tiny.yaml"]

    return setup


def _read_only(sandbox: Sandbox, run) -> None:
    make_read_only(sandbox, run)


def _bad_compare(id: str, text, **kw) -> Case:
    return Case(id, "runs", _compare(text), 2, outputs=("cmp",), error_has=("p.json",), timeout_s=kw.pop("timeout_s", 60), **kw)


CASES = [
    # Issue 11.2: the lock never truncates or follows a planted symlink.
    Case("runs-lock-symlink-in-foreign-folder", "runs", _run_into("runs/tiny", _lock_symlink_fresh), 2, outputs=RUNS,
         error_has=("runs/tiny",), timeout_s=120),
    Case("runs-lock-symlink-in-own-run", "runs", _run_into("runs/tiny", _lock_symlink_in_our_run), (0, 2), outputs=RUNS,
         timeout_s=120),
    Case("runs-marker-symlink", "runs", _run_into("runs/tiny", _marker_symlink), 2, outputs=RUNS,
         error_has=("runs/tiny",), timeout_s=120),
    # Issue 11.3: --out on a folder with user files, on a file, on $HOME: exit 2 naming it, nothing lost.
    Case("runs-out-folder-with-user-files", "runs", _run_into("runs/mine", _user_files), 2, outputs=RUNS,
         error_has=("runs/mine",), timeout_s=120),
    Case("runs-out-is-a-file", "runs", _run_into("notes.txt", _out_is_file), 2, error_has=("notes.txt",), timeout_s=120),
    Case("runs-out-is-home", "runs", _run_into_home, 2, error_has=("home",), timeout_s=120),
    # A stale temp folder that is a symlink: removed as a link, or refused (exit 2); what it points to stays.
    Case("runs-stale-tmp-symlink", "runs", _run_into("runs/tiny", _stale_tmp_symlink), (0, 2), outputs=RUNS, timeout_s=120),
    # Issue 11.8: compare on profiles that are not what they claim.
    _bad_compare("runs-compare-string-median", _profile_with_median("fast")),
    _bad_compare("runs-compare-nan-median", _profile_with_median(float("nan"))),
    _bad_compare("runs-compare-deep-json", "[" * 200_000 + "]" * 200_000),
    _bad_compare("runs-compare-not-an-object", "[1, 2, 3]"),
    _bad_compare("runs-compare-dev-zero", _profile_dev_zero, timeout_s=20, memory_limit_mb=2048),
    # Issue 11.10: diagnose refuses float/quantized files given the wrong way round.
    Case("runs-diagnose-swapped-files", "runs", _diagnose_swapped, 2, error_has=("model_int8.tflite",), timeout_s=90),
    Case("runs-diagnose-tampered-metrics", "runs", _diagnose_tampered_metrics, 2, outputs=RUNS, error_has=("runs/tiny",),
         timeout_s=60, memory_limit_mb=3072),
    # Issue 11.8: a read-only run folder or a full disk: exit 1, one line naming the path, train intact.
    Case("runs-read-only-run-folder", "runs", _blocked_run(_read_only), 1, outputs=RUNS, error_has=("runs/tiny",),
         timeout_s=150),
    Case("runs-disk-full", "runs", _blocked_run(lambda s, run: None), 1, outputs=RUNS, error_has=("runs/tiny",),
         timeout_s=150, file_size_limit=16 << 10),
]
