"""The store-wide write lock (``fcntl.flock`` on ``.dicomweb-archive/lock``)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dicomweb_archive.errors import StoreLockedError


@contextmanager
def write_lock(path: Path, *, wait: bool = True) -> Iterator[None]:
    """Hold the exclusive write lock of a store; readers are never blocked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError as exc:
            raise StoreLockedError(f"{path.parent.parent}: another process is writing") from exc
        yield
    finally:
        os.close(fd)
