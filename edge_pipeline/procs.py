"""Child processes that die with us, and temp folders that do not outlive us.

Every subprocess the tool starts goes through `spawn` (streamed) or `run` (captured):
- it gets its own session and process group, so a timeout, an error or our exit kills the child
  *and everything it started* (one `killpg`);
- on Linux it gets the parent-death signal (`PR_SET_PDEATHSIG` = SIGKILL): even a `kill -9` of this
  process, which runs no cleanup at all, takes the child down. The kernel sends it when the *thread*
  that started the child exits, so start children from a thread that outlives them (`run` blocks
  its caller until the child is gone, which satisfies this by construction);
- `run` captures at most the last `max_output` bytes of stdout and of stderr.

Signals: `signal_handlers()` turns SIGTERM and SIGHUP into a `Terminated` exception (SIGINT into
KeyboardInterrupt, as usual) in the main thread, so `finally` blocks run: children are killed and
temp folders removed. A second signal during that cleanup is ignored.

Temp folders: `temp_dir(kind)` makes `$TMPDIR/edge-pipeline-<kind>-<pid>-<random>`, removed on exit,
on errors and on those signals. For `kill -9`, which runs no cleanup, a small reaper child (started
with the first temp folder) gets SIGTERM as its parent-death signal and removes them; should that
fail too (the reaper itself killed), `sweep_stale_temp_dirs` (run at every CLI start) removes folders
whose name matches that pattern exactly, that are real directories (not symlinks) owned by this user,
and whose owner PID is dead (or now belongs to a process started after the folder was last written).
Nothing else is ever touched.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
MAX_OUTPUT = 4 << 20  # bytes kept per captured stream (the tail: errors and results come last)
MAX_LINE = 1 << 20  # a streamed "line" longer than this is cut
# After the child exits, how long its descendants may keep our pipes open before the group is killed.
EXIT_GRACE_S = 1.0

TEMP_PREFIX = "edge-pipeline-"
_KIND = re.compile(r"[a-z0-9]+")
# tempfile's random part: 8 characters of [a-z0-9_]
_TEMP_NAME = re.compile(r"edge-pipeline-[a-z0-9]+-(?P<pid>[1-9][0-9]{0,9})-[a-z0-9_]{8}")

_PR_SET_PDEATHSIG = 1
_prctl_function: Any = None
_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()
_temp_dirs: set[Path] = set()


# ---------------------------------------------------------------------------------------------
# Starting children


def _prctl() -> Any:
    """libc's prctl, resolved in the parent (the child, between fork and exec, must not load anything)."""
    global _prctl_function
    if _prctl_function is None and sys.platform.startswith("linux"):
        function: Any = False
        try:
            function = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):  # pragma: no cover - not glibc/musl
            pass
        else:
            function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
            function.restype = ctypes.c_int
        _prctl_function = function
    return _prctl_function or None


def _child_setup(parent_pid: int, death_signal: int = signal.SIGKILL) -> Callable[[], None]:
    """Runs in the child between fork and exec: ask for `death_signal` when the parent dies. If the
    parent already died before that request, no signal will ever come: exit at once."""
    prctl = _prctl()
    signum = int(death_signal)

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(137)

    return setup


def spawn(
    cmd: Sequence[str], *, cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None,
    stdin: int | IO[Any] | None = DEVNULL, stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
) -> subprocess.Popen:
    """Start `cmd` (a list, never a shell) in its own process group with the parent-death signal.
    The caller must end it with `finish` (normal end) or `stop` (kill), or use `spawned`."""
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, close_fds=True,
        start_new_session=True, preexec_fn=_child_setup(os.getpid()),
    )
    with _live_lock:
        _live.add(proc)
    return proc


