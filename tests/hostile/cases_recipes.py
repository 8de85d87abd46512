"""Hostile recipes: `validate` must answer every one with one `error:` line and exit 2, quickly and in
bounded memory, without running anything a YAML tag names."""

from __future__ import annotations

import os

from .builders import VALID_RECIPE, alias_bomb, fifo, merge_bomb
from .harness import Case, Sandbox

BOUNDED_MB = 1024  # validate imports neither torch nor tensorflow: far below this when it is bounded


def _validate(content, extra: tuple[str, ...] = ()):
    """A setup writing `bad.yaml` (text, bytes, or a function of the sandbox) and validating it."""

    def setup(sandbox: Sandbox) -> list[str]:
        body = content(sandbox) if callable(content) else content
        sandbox.write("bad.yaml", body)
        return ["validate", "bad.yaml", *extra]

    return setup


def _bad(id: str, content, *, extra: tuple[str, ...] = (), error_has: tuple[str, ...] = ("bad.yaml",), **kw) -> Case:
    return Case(id, "recipes", _validate(content, extra), 2, error_has=error_has, timeout_s=kw.pop("timeout_s", 30), **kw)


def _validate_set(override):
    """A setup validating a good recipe with one hostile `--set` (a function of the sandbox)."""

    def setup(sandbox: Sandbox) -> list[str]:
        sandbox.write("ok.yaml", VALID_RECIPE)
        return ["validate", "ok.yaml", "--set", override(sandbox)]

    return setup


def _replace(old: str, new: str) -> str:
    assert old in VALID_RECIPE, old
    return VALID_RECIPE.replace(old, new)


def _symlink_to_dev_zero(sandbox: Sandbox) -> list[str]:
    os.symlink("/dev/zero", sandbox.work / "bad.yaml")
    return ["validate", "bad.yaml"]


def _fifo(sandbox: Sandbox) -> list[str]:
    fifo(sandbox.work / "bad.yaml")
    return ["validate", "bad.yaml"]


DEEP = 10_000

CASES = [
    # Issue 11.7: nine nested aliases expand to 9**9 leaves; loading must refuse or bound it.
    # Each bomb sits under one unknown key, so a bounded loader has exactly one thing to report.
    _bad("recipe-alias-bomb", VALID_RECIPE + "bomb:\n" + alias_bomb(indent="  "), memory_limit_mb=BOUNDED_MB),
    _bad("recipe-alias-bomb-in-stage",
         _replace("- train: {epochs: 1}", "- train:\n      epochs: 1\n      bomb:\n" + alias_bomb(indent="        ")),
         memory_limit_mb=BOUNDED_MB),
    _bad("recipe-merge-key-bomb", VALID_RECIPE + "bomb:\n" + merge_bomb(indent="  "), memory_limit_mb=BOUNDED_MB),
    # Issue 11.8: a NUL byte and 10,000-deep nesting are bad input, not a traceback.
    _bad("recipe-nul-byte", _replace("name: hostile", "name: host\0ile")),
    _bad("recipe-deep-flow-sequence", _replace("stages:\n  - train: {epochs: 1}\n", "stages: " + "[" * DEEP + "]" * DEEP + "\n")),
    _bad("recipe-deep-flow-mapping", _replace("model: {arch: vgg_small}", "model: " + "{a: " * DEEP + "1" + "}" * DEEP)),
    _bad("recipe-deep-block-sequence", VALID_RECIPE + "extra:\n" + "".join(" " * i + "-\n" for i in range(1, 2000))),
    # YAML tags never construct Python objects (the marker proves nothing ran).
    _bad("recipe-python-object-apply", lambda s: _replace("seed: 0", f'seed: !!python/object/apply:os.system ["{s.inject}"]')),
    _bad("recipe-python-name", _replace("arch: vgg_small", "arch: !!python/name:os.system")),
    _bad("recipe-unknown-local-tag", _replace("seed: 0", "seed: !secret 3")),
    Case("recipe-set-python-tag", "recipes", _validate_set(lambda s: f'seed=!!python/object/apply:os.system ["{s.inject}"]'),
         2, error_has=("seed",), timeout_s=30),
    # Duplicate keys hide typos; both are reported with their lines.
    _bad("recipe-duplicate-top-key", VALID_RECIPE + "seed: 1\n"),
    _bad("recipe-duplicate-stage-key", _replace("{epochs: 1}", "{epochs: 1, epochs: 2}")),
    # Values that pass a type check but not the machine: validate catches them, not run (issue 11.8).
    _bad("recipe-seed-2-pow-32", _replace("seed: 0", f"seed: {2**32}")),
    _bad("recipe-seed-huge", _replace("seed: 0", f"seed: {10**40}")),
    _bad("recipe-name-300-bytes", _replace("name: hostile", "name: " + "a" * 300)),
    _bad("recipe-stage-name-300-bytes", _replace("{epochs: 1}", "{epochs: 1, name: " + "t" * 300 + "}")),
    _bad("recipe-name-path-traversal", _replace("name: hostile", "name: ../../escape")),
    Case("recipe-set-name-path-traversal", "recipes", _validate_set(lambda s: "name=../../escape"),
         2, error_has=("name",), timeout_s=30),
    # Wrong types and shapes.
    _bad("recipe-epochs-not-a-number", _replace("{epochs: 1}", "{epochs: ten}")),
    _bad("recipe-lr-nan", _replace("{epochs: 1}", "{epochs: 1, lr: .nan}")),
    _bad("recipe-epochs-inf", _replace("{epochs: 1}", "{epochs: .inf}")),
    _bad("recipe-stages-mapping", _replace("stages:\n  - train: {epochs: 1}\n", "stages: {train: {epochs: 1}}\n")),
    _bad("recipe-not-a-mapping", "- name: hostile\n- seed: 0\n"),
    # Unknown keys whose names look like pydantic's own location tags (found by test_fuzz.py).
    _bad("recipe-unknown-key-with-bracket", VALID_RECIPE + '"x[": 1\n'),
    _bad("recipe-unknown-key-named-int", VALID_RECIPE + "int: 1\n"),
    _bad("recipe-unknown-stage", _replace("- train: {epochs: 1}", "- train: {epochs: 1}\n  - explode: {}")),
    _bad("recipe-arch-injection", _replace("arch: vgg_small", "arch: \"torchvision:__import__('os').system\"")),
    _bad("recipe-not-utf8", VALID_RECIPE.replace("name: hostile", "name: caf\xe9").encode("latin-1")),
    # Files that are not regular files: refused at once, never read without bound, never blocking.
    Case("recipe-symlink-to-dev-zero", "recipes", _symlink_to_dev_zero, 2, error_has=("bad.yaml",),
         timeout_s=20, memory_limit_mb=BOUNDED_MB),
    Case("recipe-fifo", "recipes", _fifo, 2, error_has=("bad.yaml",), timeout_s=20),
]
