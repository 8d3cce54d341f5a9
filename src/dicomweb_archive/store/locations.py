"""Where a store is: a location names its storage (a directory, or ``memory://NAME``)."""

from __future__ import annotations

import os
from pathlib import Path

from dicomweb_archive.store.local import LocalStorage
from dicomweb_archive.store.memory import SCHEME as MEMORY_SCHEME
from dicomweb_archive.store.memory import memory_storage
from dicomweb_archive.store.storage import Storage


def normal_location(location: str | os.PathLike[str]) -> str:
    """The location as the store is named in messages (a directory path is expanded)."""
    text = os.fspath(location)
    if text.startswith(MEMORY_SCHEME):
        return text
    return str(Path(text).expanduser())


def storage_at(location: str, *, create: bool) -> Storage | None:
    """The storage of ``location`` (made when ``create``), or None when there is none."""
    if location.startswith(MEMORY_SCHEME):
        return memory_storage(location, create=create)
    root = Path(location)
    if create:
        root.mkdir(parents=True, exist_ok=True)
    elif not root.is_dir():
        return None
    return LocalStorage(root)


def same_location(one: str, other: str) -> bool:
    """Whether two locations name the same store."""
    if one.startswith(MEMORY_SCHEME) or other.startswith(MEMORY_SCHEME):
        return one == other
    return Path(one).resolve() == Path(other).resolve()
