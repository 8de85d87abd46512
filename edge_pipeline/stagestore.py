"""A stage-result store shared by many run folders, addressed by the stage's cache key.

A sweep runs many variants of one recipe; variants that share a prefix of stages (same data, model,
seed and the same stage configs in the same order) have the same cache keys for that prefix (see
pipeline.py), so the prefix is computed once and every other variant copies it from here.

```
<store>/
  .edge-pipeline-store     marker: created by edge-pipeline (we write into no other folder)
  objects/<key>/           a finished stage folder: stage.json (key, output sha256s) + its outputs
  objects/.<key>.<pid>.tmp a copy being published (renamed into place when complete)
  locks/<key>.lock         held while a run looks up, computes or publishes that key
```

Rules:
- A run holds the key's lock from "is it in the store?" to "it is published", so two runs that need
  the same stage at once compute it once: the second waits, then copies. Locks are `flock`s, which
  work on a local disk and on NFS (Linux emulates them with POSIX locks), so runs on several
  machines of a cluster can share one store on a shared file system.
- A stored object is used only if its stage.json names the key and every output still hashes as
  recorded; a damaged object is set aside (renamed, never deleted) and recomputed.
- Objects are copies, not hard links: a user editing a file inside a run folder cannot change what
  other runs receive.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .artifacts import read_json, sha256_file
from .errors import UserError
from .filelock import flocked
from .rundir import STAGE_RECORD

STORE_MARKER = ".edge-pipeline-store"
OBJECTS = "objects"
LOCKS = "locks"
_KEY_CHARS = frozenset("0123456789abcdef")


def _check_key(key: str) -> str:
    # Keys are sha256 hex digests; anything else must never become a path component.
    if len(key) != 64 or not set(key) <= _KEY_CHARS:
        raise ValueError(f"not a cache key: {key!r}")
    return key


class StageStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    # -- layout ------------------------------------------------------------------------------

    def object_dir(self, key: str) -> Path:
        return self.root / OBJECTS / _check_key(key)

    def claim(self) -> StageStore:
        """Create the store (with its marker) or check that the folder is one; refuse any other folder."""
        if self.root.is_symlink() or (self.root.exists() and not self.root.is_dir()):
            raise UserError(f"--store {self.root}: exists and is not a folder; choose another --store")
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / STORE_MARKER
        if not (marker.is_file() and not marker.is_symlink()):
            foreign = sorted(p.name for p in self.root.iterdir())
            if foreign:
                raise UserError(f"--store {self.root}: folder is not empty and is not an edge-pipeline store "
                                f"(it holds {foreign[0]!r}); choose an empty or new folder")
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as fh:
                json.dump({"tool": "edge-pipeline", "kind": "stage store", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, fh)
        (self.root / OBJECTS).mkdir(exist_ok=True)
        (self.root / LOCKS).mkdir(exist_ok=True)
        return self

    # -- locking -----------------------------------------------------------------------------

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold `key`'s lock (blocking: another run computing the same stage finishes first)."""
        with flocked(self.root / LOCKS / f"{_check_key(key)}.lock"):
            yield

    # -- objects -----------------------------------------------------------------------------

    def valid_record(self, key: str) -> dict[str, Any] | None:
        """The stored stage record for `key` if the object is complete and intact, else None."""
        folder = self.object_dir(key)
        record_path = folder / STAGE_RECORD
        if folder.is_symlink() or not record_path.is_file():
            return None
        try:
            record = read_json(record_path)
        except UserError:
            record = None
        intact = isinstance(record, dict) and record.get("key") == key and all(
            (folder / rel).is_file() and not (folder / rel).is_symlink() and sha256_file(folder / rel) == digest
            for rel, digest in record.get("outputs", {}).items())
        if not intact:
            self._set_aside(folder)
            return None
        assert isinstance(record, dict)
        return record

    def copy_into(self, key: str, dest: Path) -> dict[str, Any] | None:
        """Copy `key`'s object into the empty folder `dest`; its record, or None if there is no valid object."""
        record = self.valid_record(key)
        if record is None:
            return None
        source = self.object_dir(key)
        for rel in [*record["outputs"], STAGE_RECORD]:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, target)
        return record

    def install(self, key: str, tmp: Path, final: Path, clear: Callable[[Path], None]) -> dict[str, Any] | None:
        """Copy `key`'s object into the fresh folder `tmp`, then rename it to `final` (what is there is
        first removed with `clear`, the run folder's own rule); the record, or None if the store has
        no valid object (`tmp` is then removed, `final` untouched)."""
        try:
            record = self.copy_into(key, tmp)
            if record is not None:
                if final.exists() or final.is_symlink():
                    clear(final)
                os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; a leftover otherwise
        return record

    def publish(self, key: str, folder: Path) -> None:
        """Copy a finished stage folder (with its stage.json) into the store, atomically."""
        final = self.object_dir(key)
        if self.valid_record(key) is not None:
            return
        tmp = self.root / OBJECTS / f".{key}.{os.getpid()}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            shutil.copytree(folder, tmp, symlinks=True)
            os.replace(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):  # a copy appeared meanwhile (another machine)
                raise

    def _set_aside(self, folder: Path) -> None:
        """Move a damaged object out of the way (kept for inspection; never deleted by us)."""
        if folder.exists() or folder.is_symlink():
            os.replace(folder, folder.with_name(f"{folder.name}.damaged-{int(time.time())}"))
