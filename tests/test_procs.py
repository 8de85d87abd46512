"""No orphans, no leftovers (issue 11.9): children die with their parent (process group, parent-death
signal), temp folders go on exit and signals, and stale ones are swept at the next start. Real
processes and signals throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge_pipeline import procs

from .processes import alive, children_of, cmdline, gone_within, wait_for

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# helpers


def python_parent(script: str, tmp_path: Path, **env: str) -> subprocess.Popen:
    """A real parent process running `script` with this checkout importable."""
    path = tmp_path / "parent.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env})


def cli(*args: str, cwd: Path, tmpdir: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmpdir)}
    return subprocess.Popen([sys.executable, "-m", "edge_pipeline.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def our_temp_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(procs.TEMP_PREFIX))


# ---------------------------------------------------------------------------------------------
# children die with their parent


def test_a_spawned_child_dies_when_its_parent_is_killed_with_sigkill(tmp_path):
    parent = python_parent("""
        import time
        from edge_pipeline import procs
        child = procs.spawn(["sleep", "60"])
        print(child.pid, flush=True)
        time.sleep(60)
    """, tmp_path)
    child = int(parent.stdout.readline())
    try:
        assert alive(child) and os.getpgid(child) == child  # running, in its own process group
        parent.kill()  # SIGKILL: the parent runs no cleanup at all
        parent.wait()
        assert gone_within(child, 2.0), "the child outlived its SIGKILLed parent"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_child_run_to_completion_dies_when_its_parent_is_killed(tmp_path):
    parent = python_parent("""
        from edge_pipeline import procs
        procs.run(["sh", "-c", "echo $$; exec sleep 60"], timeout=120)
    """, tmp_path)
    shell = wait_for(lambda: [p for p in children_of(parent.pid) if "sleep" in cmdline(p)], 10, "the child")[0]
    parent.kill()
    parent.wait()
    assert gone_within(shell, 2.0)


def test_a_timeout_kills_the_whole_group_grandchildren_included():
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as info:
        procs.run(["sh", "-c", "sleep 60 & echo $!; wait"], timeout=1)
    assert time.monotonic() - started < 10
    grandchild = int(info.value.output.split()[0])
    assert gone_within(grandchild, 2.0)


def test_what_a_child_leaves_running_is_killed_when_it_exits():
    result = procs.run(["sh", "-c", "sleep 60 & echo $!"], timeout=30)
    assert result.returncode == 0
    assert gone_within(int(result.stdout.split()[0]), 2.0)


def test_run_captures_bounded_output_feeds_stdin_and_reports_exit_codes():
    earlier = set(procs._live)  # other tests' children are theirs to account for
    result = procs.run([sys.executable, "-c", "import sys; data = sys.stdin.buffer.read(); "
                        "sys.stdout.write('x' * 100000 + str(len(data))); sys.stderr.write('bad'); sys.exit(3)"],
                       timeout=30, input=b"y" * 300_000, max_output=1000)
    assert result.returncode == 3 and result.stderr == "bad"
    assert len(result.stdout) == 1000 and result.stdout.endswith("x300000")  # the tail is kept
    with pytest.raises(FileNotFoundError):
        procs.run(["/nonexistent/program"], timeout=5)
    assert procs._live <= earlier  # every child of this test was reaped


def test_stream_lines_yields_lines_as_they_come_and_stops_at_the_deadline():
    with procs.spawned([sys.executable, "-u", "-c", "import time\nfor i in range(3):\n    print(i)\n    time.sleep(0.1)"],
                       stdout=procs.PIPE) as proc:
        assert list(procs.stream_lines(proc, 30)) == ["0\n", "1\n", "2\n"]
        assert procs.finish(proc) == 0
    with procs.spawned(["sh", "-c", "echo first; exec sleep 60"], stdout=procs.PIPE) as proc:
        lines = []
        with pytest.raises(subprocess.TimeoutExpired):
            for line in procs.stream_lines(proc, 1):
                lines.append(line)
        pid = proc.pid
    assert lines == ["first\n"] and gone_within(pid, 2.0)  # `spawned` killed it on the way out


# ---------------------------------------------------------------------------------------------
# signals and temp folders


def test_sigterm_raises_so_temp_folders_are_removed_and_children_killed(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    parent = python_parent("""
        import sys
        from edge_pipeline import procs
        try:
            with procs.signal_handlers(), procs.temp_dir("test") as folder:
                (folder / "work.bin").write_bytes(b"x")
                procs.run(["sh", "-c", "echo $$ > " + str(folder / "child.pid") + "; exec sleep 60"], timeout=120)
        except procs.Terminated as exc:
            print("terminated", exc.signum, flush=True)
            sys.exit(128 + exc.signum)
    """, tmp_path, TMPDIR=str(tmpdir))
    folder = wait_for(lambda: [p for p in tmpdir.iterdir() if (p / "child.pid").is_file()
                               and (p / "child.pid").read_text().strip()], 10, "the temp folder")[0]
    assert folder.name.startswith(f"edge-pipeline-test-{parent.pid}-")
    child = int((folder / "child.pid").read_text())
    parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=30)
    assert parent.returncode == 128 + signal.SIGTERM and out.strip() == f"terminated {int(signal.SIGTERM)}"
    assert our_temp_dirs(tmpdir) == []
    assert gone_within(child, 2.0)


def test_signal_handlers_are_restored_afterwards():
    before = signal.getsignal(signal.SIGTERM)
    with procs.signal_handlers():
        assert signal.getsignal(signal.SIGTERM) is procs._on_signal
    assert signal.getsignal(signal.SIGTERM) is before


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_sweep_removes_only_our_folders_of_dead_owners(tmp_path):
    root = tmp_path / "tmp"
    root.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    dead = dead_pid()
    assert not alive(dead)

    def folder(name: str) -> Path:
        path = root / name
        path.mkdir()
        (path / "inside").mkdir()
        (path / "inside" / "file.bin").write_bytes(b"x" * 100)
        return path

    stale = folder(f"edge-pipeline-convert-{dead}-abcd_123")
    live = folder(f"edge-pipeline-convert-{os.getpid()}-abcd_123")
    # A PID now held by a process that started after the folder was last written: the owner is dead.
    recycled = folder(f"edge-pipeline-profile-{os.getpid()}-zzzz9999")
    started = procs.process_start_time(os.getpid())
    assert started is not None
    os.utime(recycled, (started - 3600, started - 3600))
    foreign = [folder(f"edge-pipeline-convert-{dead}-short"), folder("edge-pipeline-convert-abcd1234"),
               folder(f"edge-pipeline-Convert-{dead}-abcd1234"), folder(f"other-{dead}-abcd1234"),
               folder(f"edge-pipeline-convert-{dead}-abcd1234.bak")]
    link = root / f"edge-pipeline-convert-{dead}-link0000"
    link.symlink_to(victim, target_is_directory=True)
    plain_file = root / f"edge-pipeline-convert-{dead}-file0000"
    plain_file.write_text("not a folder")
    others = []
    if os.geteuid() == 0:  # another user's folder (root can make one): never ours to remove
        others.append(folder(f"edge-pipeline-convert-{dead}-other000"))
        os.chown(others[0], 65534, 65534)

    removed = procs.sweep_stale_temp_dirs(root)

    assert sorted(removed) == sorted([stale, recycled])
    assert not stale.exists() and not recycled.exists()
    for kept in [live, *foreign, *others]:
        assert (kept / "inside" / "file.bin").is_file(), kept
    assert link.is_symlink() and (victim / "precious.txt").read_text() == "keep me"
    assert plain_file.read_text() == "not a folder"


def test_the_sweep_of_a_missing_root_does_nothing(tmp_path):
    assert procs.sweep_stale_temp_dirs(tmp_path / "nope") == []


def test_temp_dir_kinds_are_plain_words():
    with pytest.raises(ValueError), procs.temp_dir("../x"):
        pass


# ---------------------------------------------------------------------------------------------
# the CLI: profiling interrupted by SIGTERM or kill -9


def relu_tflite(path: Path) -> Path:
    """A one-op TFLite model (RELU on [1, 8]), built with the flatbuffer schema: no converter needed."""
    from edge_pipeline.convert.flatbuffer import schema, write_model

    s = schema()
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.RELU
    code.version = 1
    tensors = []
    for index, name in enumerate(("x", "y")):
        tensor = s.TensorT()
        tensor.shape, tensor.type, tensor.buffer, tensor.name = [1, 8], s.TensorType.FLOAT32, index + 1, name
        tensors.append(tensor)
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    subgraph = s.SubGraphT()
    subgraph.tensors, subgraph.inputs, subgraph.outputs, subgraph.operators = tensors, [0], [1], [op]
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [subgraph]
    model.buffers = [s.BufferT(), s.BufferT(), s.BufferT()]
    path.write_bytes(write_model(model))
    return path


def slow_host_device(path: Path) -> Path:
    """The host device, measuring for at least 30 s: long enough to interrupt."""
    path.write_text(
        "name: slowhost\ndescription: host, long measurement\narch: x86_64\ntransport: {kind: local}\n"
        "runtime: {name: ai-edge-litert}\nthreads: 1\n"
        "budget: {warmup_runs: 1, min_runs: 10, min_seconds: 30.0, max_seconds: 60.0, max_rel_std: 0.9}\n"
    )
    return path


def start_profile(tmp_path: Path) -> tuple[subprocess.Popen, int, Path]:
    """`edge-pipeline profile` running its agent: (cli process, agent pid, TMPDIR)."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    model = relu_tflite(tmp_path / "relu.tflite")
    device = slow_host_device(tmp_path / "slowhost.yaml")
    run = cli("profile", str(model), "--device-file", str(device), cwd=tmp_path, tmpdir=tmpdir)
    agents = wait_for(lambda: [p for p in children_of(run.pid) if "agent.py" in cmdline(p)], 60, "the agent")
    assert len(our_temp_dirs(tmpdir)) == 1
    return run, agents[0], tmpdir


def test_sigterm_during_profiling_leaves_no_agent_and_no_temp_folder(tmp_path):
    run, agent, tmpdir = start_profile(tmp_path)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("terminated (SIGTERM)")
    assert gone_within(agent, 2.0)
    assert our_temp_dirs(tmpdir) == []


def test_kill_9_during_profiling_kills_the_agent_and_the_reaper_removes_the_folder(tmp_path):
    run, agent, tmpdir = start_profile(tmp_path)
    run.kill()
    run.wait()
    assert gone_within(agent, 2.0)
    deadline = time.monotonic() + 5
    while our_temp_dirs(tmpdir) and time.monotonic() < deadline:  # the reaper gets SIGTERM as run dies
        time.sleep(0.05)
    assert our_temp_dirs(tmpdir) == []
