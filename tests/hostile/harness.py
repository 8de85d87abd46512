"""The hostile-input harness: run the real CLI on one hostile input in a sandbox and check every promise.

A case is data (`Case`): its `setup(sandbox)` builds the hostile files inside the sandbox and returns the
CLI arguments. `run_case` runs `python -m edge_pipeline.cli ARGS` in a subprocess from the sandbox's
working folder, with HOME and TMPDIR pointed into the sandbox and a unique tag in the environment, and
`problems` lists every broken promise:

- the exit code (2 bad input, 1 failure while running, 0 where the input must be handled, not refused);
- exactly one stderr line starting with `error:` (other lines may be warnings) and no traceback;
- no file changed outside the case's declared outputs (sandbox HOME, working folder, registered victims);
- no marker file written by an injected command (`sandbox.marker`);
- no process left behind (tag in /proc/*/environ, or a cwd / command line inside the sandbox);
- no temp folder left behind in TMPDIR.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "edge_pipeline.cli"]
TAG_VARIABLE = "EDGE_PIPELINE_TEST_TAG"
HASH_LIMIT = 1 << 20  # files up to 1 MB are compared by content, larger ones by size and mtime
EXIT_GRACE_S = 3.0  # how long children may take to die after the CLI returned (or was killed)

# Caches that third-party libraries write into $HOME on import (matplotlib's font list, keras' config).
# They are not written by edge-pipeline and say nothing about its promises, so they are not compared.
# Anything a case plants there on purpose is registered as a victim and compared anyway.
LIBRARY_CACHES = (".cache/matplotlib", ".config/matplotlib", ".keras")
# The same in TMPDIR: torch keeps its compile cache in $TMPDIR/torchinductor_<user> (a cache, reused).
LIBRARY_TEMP_PREFIXES = ("torchinductor_",)


# ---------------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Interrupt:
    """Send `sig` to the CLI process (that pid only, like `kill PID`) once `ready(sandbox)` holds."""

    ready: Callable[[Sandbox], bool]
    sig: int
    settle_s: float = 1.0  # after `ready`, let the child get going before the signal


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # recipes | devices | models | tflite | images | runs | signals
    setup: Callable[[Sandbox], list[str]]
    expect_exit: int | tuple[int, ...]
    outputs: tuple[str, ...] = ()  # paths under the working folder the command may create or change
    error_has: tuple[str, ...] = ()  # substrings the error line must contain (e.g. the file's name)
    error_lines: int | None = -1  # -1: 1 if the exit is nonzero else 0; None: not checked (signals)
    timeout_s: float = 90.0
    slow: bool = False
    memory_limit_mb: int | None = None  # RLIMIT_AS: an unbounded read fails instead of eating the machine
    file_size_limit: int | None = None  # RLIMIT_FSIZE with SIGXFSZ ignored: writes fail like a full disk
    interrupt: Interrupt | None = None
    check: Callable[[Sandbox, Outcome], list[str]] | None = None  # extra, case-specific problems

    def expected_error_lines(self, returncode: int | None) -> int | None:
        """One `error:` line for a failure, none for success (a case may accept either)."""
        if self.error_lines != -1:
            return self.error_lines
        return 0 if returncode == 0 else 1


# ---------------------------------------------------------------------------------------------------
# The sandbox


@dataclass
class Sandbox:
    root: Path
    shared: object  # tests.hostile.conftest.Shared: tiny models and run folders built once per session
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    victims: list[Path] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A lived-in HOME: libraries add their caches under these, which must not read as a change.
        for folder in (self.home / ".cache", self.home / ".config", self.tmp, self.work):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def marker(self) -> Path:
        """The file an injected command would create; its existence proves the injection ran."""
        return self.root / "pwned"

    @property
    def inject(self) -> str:
        """A shell command that creates the marker (what a hostile file tries to run)."""
        return f"touch {self.marker}"

    def write(self, relative: str, content: str | bytes) -> Path:
        """A file under the working folder (parents created)."""
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def victim(self, path: Path, content: str | bytes | None = None) -> Path:
        """A user file the command must leave untouched (compared even inside declared outputs)."""
        if content is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        self.victims.append(path)
        return path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_PIPELINE_", "XDG_", "PYTEST_"))}
        env.update({"HOME": str(self.home), "TMPDIR": str(self.tmp), TAG_VARIABLE: self.tag})
        env.pop("PYTHONPATH", None)  # the CLI must work from the installed package, not the test's path
        return env

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            cleanup()


# ---------------------------------------------------------------------------------------------------
# Snapshots: what the command could have changed


Entry = tuple  # (kind, size, mtime_ns, sha256 or link target)


def _entry(path: Path) -> Entry | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return ("link", 0, 0, os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("dir", 0, 0, stat.S_IMODE(st.st_mode))
    if not stat.S_ISREG(st.st_mode):
        return ("special", 0, 0, stat.S_IFMT(st.st_mode))  # fifo, socket: never opened
    digest = ""
    if st.st_size <= HASH_LIMIT:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ("file", st.st_size, st.st_mtime_ns, digest)


def _walk(root: Path, skip: set[Path]) -> Iterable[Path]:
    """Every path under root, symlinks not followed, `skip` subtrees left out."""
    if not root.exists() and not root.is_symlink():
        return
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            children = list(os.scandir(folder))
        except (NotADirectoryError, PermissionError, FileNotFoundError):
            continue
        for child in children:
            path = Path(child.path)
            if path in skip:
                continue
            yield path
            if child.is_dir(follow_symlinks=False):
                stack.append(path)


def snapshot(sandbox: Sandbox, outputs: Iterable[str]) -> dict[str, Entry | None]:
    skip = {sandbox.work / o for o in outputs} | {sandbox.home / c for c in LIBRARY_CACHES}
    found: dict[str, Entry | None] = {}
    for root in (sandbox.home, sandbox.work):
        for path in _walk(root, skip):
            found[str(path)] = _entry(path)
    for path in sandbox.victims:
        found[str(path)] = _entry(path)
    return found


def compare_snapshots(before: dict[str, Entry | None], after: dict[str, Entry | None], root: Path) -> list[str]:
    """What was created, deleted or changed. A folder whose contents changed is reported through its
    entries (folders are compared by mode only, not mtime)."""
    changes = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        name = os.path.relpath(path, root)
        if old is None:
            changes.append(f"created {name}")
        elif new is None:
            changes.append(f"deleted {name}")
        else:
            changes.append(f"changed {name} ({old[0]} {old[1]} B -> {new[0]} {new[1]} B)")
    return changes


# ---------------------------------------------------------------------------------------------------
# Processes the command left behind


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def sandbox_processes(sandbox: Sandbox, exclude: Iterable[int] = ()) -> list[tuple[int, str]]:
    """Live processes started for this case: the tag in their environment, or working in the sandbox.

    The cwd and command line catch children started with a scrubbed environment (a converter worker
    run with a controlled env has no tag)."""
    tag = f"{TAG_VARIABLE}={sandbox.tag}".encode()
    root = str(sandbox.root)
    skip = {os.getpid(), *exclude}
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        pid = int(entry.name)
        status = _read(f"/proc/{pid}/stat")
        if not status or status.rsplit(b")", 1)[-1].split()[0] in (b"Z", b"X"):
            continue  # gone, or a zombie: holds no resources but a pid
        cmdline = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        if tag in _read(f"/proc/{pid}/environ") or cwd.startswith(root) or root in cmdline:
            found.append((pid, cmdline))
    return found


def process_running(needle: str) -> Callable[[Sandbox], bool]:
    """For `Interrupt.ready`: a process of this case whose command line contains `needle`."""
    return lambda sandbox: any(needle in cmd for _, cmd in sandbox_processes(sandbox))


def _reap_leftovers(sandbox: Sandbox, exclude: Iterable[int]) -> list[str]:
    """Wait up to EXIT_GRACE_S for the case's processes to end; kill and name those that did not."""
    deadline = time.monotonic() + EXIT_GRACE_S
    while True:
        left = sandbox_processes(sandbox, exclude)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)  # a leftover of this case: do not let it run on
        except ProcessLookupError:
            pass
    return [f"pid {pid}: {cmd[:160]}" for pid, cmd in left]


