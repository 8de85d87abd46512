"""Terminal output: one stderr console, spinners and progress bars (rich, imported lazily)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


@lru_cache(maxsize=1)
def _stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


class _LazyConsole:
    """rich.Console on stderr, created on first use so importing this module stays cheap."""

    def _get(self) -> Console:
        return _stderr_console()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


console = _LazyConsole()


@contextmanager
def status_line(message: str) -> Iterator[None]:
    """A spinner with a message while a step of unknown length runs."""
    with console.status(message, spinner="dots"):
        yield


class _Bar:
    def __init__(self, progress, task) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: float = 1) -> None:
        self._progress.advance(self._task, n)

    def note(self, text: str) -> None:
        """Update the trailing text (e.g. 'loss 0.31 acc 0.97')."""
        self._progress.update(self._task, info=text)


@contextmanager
def progress(description: str, total: float | None) -> Iterator[_Bar]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [
        TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, console=console._get(), transient=True) as prog:
        task = prog.add_task(description, total=total, info="")
        yield _Bar(prog, task)
