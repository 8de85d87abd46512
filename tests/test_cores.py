"""The cores lock: compute stages share the cores, a timed stage has them alone and is not starved."""

from __future__ import annotations

import subprocess
import sys
import threading

from edge_pipeline.cores import CoresLock

HOLD = """
import sys
from edge_pipeline.cores import CoresLock
with CoresLock(sys.argv[1]).hold(exclusive=sys.argv[2] == "exclusive"):
    print("held", flush=True)
    sys.stdin.read()
"""


def holder(path, mode):
    """A process that takes the lock and keeps it until its stdin closes; `proc.held` is set once it has it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    proc.held = threading.Event()

    def watch():
        if proc.stdout.readline().strip() == "held":
            proc.held.set()

    threading.Thread(target=watch, daemon=True).start()
    return proc


def acquired(proc, timeout=30.0) -> bool:
    """Does `proc` hold the lock (waiting up to `timeout`)?"""
    return proc.held.wait(timeout)


def release(proc):
    proc.stdin.close()
    proc.wait(30)


def test_shared_holders_run_together_and_a_timed_stage_waits_for_them(tmp_path):
    path = tmp_path / "cores.lock"
    procs = []
    try:
        a = holder(path, "shared")
        procs.append(a)
        assert acquired(a)
        b = holder(path, "shared")
        procs.append(b)
        assert acquired(b)  # two compute stages at once
        timed = holder(path, "exclusive")
        procs.append(timed)
        assert not acquired(timed, 0.5)
        release(a)
        assert not acquired(timed, 0.5)  # b still computes
        release(b)
        assert acquired(timed)
        release(timed)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_waiting_timed_stage_is_not_overtaken_by_new_compute_stages(tmp_path):
    path = tmp_path / "cores.lock"
    procs = []
    try:
        first = holder(path, "shared")
        procs.append(first)
        assert acquired(first)
        timed = holder(path, "exclusive")
        procs.append(timed)
        assert not acquired(timed, 0.5)
        late = holder(path, "shared")  # arrives while the timed stage waits: must queue behind it
        procs.append(late)
        assert not acquired(late, 0.5)
        release(first)
        assert acquired(timed)
        assert not acquired(late, 0.5)  # never while the timed stage measures
        release(timed)
        assert acquired(late)
        release(late)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_in_process_use(tmp_path):
    lock = CoresLock(tmp_path / "cores.lock")
    with lock.hold(exclusive=False):
        pass
    with lock.hold(exclusive=True):
        pass
