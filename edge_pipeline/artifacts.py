"""Bytes and JSON on disk: atomic writes, hashing, bounded safe reads. Nothing model-specific
(model persistence is `models/store.py`)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import PipelineError, UserError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

# ---------------------------------------------------------------------------------------------
# Size limits of the files we read (user-supplied or from a run folder). A symlink to /dev/zero or
# a sparse 1 TB file must be refused before any byte is read, not after the reader ran out of memory.

GiB = 1 << 30
MiB = 1 << 20
LIMIT_TFLITE = 2 * GiB  # a flatbuffer cannot address more than 2 GiB
LIMIT_ONNX = 2 * GiB  # protobuf's limit for a model without external data
LIMIT_WEIGHTS = 4 * GiB  # safetensors / .pth
LIMIT_NPY = 2 * GiB  # inputs and calibration arrays
LIMIT_JSON = 64 * MiB  # profiles, metrics, stage records, structure.json, device results
LIMIT_TEXT = 16 * MiB  # logs and other text we only summarize
LIMIT_YAML = 1 * MiB  # recipes and device files are a few KiB


# ---------------------------------------------------------------------------------------------
# Bytes on disk


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hash a regular file, streamed (no size limit): a device or FIFO is refused, not read forever."""
    digest = hashlib.sha256()
    with _open_regular(Path(path), "file") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# Read once: os.umask can only be read by setting it, which is not thread-safe to do per write.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


# Writes the file system refuses: read-only, full, over quota, file size limit (ulimit -f, FAT32),
# not permitted (chattr +i gives EPERM).
WRITE_REFUSED = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM}


def write_refused(exc: BaseException | None, path: str | os.PathLike | None = None) -> PipelineError | None:
    """The one-line PipelineError (exit 1) for a write the file system refused, naming the path; None
    for any other error. What was written before stays intact, so a rerun resumes."""
    if not isinstance(exc, OSError) or exc.errno not in WRITE_REFUSED:
        return None
    where = path or exc.filename or "(unknown path)"
    hint = {errno.EROFS: "the file system is read-only: write somewhere else (--out)",
            errno.ENOSPC: "the disk is full: free some space", errno.EDQUOT: "over the disk quota: free some space",
            errno.EFBIG: "the file is larger than this file system or `ulimit -f` allows: write somewhere else (--out)"}
    fix = hint.get(exc.errno, "no permission to write there: make it writable or write somewhere else (--out)")
    return PipelineError(f"{where}: cannot write ({os.strerror(exc.errno)}); {fix}, then rerun "
                         "(completed stages are kept)")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    try:
        _atomic_write(path, data)
    except OSError as exc:
        refused = write_refused(exc, exc.filename or path)
        if refused is None:
            raise
        raise refused from None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are ordinary files (0644 under umask 022)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, limit: int = LIMIT_JSON) -> Any:
    path = Path(path)
    data = read_bytes_bounded(path, limit, "JSON file")
    try:
        return json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); the file is corrupt, delete it or rerun") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply; the file is corrupt, delete it or rerun") from None


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


# ---------------------------------------------------------------------------------------------
# Bounded reads: every file we read is checked to be a regular file within a size limit first.

_READ_CHUNK = 16 * MiB
_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)


def _human_size(size: int) -> str:
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def _where(path: Path) -> str:
    """`path`, plus where it leads when it is a symlink (`x.tflite (-> /dev/zero)`)."""
    return f"{path} (-> {os.path.realpath(path)})" if os.path.islink(path) else str(path)


def _require_regular(path: Path, mode: int, what: str) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _NOT_REGULAR if test(mode)), "a special file")
        raise UserError(f"{_where(path)}: is {kind}, not a regular file; give the path of a {what}")


def _check_stat(path: Path, info: os.stat_result, limit: int, what: str) -> None:
    _require_regular(path, info.st_mode, what)
    if info.st_size > limit:
        raise UserError(f"{_where(path)}: {info.st_size} bytes, more than the {_human_size(limit)} limit for a {what}; "
                        f"check that this is the right file")


