"""The storage protocol: what every operation needs of the place a store's objects live.

A store is a set of *objects* named by *keys*: relative POSIX paths such as
``studies/<Study>/series/index.json.gz`` (``docs/spec/store-layout.md``). Every read and write
of store data goes through a :class:`Storage`; nothing outside ``store/`` touches the files.
Two backends implement it: :class:`~dicomweb_archive.store.local.LocalStorage` (a directory)
and :class:`~dicomweb_archive.store.memory.MemoryStorage` (a process's memory).

The protocol is what object storage offers, so that an object-storage backend is one more
class: whole-object reads and writes, conditional puts ("only if absent", "only if
unchanged"), server-side copy, delete, listing by prefix, and a lease that keeps writers
apart. There is no rename: a many-object change is committed by a journal
(:mod:`dicomweb_archive.store.journal`), an instance by writing its info record last.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TypedDict

import orjson

from dicomweb_archive.errors import StoreError

#: A value to put: bytes, or chunks streamed in order (a large value is never held whole).
Data = bytes | memoryview | Iterable[bytes | memoryview]

#: The private prefix: configuration, journal, change records, the local index. Never served.
PRIVATE = ".dicomweb-archive/"

#: A writer that has waited this long for another's lease says so (:func:`lease_wait_notice`)
LEASE_WAIT_NOTICE_SECONDS = 1.0
_lease_wait_notices: list[Callable[[str], None]] = []


def on_lease_wait(notice: Callable[[str], None]) -> None:
    """Have ``notice`` told, in one sentence, of every wait for another writer's lease that
    passes :data:`LEASE_WAIT_NOTICE_SECONDS` (the CLI prints it on stderr)."""
    _lease_wait_notices[:] = [notice]


def lease_wait_notice(message: str) -> None:
    """Called by a backend's ``lease`` once its wait passes :data:`LEASE_WAIT_NOTICE_SECONDS`."""
    for notice in _lease_wait_notices:
        notice(message)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What ``head`` and ``list`` say of one object."""

    key: str
    size: int
    #: changes whenever the object's content is replaced (for "only if unchanged" puts)
    etag: str


class Storage(Protocol):
    """The operations a store needs of its storage backend.

    Keys are checked by :func:`check_key`. Missing objects raise
    :class:`~dicomweb_archive.errors.NoSuchObjectError`; a full backend raises
    :class:`~dicomweb_archive.errors.StoreFullError` and leaves nothing of the failed put.
    """

    @property
    def location(self) -> str:
        """Where the store is, as users name it (a path or a URL), for messages."""
        ...

    def get(self, key: str) -> bytes:
        """The object's whole content."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A stream over the object's content (for values too large to hold whole)."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Size and etag of the object, or None when there is none."""
        ...

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
        """Store ``data`` under ``key``, atomically: readers see the old object or the new one.

        ``if_absent``: fail with :class:`~dicomweb_archive.errors.ObjectExistsError` when an
        object is there. ``if_match``: fail with
        :class:`~dicomweb_archive.errors.PreconditionFailedError` unless the object's etag is
        this one. ``content_type`` and ``content_encoding`` are kept where the backend can
        serve them (object storage); a directory ignores them. ``fresh``: the key is new and
        nothing reads it before a later commit marker (an instance's frames before its info
        record), so a backend may write it in place rather than atomically.
        """
        ...

    def copy(self, source: str, target: str) -> None:
        """Make ``target`` an object with ``source``'s content (atomically, as ``put``)."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; removing an absent one is not an error."""
        ...

    def list_prefix(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix`` (which ends with ``/``) at once."""
        ...

    def children(self, prefix: str) -> list[str]:
        """The names one level below ``prefix`` (which ends with ``/``, or is empty), sorted:
        objects as their name, deeper levels as their name and ``/``."""
        ...

    def lease(self, holder: str, *, wait: bool = True) -> AbstractContextManager[None]:
        """Hold the store's write lease: at most one writer at a time, readers never blocked.

        Raises :class:`~dicomweb_archive.errors.StoreLockedError` when ``wait`` is false and
        another writer holds it. ``holder`` says who (shown to readers).
        """
        ...

    def lease_holder(self) -> str | None:
        """Who holds the write lease now (None: nobody)."""
        ...

    def barrier(self) -> None:
        """Make every put completed so far durable before the next one (a commit point)."""
        ...


class Reader(Protocol):
    """What reading a store needs: a :class:`Storage`, or a transaction that shows its own
    writes (:class:`~dicomweb_archive.store.journal.Transaction`)."""

    def get(self, key: str) -> bytes: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def list_prefix(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def children(self, prefix: str) -> list[str]: ...


def check_key(key: str) -> str:
    """``key`` if it is a relative POSIX path without empty, ``.`` or ``..`` steps."""
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\0" in key
        or any(step in ("", ".", "..") for step in key.split("/"))
    ):
        raise StoreError(f"not a storage key: {key!r}")
    return key


def to_json_bytes(value: Any) -> bytes:
    """Compact, deterministic UTF-8 JSON (PS3.18 F: DICOM JSON is UTF-8)."""
    return orjson.dumps(value)


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip: mtime 0, no file name."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def json_gz(value: Any) -> bytes:
    """The bytes of a ``.json.gz`` / ``.gz`` store file holding ``value``."""
    return gzip_bytes(to_json_bytes(value))


def from_json_gz(data: bytes) -> Any:
    """The value of a ``.json.gz`` store file (raises ValueError or OSError when damaged)."""
    return orjson.loads(gzip.decompress(data))


class Headers(TypedDict):
    """What a backend that serves objects sends with one."""

    content_type: str
    content_encoding: str


#: Content-Type and Content-Encoding of gzipped JSON objects, for backends that serve them
JSON_GZ_HEADERS: Headers = {"content_type": "application/dicom+json", "content_encoding": "gzip"}
