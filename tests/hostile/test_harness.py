"""The harness itself: each promise it checks is shown to catch a command that breaks it (a small Python
program stands in for the CLI), and a well-behaved command passes."""

from __future__ import annotations

import sys

import pytest

from .harness import Case, problems, run_cli

PYTHON = [sys.executable, "-c"]

BEHAVES = "import sys; print('error: bad.yaml:1: seed: must be an integer; fix it', file=sys.stderr); sys.exit(2)"
BREAKS = {
    "exit code": "import sys; print('error: x', file=sys.stderr); sys.exit(1)",
    "traceback": "raise ValueError('boom')",
    "'error:' lines": "import sys; print('error: a\\nerror: b', file=sys.stderr); sys.exit(2)",
    "injected command ran": "import os, sys; open(os.environ['HOME'] + '/../pwned', 'w').close(); "
                            "print('error: x', file=sys.stderr); sys.exit(2)",
    "files changed": "import os, sys; open(os.environ['HOME'] + '/notes', 'a').write('!'); "
                     "print('error: x', file=sys.stderr); sys.exit(2)",
    "processes left behind": "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
                             "start_new_session=True); print('error: x', file=sys.stderr); sys.exit(2)",
    "temp entries left": "import sys, tempfile; tempfile.mkdtemp(prefix='edge-pipeline-convert-'); "
                         "print('error: x', file=sys.stderr); sys.exit(2)",
    "does not name": "import sys; print('error: something is wrong', file=sys.stderr); sys.exit(2)",
}


def _case(sandbox) -> Case:
    sandbox.victim(sandbox.home / "notes", "keep me\n")
    return Case("self-test", "recipes", lambda s: [], 2, error_has=("bad.yaml",), timeout_s=30)


def test_a_well_behaved_command_passes(sandbox):
    case = _case(sandbox)
    outcome = run_cli(case, sandbox, [BEHAVES], command=PYTHON)
    assert problems(case, outcome, sandbox) == []


@pytest.mark.parametrize("promise", sorted(BREAKS))
def test_each_broken_promise_is_caught(sandbox, promise):
    case = _case(sandbox)
    outcome = run_cli(case, sandbox, [BREAKS[promise]], command=PYTHON)
    found = problems(case, outcome, sandbox)
    assert any(promise in p for p in found), found


def test_a_case_that_hangs_is_killed(sandbox):
    case = Case("self-test-hang", "recipes", lambda s: [], 2, timeout_s=2)
    outcome = run_cli(case, sandbox, ["import time; time.sleep(60)"], command=PYTHON)
    assert outcome.timed_out
    assert any("did not finish" in p for p in problems(case, outcome, sandbox))