def _os_error(path: Path, exc: OSError, what: str) -> UserError:
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return UserError(f"{path}: file not found; give the path of a {what}")
    return UserError(f"{path}: cannot read ({exc.strerror or exc}); check the file's permissions")


def check_regular_file(path: str | os.PathLike, limit: int, what: str) -> os.stat_result:
    """The stat of `path` (symlinks followed) when it is a regular file of at most `limit` bytes; else
    a UserError naming the file, the limit and the fix. Use before handing a path to a library that
    reads it itself (safetensors, torch.load, onnx.load, an interpreter)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _os_error(path, exc, what) from None
    _check_stat(path, info, limit, what)
    return info


def read_bytes_bounded(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (see `check_regular_file`), checked before
    opening and again on the open descriptor. At most limit + 1 bytes are read: a file can grow
    after it was measured (and files in /proc say 0 bytes whatever they hold)."""
    path = Path(path)
    check_regular_file(path, limit, what)
    with _open_regular(path, what) as fh:
        info = os.fstat(fh.fileno())
        _check_stat(path, info, limit, what)  # the path may have been swapped since it was checked
        try:
            data = _read_at_most(fh, limit + 1, first=info.st_size + 1)
        except OSError as exc:
            raise _os_error(path, exc, what) from None
    if len(data) > limit:
        raise UserError(f"{path}: grew past the {_human_size(limit)} limit for a {what} while being read; "
                        "wait until whatever writes it has finished")
    return data


def _open_regular(path: Path, what: str) -> io.FileIO:
    """Open a regular file for reading, unbuffered. Checked before opening (opening a device can
    have side effects) and again on the descriptor (the path may have been swapped in between);
    opened without blocking, as opening a FIFO would."""
    try:
        _require_regular(path, os.stat(path).st_mode, what)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _os_error(path, exc, what) from None
    fh = os.fdopen(fd, "rb", buffering=0)
    try:
        _require_regular(path, os.fstat(fd).st_mode, what)
    except BaseException:
        fh.close()
        raise
    return fh


def _read_at_most(fh: io.RawIOBase, cap: int, first: int) -> bytes:
    """Read until EOF or `cap` bytes; the first request is the expected size + 1, so a file that did
    not change is read in one call (and one buffer)."""
    chunks: list[bytes] = []
    total, request = 0, first
    while total < cap:
        block = fh.read(min(request, cap - total))
        if not block:
            break
        chunks.append(block)
        total += len(block)
        request = _READ_CHUNK
    return b"".join(chunks)  # one chunk: returned as is, not copied


def read_text_bounded(path: str | os.PathLike, limit: int, what: str) -> str:
    """`read_bytes_bounded`, decoded as UTF-8; anything else is a UserError naming the file."""
    data = read_bytes_bounded(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); give a {what} saved as UTF-8") from None


def read_npy(path: str | os.PathLike, limit: int = LIMIT_NPY, what: str = ".npy array") -> np.ndarray:
    """A numeric array from a .npy file, never unpickled: the header must describe exactly the bytes
    that follow (a header claiming a huge shape is refused before anything is allocated)."""
    import numpy as np
    from numpy.lib import format as npy_format

    path = Path(path)
    data = read_bytes_bounded(path, limit, what)
    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(stream)
        else:  # 3.0 (utf-8 field names): numpy has no public reader for its header
            shape, fortran_order, dtype = npy_format._read_array_header(stream, version)  # type: ignore[attr-defined]
    except (ValueError, SyntaxError, TypeError) as exc:
        raise UserError(f"{path}: not a .npy array ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}); "
                        "save it with numpy.save") from None
    if dtype.hasobject:
        raise UserError(f"{path}: holds Python objects (dtype {dtype}), which would need pickle; save a numeric array")
    count = 1
    for dim in shape:
        count *= int(dim)
    expected, available = count * dtype.itemsize, len(data) - stream.tell()
    if expected != available:
        raise UserError(f"{path}: the header says shape {tuple(shape)} {dtype} ({expected} bytes) but {available} bytes "
                        "follow; the file is truncated or corrupt, save it again")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=stream.tell())
    return array.reshape(shape, order="F" if fortran_order else "C").copy()