# ---------------------------------------------------------------------------------------------------
# Running one case


@dataclass
class Outcome:
    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    interrupted: bool = False
    leftover_processes: list[str] = field(default_factory=list)
    leftover_temp: list[str] = field(default_factory=list)
    file_changes: list[str] = field(default_factory=list)
    marker: bool = False

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def _limits(case: Case) -> Callable[[], None] | None:
    if case.memory_limit_mb is None and case.file_size_limit is None:
        return None

    def apply() -> None:  # runs in the child between fork and exec
        if case.memory_limit_mb is not None:
            limit = case.memory_limit_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if case.file_size_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, like ENOSPC would be
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.file_size_limit, case.file_size_limit))

    return apply


def _wait(proc: subprocess.Popen, case: Case, sandbox: Sandbox, started: float) -> tuple[bool, bool]:
    """(timed_out, interrupted): wait for the CLI, sending the case's signal when it is ready."""
    deadline = started + case.timeout_s
    interrupted = False
    while proc.poll() is None:
        if time.monotonic() > deadline:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the CLI leads its own session: take its children too
            except ProcessLookupError:
                pass  # it ended just now
            proc.wait()
            return True, interrupted
        if case.interrupt and not interrupted and case.interrupt.ready(sandbox):
            time.sleep(case.interrupt.settle_s)
            if proc.poll() is None:
                os.kill(proc.pid, case.interrupt.sig)
                interrupted = True
        time.sleep(0.1)
    return False, interrupted


