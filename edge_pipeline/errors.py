"""Error types that the CLI turns into one clear line and an exit code.

`UserError` is bad input (recipe, arguments, missing or corrupt file, unreachable device): exit 2.
`PipelineError` is a failure while running a valid recipe (a conversion crash, a failed gate): exit 1.
Both carry a message that already says what is wrong and what to do; the CLI prints it verbatim
after `error: ` and never a traceback.
"""

from __future__ import annotations


class EdgePipelineError(Exception):
    exit_code = 1


class UserError(EdgePipelineError):
    """Bad input: the user can fix it by changing a file, a flag or a path."""

    exit_code = 2


class PipelineError(EdgePipelineError):
    """A valid recipe failed while running (the stages before it stay cached)."""

    exit_code = 1
