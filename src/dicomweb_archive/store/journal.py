"""Many-object changes that happen entirely or not at all, and readers that never see half of one.

A :class:`Transaction` collects a change: new contents are put under
``.dicomweb-archive/staging/<id>/<key>`` (not yet visible), removals and index updates are
listed; reads through the transaction see its own writes (so a stage can derive files from an
edit it has not committed yet). :meth:`Transaction.commit` makes the staged objects durable
(:meth:`Storage.barrier`), then writes the journal ``.dicomweb-archive/journal.json`` (the
commit point), then applies it: each staged object is copied to its key (a hard link on a
local disk), removals are made, the index is updated, the generation counter
``.dicomweb-archive/generation`` is replaced, and the staging objects and the journal are
deleted. Every writer replays a journal left by an interrupted run before anything else
(:func:`replay`), so the store is entirely old (no journal: the staging objects are swept) or
entirely new (journal: replayed). Nothing relies on rename: the same works on object storage.

Readers (:func:`read_consistently`) check that the generation is the same before and after
they read and that no journal is there after: a reader sees the state before a change or after
it, never a mix, and retries (then says which change is in progress) while one is being
applied.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import orjson

from dicomweb_archive.errors import NoSuchObjectError, WriteInProgressError
from dicomweb_archive.store.keys import GENERATION, JOURNAL, STAGING
from dicomweb_archive.store.storage import Data, ObjectInfo, Storage

IndexApplier = Callable[[list[dict[str, Any]]], None]
T = TypeVar("T")
#: How long a reader waits for a change being applied before it says so.
READ_PATIENCE_SECONDS = 15.0


def new_id() -> str:
    return uuid.uuid4().hex


class Transaction:
    """One change of many objects; see the module docstring."""

    def __init__(self, storage: Storage, *, txn_id: str | None = None) -> None:
        self.storage = storage
        self.id = txn_id or new_id()
        self.staged: dict[str, str] = {}  # key -> staging key holding its new content
        self.removed: set[str] = set()
        self.index_ops: list[dict[str, Any]] = []
        self.committed = False
        self._puts = 0
        self._lock = threading.Lock()  # writer threads of an ingest put into one transaction

    def staging_key(self, key: str) -> str:
        """A new staging key for ``key``'s content (a new one each time: a savepoint may
        still need the content staged before)."""
        with self._lock:
            self._puts += 1
            name = key.rsplit("/", 1)[-1]
            return f"{STAGING}{self.id}/{self._puts:07d}-{name}"

    # -- reads through the transaction -----------------------------------------------------
    def get(self, key: str) -> bytes:
        if key in self.removed:
            raise NoSuchObjectError(f"{self.storage.location}: {key} is removed by this change")
        return self.storage.get(self.staged.get(key, key))

    def head(self, key: str) -> ObjectInfo | None:
        if key in self.removed:
            return None
        if key in self.staged:
            info = self.storage.head(self.staged[key])
            return None if info is None else ObjectInfo(key, info.size, info.etag)
        return self.storage.head(key)

    def list_prefix(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._lock:  # writer threads may be staging meanwhile
            mine = {k: s for k, s in self.staged.items() if k.startswith(prefix)}
        merged: dict[str, ObjectInfo] = {}
        for info in self.storage.list_prefix(prefix):
            if info.key.startswith(STAGING):
                continue  # this or another transaction's staging, not the store's objects
            if info.key not in self.removed and info.key not in mine:
                merged[info.key] = info
        for key in mine:
            found = self.head(key)
            if found is not None:
                merged[key] = found
        for key in sorted(merged):
            yield merged[key]

    def children(self, prefix: str) -> list[str]:
        names = dict.fromkeys(self.storage.children(prefix))
        with self._lock:
            staged = list(self.staged)
        for key in staged:
            if key.startswith(prefix):
                head, slash, _ = key[len(prefix) :].partition("/")
                names[head + slash] = None
        if self.removed:  # a level whose every object is removed is gone
            touched = {
                k[len(prefix) :].partition("/")[0] for k in self.removed if k.startswith(prefix)
            }
            for name in list(names):
                if name.rstrip("/") not in touched:
                    continue
                if name.endswith("/"):
                    gone = next(iter(self.list_prefix(prefix + name)), None) is None
                else:
                    gone = prefix + name in self.removed
                if gone:
                    del names[name]
        return sorted(names)

    # -- writes ----------------------------------------------------------------------------
    def put(
        self,
        key: str,
        data: Data,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        fresh: bool = False,
    ) -> None:
        """Give ``key`` this content when the transaction commits (``fresh`` changes nothing:
        staged objects are never read before the commit)."""
        del fresh
        staging = self.staging_key(key)
        self.storage.put(
            staging, data, content_type=content_type, content_encoding=content_encoding
        )
        with self._lock:
            self.staged[key] = staging
            self.removed.discard(key)

    def copy(self, source: str, target: str) -> None:
        """Give ``target`` the content ``source`` has now (in this transaction)."""
        staging = self.staging_key(target)
        self.storage.copy(self.staged.get(source, source), staging)
        self.staged[target] = staging
        self.removed.discard(target)

    def delete(self, key: str) -> None:
        """Remove ``key`` when the transaction commits."""
        with self._lock:
            self.staged.pop(key, None)
            self.removed.add(key)

    def unstage(self, key: str) -> None:
        """Forget a put of this transaction (the key keeps the content it has outside it)."""
        with self._lock:
            self.staged.pop(key, None)

    def delete_prefix(self, prefix: str) -> list[str]:
        """Remove every object under ``prefix``; returns their keys."""
        keys = [info.key for info in self.list_prefix(prefix)]
        for key in keys:
            self.delete(key)
        return keys

    def index(self, op: dict[str, Any]) -> None:
        """An index update to make when the transaction commits (JSON; see ``Archive``)."""
        self.index_ops.append(op)

    def savepoint(self) -> tuple[dict[str, str], set[str], int]:
        """The transaction's state now, to :meth:`rollback` to (one study of a stage run
        failing must not take the others with it)."""
        return dict(self.staged), set(self.removed), len(self.index_ops)

    def rollback(self, point: tuple[dict[str, str], set[str], int]) -> None:
        staged, removed, ops = point
        kept = set(staged.values())
        for staging in self.staged.values():
            if staging not in kept:
                self.storage.delete(staging)
        self.staged = staged
        self.removed = removed
        del self.index_ops[ops:]

    @property
    def empty(self) -> bool:
        return not (self.staged or self.removed or self.index_ops)

    def commit(self, apply_index: IndexApplier | None) -> None:
        """Write the journal (the commit point), then apply it. Nothing happens when empty."""
        if self.empty:
            self.committed = True
            return
        self.storage.barrier()
        record = {
            "id": self.id,
            "generation": generation(self.storage) + 1,
            "puts": sorted(self.staged.items()),
            "deletes": sorted(self.removed),
            "index": self.index_ops,
        }
        self.storage.put(JOURNAL, orjson.dumps(record), if_absent=True)
        self.storage.barrier()
        self.committed = True
        _apply(self.storage, record, apply_index)

    def abort(self) -> None:
        """Forget the transaction: its staged objects are deleted, nothing else happened."""
        if self.committed:
            return
        _remove_staging(self.storage, self.id)
        self.staged.clear()
        self.removed.clear()
        self.index_ops.clear()


def replay(storage: Storage, apply_index: IndexApplier | None) -> str | None:
    """Apply a journal left by an interrupted run; then remove staging objects of transactions
    that never committed. Returns the replayed transaction's id. Only under the lease."""
    replayed = None
    try:
        record = orjson.loads(storage.get(JOURNAL))
    except NoSuchObjectError:
        record = None
    if record is not None:
        _apply(storage, record, apply_index)
        replayed = str(record["id"])
    storage.delete_prefix(STAGING)
    return replayed


