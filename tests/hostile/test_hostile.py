"""Every hostile case through the real CLI: exit code, one `error:` line, no traceback, no file changed
outside the run folder, no injected command run, no process or temp folder left behind (issue 11)."""

from __future__ import annotations

import pytest

from . import cases_devices, cases_images, cases_models, cases_recipes, cases_runs, cases_signals, cases_tflite
from .harness import Case, describe, problems, run_case

MODULES = (cases_recipes, cases_devices, cases_models, cases_tflite, cases_images, cases_runs, cases_signals)
CASES: list[Case] = [case for module in MODULES for case in module.CASES]


def _param(case: Case):
    marks = [pytest.mark.slow] if case.slow else []
    return pytest.param(case, id=case.id, marks=marks)


def test_case_ids_are_unique_and_every_class_is_covered():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    kinds = {c.kind for c in CASES}
    assert kinds == {"recipes", "devices", "models", "tflite", "images", "runs", "signals"}
    assert len(CASES) >= 50


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_case(case: Case, sandbox):
    outcome = run_case(case, sandbox)
    found = problems(case, outcome, sandbox)
    # The first line lists every broken promise, so pytest's one-line summary routes the failure.
    assert not found, "; ".join(found) + "\n" + describe(outcome)
