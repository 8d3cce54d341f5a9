"""Sharing an object's storage between two stores (de-identified copies share frames).

Only where both stores are directories on one file system: the target becomes a hard link to
the source (same bytes, no space); elsewhere nothing is done and the copy stays.
"""

from __future__ import annotations

import contextlib
import os
import uuid

from dicomweb_archive.store.local import TMP, LocalStorage
from dicomweb_archive.store.storage import Storage


def can_share(source: Storage, target: Storage) -> bool:
    """Whether objects of ``target`` can share the storage of ``source``'s (both are
    directories; a link across file systems may still fail)."""
    return isinstance(source, LocalStorage) and isinstance(target, LocalStorage)


def share_object(source: Storage, source_key: str, target: Storage, target_key: str) -> bool:
    """Make ``target_key`` share ``source_key``'s storage when both hold the same bytes and the
    stores allow it; returns whether it does."""
    if not isinstance(source, LocalStorage) or not isinstance(target, LocalStorage):
        return False
    temp = target.root / TMP / f"{uuid.uuid4().hex}.link"
    try:
        temp.parent.mkdir(parents=True, exist_ok=True)
        os.link(source.inside(source_key), temp)
        os.replace(temp, target.path(target_key))
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        return False
    return True
