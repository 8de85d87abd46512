"""Advisory `flock`s on lock files, held for a `with` block.

The lock file is created if missing and opened with O_NOFOLLOW, never truncated: a symlink planted
where a lock file goes cannot make us create or clobber anything elsewhere. (The `filelock` package
opens its files with O_TRUNC and follows symlinks, and has no shared mode, which cores.py needs.)
`flock` works on local disks and, on Linux, on NFS (emulated with POSIX locks).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SHARED, EXCLUSIVE = fcntl.LOCK_SH, fcntl.LOCK_EX


@contextmanager
def flocked(path: str | os.PathLike, mode: int = EXCLUSIVE) -> Iterator[None]:
    """Hold `path`'s lock in `mode` (SHARED or EXCLUSIVE), waiting for it."""
    fd = os.open(Path(path), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, mode)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