def run_cli(case: Case, sandbox: Sandbox, argv: list[str], command: list[str] | None = None) -> Outcome:
    """Run the CLI (or `command`, for the harness's own tests) on `argv` and collect what it left."""
    temp_before = set(os.listdir(sandbox.tmp))
    before = snapshot(sandbox, case.outputs)
    out_path, err_path = sandbox.root / "stdout.txt", sandbox.root / "stderr.txt"
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            (command or CLI) + argv, cwd=sandbox.work, env=sandbox.env(), stdin=subprocess.DEVNULL,
            stdout=out, stderr=err, preexec_fn=_limits(case), start_new_session=True,
        )
        timed_out, interrupted = _wait(proc, case, sandbox, started)
    seconds = time.monotonic() - started
    outcome = Outcome(
        argv=argv, returncode=None if timed_out else proc.returncode,
        stdout=out_path.read_text(errors="replace"), stderr=err_path.read_text(errors="replace"),
        seconds=seconds, timed_out=timed_out, interrupted=interrupted,
    )
    outcome.leftover_processes = _reap_leftovers(sandbox, exclude=())
    outcome.leftover_temp = sorted(name for name in set(os.listdir(sandbox.tmp)) - temp_before
                                   if not name.startswith(LIBRARY_TEMP_PREFIXES))
    outcome.file_changes = compare_snapshots(before, snapshot(sandbox, case.outputs), sandbox.root)
    outcome.marker = sandbox.marker.exists()
    return outcome


def run_case(case: Case, sandbox: Sandbox) -> Outcome:
    return run_cli(case, sandbox, case.setup(sandbox))


def problems(case: Case, outcome: Outcome, sandbox: Sandbox) -> list[str]:
    """Every promise the command broke, one line each (empty: the case holds)."""
    found = []
    expected = case.expect_exit if isinstance(case.expect_exit, tuple) else (case.expect_exit,)
    if outcome.timed_out:
        found.append(f"did not finish within {case.timeout_s:.0f} s (killed)")
    elif outcome.returncode not in expected:
        found.append(f"exit code {outcome.returncode}, expected {' or '.join(map(str, expected))}")
    if case.interrupt is not None and not outcome.interrupted:
        found.append("the signal was never sent: the command ended before its ready condition held")
    if "Traceback (most recent call last)" in outcome.stderr + outcome.stdout:
        found.append(f"traceback: {_last_line(outcome.stderr)}")
    lines = outcome.error_lines
    want = case.expected_error_lines(outcome.returncode)
    if want is not None and not outcome.timed_out and len(lines) != want:
        found.append(f"{len(lines)} 'error:' lines on stderr, expected {want}: {lines[:3]}")
    elif want is None and len(lines) > 1:
        found.append(f"{len(lines)} 'error:' lines on stderr, expected at most 1: {lines[:3]}")
    for needle in case.error_has:
        if lines and not any(needle in line for line in lines):
            found.append(f"the error line does not name {needle!r}: {lines[0]}")
    if outcome.marker:
        found.append(f"an injected command ran: {sandbox.marker.name} was created")
    if outcome.file_changes:
        found.append(f"files changed outside the run folder: {', '.join(outcome.file_changes[:8])}")
    if outcome.leftover_processes:
        found.append(f"processes left behind: {'; '.join(outcome.leftover_processes[:4])}")
    if outcome.leftover_temp:
        found.append(f"temp entries left in TMPDIR: {', '.join(outcome.leftover_temp[:8])}")
    if case.check is not None and not outcome.timed_out:
        found.extend(case.check(sandbox, outcome))
    return found


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def describe(outcome: Outcome) -> str:
    """The command and the tail of its output, for a failing case's message."""
    tail = lambda text: "\n".join(text.strip().splitlines()[-12:])
    return (f"$ edge-pipeline {' '.join(outcome.argv)}\n(exit {outcome.returncode}, {outcome.seconds:.1f} s)\n"
            f"--- stderr (tail) ---\n{tail(outcome.stderr)}\n--- stdout (tail) ---\n{tail(outcome.stdout)}")


# ---------------------------------------------------------------------------------------------------
# Helpers for setups


def make_read_only(sandbox: Sandbox, folder: Path) -> None:
    """Make `folder` refuse new entries, even for root (chattr +i), and undo it at teardown."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        sandbox.cleanups.append(lambda: subprocess.run(["chattr", "-i", str(folder)], check=False))
    else:
        folder.chmod(0o555)
        sandbox.cleanups.append(lambda: folder.chmod(0o755))


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target
