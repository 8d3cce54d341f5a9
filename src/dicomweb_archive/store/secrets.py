"""The store's own secret: the key of keyed de-identification.

``.dicomweb-archive/deidentification.key``

Created once, on first use, with 256 random bits; on a local disk readable by its owner only.
"""

from __future__ import annotations

import contextlib
import os
import secrets

from dicomweb_archive.errors import NoSuchObjectError, ObjectExistsError
from dicomweb_archive.store.local import LocalStorage
from dicomweb_archive.store.storage import PRIVATE, Storage

KEY = PRIVATE + "deidentification.key"


def read_key(storage: Storage) -> bytes | None:
    try:
        return storage.get(KEY).strip()
    except NoSuchObjectError:
        return None


def store_key(storage: Storage, key: bytes | None = None) -> bytes:
    """The store's key: ``key`` when given and none is kept (it is then kept), else the one
    kept, else a new random one (kept). Only under the lease."""
    kept = read_key(storage)
    if kept is not None:
        return kept
    value = key if key is not None else secrets.token_hex(32).encode()
    with contextlib.suppress(ObjectExistsError):
        storage.put(KEY, value, if_absent=True)
    if isinstance(storage, LocalStorage):
        os.chmod(storage.path(KEY), 0o600)
    return read_key(storage) or value
