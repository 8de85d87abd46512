"""This machine's cores, shared by parallel runs: timed stages measure only while nothing else computes.

A sweep with `--jobs N` runs N pipelines at once. Training and converting can share the cores, but a
latency measurement taken while another job trains would time the contention, not the model. So every
stage of a run started with a cores lock holds it: compute stages shared, timed stages (`profile`)
exclusive. A reader-writer lock built from two `flock`s, with writer preference so a profile stage
is not starved by jobs that keep starting new compute stages:

- shared:    take the turnstile, take `cores` shared, release the turnstile;
- exclusive: take the turnstile and keep it (new compute stages wait behind it), take `cores`
             exclusive (waits for the running compute stages to end).

A stage holds the lock only while it runs, and it is the innermost lock a run takes (after the
store's key locks), so no cycle of waits can form.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .filelock import EXCLUSIVE, SHARED, flocked


class CoresLock:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.turnstile = self.path.with_name(self.path.name + ".turnstile")

    @contextmanager
    def hold(self, exclusive: bool) -> Iterator[None]:
        if exclusive:
            with flocked(self.turnstile, EXCLUSIVE), flocked(self.path, EXCLUSIVE):
                yield
            return
        with ExitStack() as held:
            with flocked(self.turnstile, EXCLUSIVE):  # released at once: only a waiting writer keeps us out
                held.enter_context(flocked(self.path, SHARED))
            yield
