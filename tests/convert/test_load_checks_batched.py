"""Load tests of several files share one subprocess (issue 13) and say the same as one at a time;
a file that crashes the runtime is located and does not hide the verdict on the others."""

from __future__ import annotations

import shutil
import sys
import textwrap

import pytest

from edge_pipeline.convert.compat import check_device, check_device_models, load_test, load_tests
from edge_pipeline.profiling.devices import get_device

# Runs the loader as the runtime's Python would, but dies of SIGSEGV when it starts loading a file
# whose name contains "crash" (what a broken model does to a real runtime), and counts its starts.
CRASHING_PYTHON = textwrap.dedent("""\
    #!{python}
    import builtins, json, os, signal, sys
    with open({starts!r}, "a") as fh:
        fh.write("start\\n")
    code, argv = sys.argv[2], sys.argv[3:]
    models = argv[2:]
    real_print = builtins.print

    def print(*args, **kwargs):
        fields = json.loads(args[0])
        if fields.get("phase") == "load" and "crash" in models[fields["model"]]:
            real_print(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGSEGV)
        real_print(*args, **kwargs)

    sys.argv = ["-c", *argv]
    exec(compile(code, "<loader>", "exec"), {{"print": print, "__name__": "__main__"}})
""")


@pytest.mark.slow
def test_a_crash_is_located_and_the_files_after_it_are_still_checked(all_precisions, tmp_path):
    crash = tmp_path / "crash.tflite"
    shutil.copyfile(all_precisions.files["float32"], crash)
    starts = tmp_path / "starts.txt"
    python = tmp_path / "python"
    python.write_text(CRASHING_PYTHON.format(python=sys.executable, starts=str(starts)))
    python.chmod(0o755)
    files = [all_precisions.files["float32"], crash, all_precisions.files["int8"]]
    first, crashed, last = load_tests(str(python), "ai-edge-litert", files)
    assert first == {"ok": True} and last == {"ok": True}
    assert not crashed["ok"] and crashed["phase"] == "load" and "signal 11" in crashed["error"]
    assert starts.read_text().count("start") == 2  # once for all, once more for the file after the crash


@pytest.mark.slow
def test_batched_checks_say_what_single_checks_say(all_precisions):
    files = [all_precisions.files[p] for p in ("float32", "int8", "int16x8")]
    assert load_tests(sys.executable, "ai-edge-litert", files, reference=True) == [
        load_test(sys.executable, "ai-edge-litert", f, reference=True) for f in files]
    host = get_device("host")
    assert [c.to_dict() for c in check_device_models(files, host)] == [check_device(f, host).to_dict() for f in files]
    assert check_device_models([], host) == []
