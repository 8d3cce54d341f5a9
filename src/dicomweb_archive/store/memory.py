"""The storage protocol in a process's memory: the test backend, and a store for one-off work.

Stores are named: ``memory://<name>`` opens the same store from anywhere in the process (the
registry keeps it until :func:`forget`). A quota makes a full device reproducible: a put that
would exceed it raises :class:`~dicomweb_archive.errors.StoreFullError` and changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import threading
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from dicomweb_archive.errors import (
    NoSuchObjectError,
    ObjectExistsError,
    PreconditionFailedError,
    StoreFullError,
    StoreLockedError,
)
from dicomweb_archive.store.storage import Data, ObjectInfo, check_key

SCHEME = "memory://"


@dataclass(frozen=True, slots=True)
class _Object:
    data: bytes
    etag: str
    content_type: str | None
    content_encoding: str | None


class MemoryStorage:
    """Objects in a dictionary; ``quota`` (bytes) bounds the total size, None for no bound."""

    def __init__(self, name: str, *, quota: int | None = None) -> None:
        self.name = name
        self.quota = quota
        self._objects: dict[str, _Object] = {}
        self._keys: list[str] = []  # sorted, for listing
        self._mutex = threading.Lock()
        self._lease = threading.Lock()
        self._holder: str | None = None
        self._versions = 0

    @property
    def location(self) -> str:
        return SCHEME + self.name

    @property
    def used(self) -> int:
        return sum(len(obj.data) for obj in self._objects.values())

    def get(self, key: str) -> bytes:
        obj = self._objects.get(check_key(key))
        if obj is None:
            raise NoSuchObjectError(f"{self.location}: {key} is missing")
        return obj.data

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self.get(key))

    def head(self, key: str) -> ObjectInfo | None:
        obj = self._objects.get(check_key(key))
        return None if obj is None else ObjectInfo(key, len(obj.data), obj.etag)

    def headers(self, key: str) -> tuple[str | None, str | None]:
        """Content-Type and Content-Encoding the object was put with (for tests)."""
        obj = self._objects[key]
        return obj.content_type, obj.content_encoding

    def put(
        self,
        key: str,
        data: Data,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        fresh: bool = False,
    ) -> ObjectInfo:
        del fresh  # every put is atomic here
        check_key(key)
        value = bytes(data) if isinstance(data, bytes | memoryview) else b"".join(data)
        with self._mutex:
            current = self._objects.get(key)
            if if_absent and current is not None:
                raise ObjectExistsError(f"{self.location}: {key} exists")
            if if_match is not None and (current is None or current.etag != if_match):
                raise PreconditionFailedError(f"{self.location}: {key} changed meanwhile")
            self._check_quota(len(value) - (len(current.data) if current else 0))
            self._store(key, value, content_type, content_encoding)
        return ObjectInfo(key, len(value), self._objects[key].etag)

    def copy(self, source: str, target: str) -> None:
        check_key(target)
        with self._mutex:
            obj = self._objects.get(check_key(source))
            if obj is None:
                raise NoSuchObjectError(f"{self.location}: {source} is missing")
            current = self._objects.get(target)
            self._check_quota(len(obj.data) - (len(current.data) if current else 0))
            self._store(target, obj.data, obj.content_type, obj.content_encoding)

    def delete(self, key: str) -> None:
        with self._mutex:
            if self._objects.pop(check_key(key), None) is not None:
                del self._keys[bisect_left(self._keys, key)]

    def delete_prefix(self, prefix: str) -> None:
        for info in list(self.list_prefix(prefix)):
            self.delete(info.key)

    def list_prefix(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._mutex:
            start = bisect_left(self._keys, prefix)
            found = []
            for key in self._keys[start:]:
                if not key.startswith(prefix):
                    break
                obj = self._objects[key]
                found.append(ObjectInfo(key, len(obj.data), obj.etag))
        yield from found

    def children(self, prefix: str) -> list[str]:
        names: dict[str, None] = {}
        for info in self.list_prefix(prefix):
            rest = info.key[len(prefix) :]
            head, slash, _ = rest.partition("/")
            names[head + slash] = None
        return list(names)

    @contextmanager
    def lease(self, holder: str, *, wait: bool = True) -> Iterator[None]:
        if not self._lease.acquire(blocking=wait):
            raise StoreLockedError(f"{self.location}: another writer holds it ({self._holder})")
        self._holder = holder
        try:
            yield
        finally:
            self._holder = None
            self._lease.release()

    def lease_holder(self) -> str | None:
        return self._holder

    def barrier(self) -> None:
        """Nothing to do: a completed put is as durable as memory gets."""

    def _check_quota(self, growth: int) -> None:
        if self.quota is not None and growth > 0 and self.used + growth > self.quota:
            raise StoreFullError(f"{self.location}: no space left (quota {self.quota} bytes)")

    def _store(
        self, key: str, value: bytes, content_type: str | None, content_encoding: str | None
    ) -> None:
        self._versions += 1
        etag = hashlib.sha256(value).hexdigest()[:16] + f"-{self._versions:x}"
        if key not in self._objects:
            insort(self._keys, key)
        self._objects[key] = _Object(value, etag, content_type, content_encoding)


_REGISTRY: dict[str, MemoryStorage] = {}
_REGISTRY_LOCK = threading.Lock()


def memory_storage(location: str, *, create: bool) -> MemoryStorage | None:
    """The memory store named by ``memory://<name>`` (made when ``create``), or None."""
    name = location[len(SCHEME) :]
    with _REGISTRY_LOCK:
        storage = _REGISTRY.get(name)
        if storage is None and create:
            storage = _REGISTRY[name] = MemoryStorage(name)
        return storage


#: called with a store's name when it is forgotten (the index of a memory store goes too)
FORGET_HOOKS: list[Callable[[str], None]] = []


def forget(location: str) -> None:
    """Drop a memory store (its objects, and its in-memory index, are gone)."""
    name = location[len(SCHEME) :]
    with _REGISTRY_LOCK:
        _REGISTRY.pop(name, None)
    for hook in FORGET_HOOKS:
        hook(name)