def _apply(storage: Storage, record: dict[str, Any], apply_index: IndexApplier | None) -> None:
    for key, staging in record["puts"]:
        # a staging object gone was applied before an interruption (one request, not two)
        with contextlib.suppress(NoSuchObjectError):
            storage.copy(staging, key)
    for key in record["deletes"]:
        storage.delete(key)
    if record["index"] and apply_index is not None:
        apply_index(record["index"])
    storage.put(GENERATION, str(record["generation"]).encode())
    _remove_staging(storage, str(record["id"]))
    storage.delete(JOURNAL)


def _remove_staging(storage: Storage, txn_id: str) -> None:
    storage.delete_prefix(f"{STAGING}{txn_id}/")


def generation(storage: Storage) -> int:
    """The number of changes committed so far (``.dicomweb-archive/generation``)."""
    try:
        return int(storage.get(GENERATION))
    except (NoSuchObjectError, ValueError):
        return 0


def generation_marker(storage: Storage) -> tuple[ObjectInfo | None, ObjectInfo | None]:
    """(journal, generation) as they are now: equal before and after a read, with no journal,
    means no change was applied meanwhile."""
    return storage.head(JOURNAL), storage.head(GENERATION)


def change_in_progress(storage: Storage) -> str | None:
    """The id of the change being applied now (a journal is there), or None."""
    try:
        return str(orjson.loads(storage.get(JOURNAL))["id"])
    except NoSuchObjectError:
        return None
    except (ValueError, KeyError):
        return "(being written)"


def read_consistently(
    storage: Storage, read: Callable[[], T], *, patience: float = READ_PATIENCE_SECONDS
) -> T:
    """``read()``'s result, from a state no change was being applied to (see the module
    docstring); retries while one is, and raises
    :class:`~dicomweb_archive.errors.WriteInProgressError` after ``patience`` seconds."""
    deadline = time.monotonic() + patience
    delay = 0.01
    while True:
        # no journal needs checking before the read: a change being applied then is either
        # still being applied after it (its journal is there) or applied meanwhile (the
        # generation, replaced after every object of the change, is not the one read before)
        before = storage.head(GENERATION)
        try:
            result = read()
        except Exception:
            if storage.head(JOURNAL) is None and storage.head(GENERATION) == before:
                raise  # a real error of a consistent state
        else:
            if storage.head(JOURNAL) is None and storage.head(GENERATION) == before:
                return result
        if time.monotonic() > deadline:
            change = change_in_progress(storage) or "several changes in a row"
            raise WriteInProgressError(
                f"{storage.location}: a change is being applied ({change}); try again"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