@contextmanager
def spawned(cmd: Sequence[str], **kwargs: Any) -> Iterator[subprocess.Popen]:
    """`spawn`, and `stop` on the way out whatever happened (a no-op after `finish`)."""
    proc = spawn(cmd, **kwargs)
    try:
        yield proc
    finally:
        stop(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to the child's process group. Only while the child is not reaped: until then its PID,
    which is also the group's ID, cannot be reused by an unrelated process."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _close_pipes(proc: subprocess.Popen) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def _forget(proc: subprocess.Popen) -> None:
    with _live_lock:
        _live.discard(proc)


def _leader_exited(proc: subprocess.Popen) -> bool:
    """Has the child exited? Asked without reaping it (WNOWAIT), so its group ID stays ours."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def finish(proc: subprocess.Popen) -> int:
    """Wait for the child to exit, kill whatever it left running in its group, reap it: its code."""
    if proc.returncode is None:
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        _kill_group(proc)
    code = proc.wait()
    _close_pipes(proc)
    _forget(proc)
    return code


def stop(proc: subprocess.Popen) -> None:
    """Kill the child and its whole group now (if still there) and reap it."""
    _kill_group(proc)
    proc.wait()
    _close_pipes(proc)
    _forget(proc)


@atexit.register
def _stop_all() -> None:
    """Last line of defence at interpreter exit: no child of ours outlives us."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        stop(proc)


# ---------------------------------------------------------------------------------------------
# Reading children's output with a deadline


class _Tail:
    """The last `limit` bytes written to it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, block: bytes) -> None:
        self.data += block
        if len(self.data) > 2 * self.limit:  # trim in batches: amortized O(1) per byte
            del self.data[: len(self.data) - self.limit]

    def value(self) -> bytes:
        return bytes(self.data[-self.limit:]) if self.limit else b""


class _Pump:
    """Moves bytes between us and a child, one `select` round per `step()`: feeds `stdin_data`, hands
    every block read from the child's pipes to its sink, and is `done` when all pipes are closed.
    When the child has exited but something it started still holds a pipe open, the group is killed
    after EXIT_GRACE_S. Past `deadline`, `step` raises subprocess.TimeoutExpired (the caller stops
    the child)."""

    def __init__(self, proc: subprocess.Popen, deadline: float, sinks: Mapping[int, Callable[[bytes], None]],
                 stdin_data: bytes | None = None) -> None:
        self.proc, self.deadline, self.sinks = proc, deadline, sinks
        self.pending = memoryview(stdin_data or b"")
        self.exited_at: float | None = None
        self.selector = selectors.DefaultSelector()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None and stream.fileno() in sinks:
                self.selector.register(stream, selectors.EVENT_READ)
        if proc.stdin is not None:
            if self.pending:
                os.set_blocking(proc.stdin.fileno(), False)
                self.selector.register(proc.stdin, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        self.done = False
        self._check_done()

    def step(self) -> None:
        now = time.monotonic()
        if now >= self.deadline:
            raise subprocess.TimeoutExpired(self.proc.args, 0)
        if self.exited_at is None and _leader_exited(self.proc):
            self.exited_at = now
        if self.exited_at is not None and now - self.exited_at > EXIT_GRACE_S:
            _kill_group(self.proc)  # the pipes close when the last holder dies
        for key, _ in self.selector.select(min(self.deadline - now, 0.25)):
            if key.fileobj is self.proc.stdin:
                self._write(key)
                continue
            block = os.read(key.fd, 1 << 16)
            if block:
                self.sinks[key.fd](block)
            else:
                self.selector.unregister(key.fileobj)
        self._check_done()

    def _write(self, key: selectors.SelectorKey) -> None:
        try:
            written = os.write(key.fd, self.pending[: 1 << 16])
        except BrokenPipeError:  # the child stopped reading: its exit code will tell
            written = len(self.pending)
        self.pending = self.pending[written:]
        if not self.pending:
            self.selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]

    def _check_done(self) -> None:
        if not self.selector.get_map():
            self.selector.close()
            self.done = True


def run(
    cmd: Sequence[str], *, timeout: float, input: bytes | None = None, cwd: str | os.PathLike | None = None,
    env: dict[str, str] | None = None, text: bool = True, max_output: int = MAX_OUTPUT,
) -> subprocess.CompletedProcess:
    """Run `cmd` to the end (see `spawn`) and capture the tail of its stdout and stderr. Raises
    FileNotFoundError when the program does not exist and subprocess.TimeoutExpired after `timeout`
    seconds (the whole group is killed first); any exception here (a signal) kills it too."""
    deadline = time.monotonic() + timeout
    proc = spawn(cmd, cwd=cwd, env=env, stdin=PIPE if input is not None else DEVNULL, stdout=PIPE, stderr=PIPE)
    out, err = _Tail(max_output), _Tail(max_output)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        pump = _Pump(proc, deadline, {proc.stdout.fileno(): out.add, proc.stderr.fileno(): err.add}, input)
        try:
            while not pump.done:
                pump.step()
        finally:
            pump.selector.close()
        code = finish(proc)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise subprocess.TimeoutExpired(list(cmd), timeout, _decode(out.value(), text), _decode(err.value(), text)) from None
    except BaseException:
        stop(proc)
        raise
    return subprocess.CompletedProcess(list(cmd), code, _decode(out.value(), text), _decode(err.value(), text))


def _decode(data: bytes, text: bool) -> Any:
    return data.decode("utf-8", errors="replace") if text else data


def stream_lines(proc: subprocess.Popen, timeout: float) -> Iterator[str]:
    """The stdout of a `spawn`ed child, line by line as it comes (decoded, newline kept), for at most
    `timeout` seconds from now (then subprocess.TimeoutExpired; stopping the child is the caller's
    job, e.g. with `spawned`). Its stderr, if a pipe, is drained and dropped: send it to a file to
    keep it. Ends when the child and everything holding its stdout have exited."""
    assert proc.stdout is not None
    lines: list[bytes] = []
    partial = bytearray()

    def collect(block: bytes) -> None:
        partial.extend(block)
        while (cut := partial.find(b"\n")) >= 0:
            lines.append(bytes(partial[: cut + 1]))
            del partial[: cut + 1]
        if len(partial) > MAX_LINE:  # no newline in sight: hand over what we have
            lines.append(bytes(partial))
            partial.clear()

    sinks = {proc.stdout.fileno(): collect}
    if proc.stderr is not None:
        sinks[proc.stderr.fileno()] = lambda block: None
    pump = _Pump(proc, time.monotonic() + timeout, sinks)
    try:
        while not pump.done:
            pump.step()
            while lines:
                yield lines.pop(0).decode("utf-8", errors="replace")
    finally:
        pump.selector.close()
    if partial:
        yield partial.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# Signals


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so that cleanup runs as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


_HANDLED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
_signalled = False


def _on_signal(signum: int, frame: Any) -> None:
    global _signalled
    if _signalled:
        return  # cleanup from the first signal is running: let it finish
    _signalled = True
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


@contextmanager
def signal_handlers() -> Iterator[None]:
    """Within: SIGTERM/SIGHUP raise `Terminated`, SIGINT KeyboardInterrupt (each once). The previous
    handlers come back on the way out. Outside the main thread this does nothing."""
    global _signalled
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in _HANDLED}
    _signalled = False
    for signum in _HANDLED:
        signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


# ---------------------------------------------------------------------------------------------
# Temp folders


def temp_root() -> Path:
    return Path(tempfile.gettempdir())


# The reaper: a tiny child that waits for this process to die (however it dies: the parent-death
# signal is SIGTERM for it) and then removes this process's temp folders, so even `kill -9` of a run
# leaves none behind. It matches the same exact names as `sweep_stale_temp_dirs`, for our PID only.
_REAPER = r"""
import os, re, shutil, signal, sys
parent, root = int(sys.argv[1]), sys.argv[2]
name = re.compile(r"edge-pipeline-[a-z0-9]+-%d-[a-z0-9_]{8}" % parent)
def reap(*_):
    for entry in os.scandir(root):
        if name.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
    os._exit(0)
signal.signal(signal.SIGTERM, reap)
signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    signal.pause()
"""
_reaper: subprocess.Popen | None = None


def _start_reaper() -> None:
    """Once per process (from the thread that makes temp folders, normally the main thread)."""
    global _reaper
    if _reaper is not None and _reaper.poll() is None:
        return
    _reaper = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _REAPER, str(os.getpid()), str(temp_root())],
        stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL, close_fds=True, start_new_session=True,
        preexec_fn=_child_setup(os.getpid(), signal.SIGTERM),
    )


@contextmanager
def temp_dir(kind: str) -> Iterator[Path]:
    """A private folder `$TMPDIR/edge-pipeline-<kind>-<pid>-<random>` (mode 700), removed on the way
    out (errors and signals included; see `sweep_stale_temp_dirs` for kill -9)."""
    if not _KIND.fullmatch(kind):
        raise ValueError(f"temp folder kind must match {_KIND.pattern}: {kind!r}")
    if threading.current_thread() is threading.main_thread():
        _start_reaper()
    path = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{kind}-{os.getpid()}-"))
    _temp_dirs.add(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        _temp_dirs.discard(path)


@atexit.register
def _remove_temp_dirs() -> None:
    for path in list(_temp_dirs):
        match = _TEMP_NAME.fullmatch(path.name)
        if match and int(match["pid"]) == os.getpid():  # not a forked copy's view of the parent's set
            shutil.rmtree(path, ignore_errors=True)


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch, ~1 s precision), or None if unknown."""
    boot = _boot_time()
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read(4096)
        # The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
        fields = text[text.rindex(b")") + 2:].split()
        ticks = int(fields[19])  # field 22, starttime, in clock ticks since boot
    except (OSError, ValueError, IndexError):
        return None
    return None if boot is None else boot + ticks / os.sysconf("SC_CLK_TCK")


def owner_alive(pid: int, folder_mtime: float) -> bool:
    """Could process `pid` still own a folder last modified at `folder_mtime`? False only when
    certain: no such process, or the process with that PID started after the folder was written
    (a recycled PID; the 2 s margin covers the coarse clocks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    started = process_start_time(pid)
    return started is None or started <= folder_mtime + 2.0


def sweep_stale_temp_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove temp folders left behind by dead edge-pipeline processes (see the module docstring for
    the rules); returns what was removed. Never raises for a folder it cannot inspect or remove."""
    root = Path(root) if root is not None else temp_root()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    uid = os.getuid()
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        path = Path(entry.path)
        if match is None or path in _temp_dirs:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
            continue
        if owner_alive(int(match["pid"]), info.st_mtime):
            continue
        # rmtree never follows symlinks inside the folder (fd-based on Linux) and refuses a symlink here.
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            removed.append(path)
    return removed
