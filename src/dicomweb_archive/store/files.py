"""Atomic, deterministic file writes and the matching reads.

Every file is written to a temporary name in its own directory and moved into place with
``os.replace`` (atomic on POSIX), so a reader or an interrupted run sees the old file or the new
one, never a mix. Gzip members carry mtime 0 and no file name, and JSON is written with a fixed
separator set, so the same content always gives the same bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Environment hook for crash tests: after this many completed writes, the process kills itself.
CRASH_AFTER_ENV = "DICOMWEB_ARCHIVE_CRASH_AFTER_WRITES"
_writes = itertools.count(1)


def count_write() -> None:
    """Support the crash-safety tests: stop dead after the N-th write when asked to."""
    limit = os.environ.get(CRASH_AFTER_ENV)
    if limit is not None and next(_writes) >= int(limit):
        os._exit(137)


def write_bytes(
    path: Path,
    chunks: bytes | memoryview | Iterable[bytes | memoryview],
    *,
    fsync: bool = False,
) -> int:
    """Write ``chunks`` to ``path`` atomically; returns the number of bytes written.

    With ``fsync`` the data reaches the disk before the rename (a commit point).
    """
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    size = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(chunks, bytes | memoryview):
                chunks = (chunks,)
            for chunk in chunks:
                size += handle.write(chunk)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    count_write()
    return size


def to_json_bytes(value: Any) -> bytes:
    """Compact, deterministic UTF-8 JSON (PS3.18 F: DICOM JSON is UTF-8)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip: mtime 0, no file name."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def write_json_gz(path: Path, value: Any) -> int:
    return write_bytes(path, gzip_bytes(to_json_bytes(value)))


def read_json_gz(path: Path) -> Any:
    with gzip.open(path, "rb") as handle:
        return json.loads(handle.read())


def remove_tree(path: Path) -> None:
    """Remove a directory tree, tolerating its absence."""
    shutil.rmtree(path, ignore_errors=True)


def remove_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    count_write()


def replace_dir(staging: Path, target: Path) -> None:
    """Move a fully written directory into place (a sibling), replacing ``target`` if it exists.

    The old directory is first renamed aside, so at every instant ``target`` is either the old
    complete directory, absent (for the instant between two renames; recovery sees the
    ``.old`` sibling) or the new complete one.
    """
    if target.exists():
        aside = target.with_name(f".{target.name}.old")
        remove_tree(aside)
        os.replace(target, aside)
        os.replace(staging, target)
        remove_tree(aside)
    else:
        os.replace(staging, target)
    count_write()
