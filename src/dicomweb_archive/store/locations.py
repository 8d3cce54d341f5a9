"""Where a store is: a location names its storage (a directory, ``memory://NAME``, or
``s3://BUCKET/PREFIX``)."""

from __future__ import annotations

import os
from pathlib import Path

from dicomweb_archive.store.local import LocalStorage
from dicomweb_archive.store.memory import SCHEME as MEMORY_SCHEME
from dicomweb_archive.store.memory import memory_storage
from dicomweb_archive.store.storage import Storage

S3_SCHEME = "s3://"


def normal_location(location: str | os.PathLike[str]) -> str:
    """The location as the store is named in messages (a directory path is expanded)."""
    text = os.fspath(location)
    if text.startswith((MEMORY_SCHEME, S3_SCHEME)):
        return text.rstrip("/")
    return str(Path(text).expanduser())


def storage_at(location: str, *, create: bool) -> Storage | None:
    """The storage of ``location`` (made when ``create``), or None when there is none."""
    if location.startswith(MEMORY_SCHEME):
        return memory_storage(location, create=create)
    if location.startswith(S3_SCHEME):
        # obstore is imported only by commands on an S3 store
        from dicomweb_archive.store.s3 import S3Storage  # noqa: PLC0415

        return S3Storage(location)  # the bucket must exist; a store is its config object
    root = Path(location)
    if create:
        root.mkdir(parents=True, exist_ok=True)
    elif not root.is_dir():
        return None
    return LocalStorage(root)


def same_location(one: str, other: str) -> bool:
    """Whether two locations name the same store."""
    if one.startswith((MEMORY_SCHEME, S3_SCHEME)) or other.startswith((MEMORY_SCHEME, S3_SCHEME)):
        return one == other
    return Path(one).resolve() == Path(other).resolve()
