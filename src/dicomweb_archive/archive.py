"""The :class:`Archive`: one store, opened once and passed to every operation.

An archive holds the store's recorded configuration (``store/config.py``), its storage
(``store/storage.py``: a local directory or memory), its index (``index/``), and the write
lease with recovery: the first time a writer takes the lease, a change left half-applied by an
interrupted run is completed and its leftovers removed (``store/recovery.py``). Every change
goes through :meth:`Archive.commit` (``store/journal.py``, ``store/changes.py``); readers use
:meth:`Archive.read` to see a state before or after a change, never a mix.

Locations: a directory path, ``s3://<bucket>/<prefix>`` (``store/s3.py``), or
``memory://<name>`` (a store in this process's memory).
Only :meth:`Archive.create` and :meth:`Archive.open_or_create` make a store; :meth:`open`
refuses a location that is not one (:class:`~dicomweb_archive.errors.NotAStoreError`).
A store written before the configuration existed (format 1) is upgraded in place when opened
(``store/upgrade.py``).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from dicomweb_archive import __version__
from dicomweb_archive.errors import (
    ArchiveError,
    NoSuchObjectError,
    NotAStoreError,
    StoreConfigError,
    StoreLockedError,
)
from dicomweb_archive.index.protocol import Index
from dicomweb_archive.index.sql import SqlIndex
from dicomweb_archive.index.sqlite import SQLiteIndex, drop_memory_database
from dicomweb_archive.store.changes import ChangeSet, audit_rows, change_ids, read_change
from dicomweb_archive.store.config import StoreConfig
from dicomweb_archive.store.journal import Transaction, generation, read_consistently
from dicomweb_archive.store.keys import CONFIG, JOURNAL, REINDEX, STUDIES_INDEX, StoreKeys
from dicomweb_archive.store.local import LOCAL, LocalStorage
from dicomweb_archive.store.locations import normal_location, storage_at
from dicomweb_archive.store.memory import FORGET_HOOKS, MemoryStorage
from dicomweb_archive.store.recovery import recover
from dicomweb_archive.store.storage import Storage
from dicomweb_archive.store.upgrade import is_format_1, upgrade_format_1

T = TypeVar("T")
MEMORY_INDEX = "dicomweb-archive-{}"
#: index URLs of the PostgreSQL backend (``index/postgres.py``)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: environment variable: where this machine keeps derived local files (the index of an S3 store)
CACHE_ENV = "DICOMWEB_ARCHIVE_CACHE"
FORGET_HOOKS.append(lambda name: drop_memory_database(MEMORY_INDEX.format(name)))


class Archive:
    """One store: configuration, storage, index and lease (see the module docstring)."""

    def __init__(self, location: str, storage: Storage, config: StoreConfig) -> None:
        self.location = location
        self.storage = storage
        self.config = config
        self.keys = StoreKeys(config.path_instances, config.path_deduplicated)
        self._local = threading.local()
        self._indexes: list[SqlIndex] = []
        self._indexes_lock = threading.Lock()
        self._lease_depth = 0
        self._lease_owner: int | None = None
        self._lease_lock = threading.RLock()

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, location: str | os.PathLike[str]) -> Archive:
        """The store at ``location``; raises NotAStoreError when there is none."""
        name = normal_location(location)
        storage = storage_at(name, create=False)
        if storage is None:
            raise NotAStoreError(f"{name}: no such store (create one with mkdicomweb)")
        return cls._opened(name, storage, _read_config(storage))

    @classmethod
    def _opened(cls, name: str, storage: Storage, config: StoreConfig | None) -> Archive:
        """The store in ``storage`` whose configuration was read as ``config`` (see
        :meth:`open`)."""
        if config is None:
            if not is_format_1(storage):
                raise NotAStoreError(
                    f"{name} is not a dicomweb-archive store (no .dicomweb-archive/config.json); "
                    "create one with mkdicomweb, or check the -o/--dir path"
                )
            with storage.lease(_holder("upgrade")):
                config = _read_config(storage) or upgrade_format_1(storage, _default_config())
        if not config.complete:
            raise NotAStoreError(
                f"{name} was left incomplete by an interrupted run (a de-identification into a "
                "new store); remove it and run again"
            )
        return cls(name, storage, config)

    @classmethod
    def create(cls, location: str | os.PathLike[str], config: StoreConfig | None = None) -> Archive:
        """A new store at ``location`` (refused where one is)."""
        name = normal_location(location)
        storage = storage_at(name, create=True)
        assert storage is not None
        if _read_config(storage) is not None or is_format_1(storage):
            raise StoreConfigError(f"{name} is a store already")
        config = config or _default_config()
        config = replace(config, created_by=f"dicomweb-archive {__version__}")
        with storage.lease(_holder("create")):
            storage.put(CONFIG, config.to_json(), if_absent=True)
        archive = cls(name, storage, config)
        if config.index != "sqlite" or not isinstance(storage, LocalStorage | MemoryStorage):
            # an index outside the store may hold rows of an earlier store at this location
            archive.index.replace_studies([], clear_first=True)
            archive.index.replace_audit([])
        return archive

    @classmethod
    def open_or_create(
        cls,
        location: str | os.PathLike[str],
        *,
        defaults: dict[str, Any] | None = None,
        **settings: Any,
    ) -> Archive:
        """The store at ``location``, made with ``settings`` (and ``defaults``, which only a new
        store records) when there is none. Settings that disagree with an existing store's are
        refused (``StoreConfig.agreeing``); None means "not given"."""
        name = normal_location(location)
        storage = storage_at(name, create=False)
        config = None if storage is None else _read_config(storage)
        if storage is not None and (config is not None or is_format_1(storage)):
            archive = cls._opened(name, storage, config)  # the configuration is read once
        else:
            given = {k: v for k, v in settings.items() if v is not None} | (defaults or {})
            try:
                return cls.create(name, replace(_default_config(), **given))
            except StoreConfigError:
                archive = cls.open(name)  # made meanwhile by another process: open it
        recorded, archive.config = archive.config, archive.config.agreeing(**settings)
        if archive.config.to_json() != recorded.to_json():  # not for an index URL's password
            with archive.writing("configure"):
                archive.storage.put(CONFIG, archive.config.to_json())
        return archive

    @classmethod
    def create_or_replace_incomplete(
        cls, location: str | os.PathLike[str], config: StoreConfig
    ) -> Archive:
        """A new store at ``location`` made to appear whole later (:meth:`mark_complete`);
        a store left incomplete there by an interrupted run is removed first. An existing,
        complete store is opened (its own configuration applies)."""
        name = normal_location(location)
        storage = storage_at(name, create=False)
        if storage is not None:
            existing = _read_config(storage)
            if existing is not None and not existing.complete:
                with storage.lease(_holder("remove incomplete store")):
                    for info in list(storage.list_prefix("")):
                        storage.delete(info.key)
            elif existing is not None or is_format_1(storage):
                return cls.open(name)
        # its own index (the default for its location), never the one of the store it copies
        archive = cls.create(name, replace(config, complete=False, index="sqlite"))
        archive.index.replace_studies([], clear_first=True)  # the one of a removed store
        archive.index.replace_audit([])
        return archive

    def mark_complete(self) -> None:
        """Record that a store made by :meth:`create_or_replace_incomplete` is whole."""
        if not self.config.complete:
            with self.writing("complete"):
                self.config = replace(self.config, complete=True)
                self.storage.put(CONFIG, self.config.to_json())

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._indexes_lock:
            for index in self._indexes:
                index.close()
            self._indexes.clear()
        self._local = threading.local()

    # -- the index -----------------------------------------------------------------------
    @property
    def index(self) -> Index:
        """This thread's connection to the store's index."""
        index: SqlIndex | None = getattr(self._local, "index", None)
        if index is None:
            index = self._open_index()
            self._local.index = index
            with self._indexes_lock:
                self._indexes.append(index)
        return index

    def _open_index(self) -> SqlIndex:
        url = self.config.index
        if url.startswith(POSTGRES_SCHEMES):
            # psycopg is imported only by commands on a store indexed in PostgreSQL
            from dicomweb_archive.index.postgres import PostgresIndex  # noqa: PLC0415

            return PostgresIndex(url, owner=self.location)
        if url.startswith("sqlite:///"):
            return SQLiteIndex(Path(url[len("sqlite:///") - 1 :]))
        if url != "sqlite":
            raise StoreConfigError(f"{self.location}: unknown index {url!r}")
        if isinstance(self.storage, LocalStorage):
            return SQLiteIndex(self.storage.root / LOCAL / "index.sqlite")
        if isinstance(self.storage, MemoryStorage):
            return SQLiteIndex(memory_name=MEMORY_INDEX.format(self.storage.name))
        # object storage: a local SQLite file per store, rebuilt from the objects when new
        return SQLiteIndex(index_cache(self.location))

    @property
    def index_needs_rebuild(self) -> bool:
        """Whether the index lost its rows (a schema migration, or a new index file for a
        store that has studies): ``ops/reindex.py``'s ``ensure_index`` rebuilds it."""
        index = self.index
        if isinstance(index, SqlIndex) and index.needs_rebuild:
            return True
        if self.storage.head(REINDEX) is not None:
            return True
        if self._cached_generation() not in (None, generation(self.storage)):
            return True  # another machine changed the store since this cache was current
        return index.counts()["studies"] == 0 and self.storage.head(STUDIES_INDEX) is not None

    def index_rebuilt(self) -> None:
        """Called by ``reindex``: the index holds the store's rows again."""
        index = self.index
        if isinstance(index, SqlIndex):
            index.needs_rebuild = False
        if self.storage.head(REINDEX) is not None:
            self.storage.delete(REINDEX)
        self._record_generation(generation(self.storage))

    # -- the index cache of a store on object storage ------------------------------------
    def _cache_state(self) -> Path | None:
        """The file beside this machine's index cache (an S3 store's ``sqlite`` index) that
        holds the store generation the cache reflects; None for an index of the store's own
        (a directory's file, memory) or a shared one (PostgreSQL), which every writer keeps."""
        if self.config.index != "sqlite" or isinstance(self.storage, LocalStorage | MemoryStorage):
            return None
        return index_cache(self.location).with_suffix(".generation")

    def _cached_generation(self) -> int | None:
        """The generation the cache reflects: None when there is no cache to check, -1 when
        it is not known (a cache never made current: rebuilt)."""
        state = self._cache_state()
        if state is None:
            return None
        try:
            return int(state.read_text(encoding="ascii"))
        except (OSError, ValueError):
            return -1

    def _record_generation(self, value: int) -> None:
        state = self._cache_state()
        if state is not None:
            state.parent.mkdir(parents=True, exist_ok=True)
            temporary = state.with_suffix(".tmp")
            temporary.write_text(str(value), encoding="ascii")
            os.replace(temporary, state)

    def apply_index(self, ops: list[dict[str, Any]]) -> None:
        """Make the index updates a committed change carries (``store/journal.py``). The
        objects are the truth and are committed already: should the index refuse the rows,
        it is marked for a rebuild from the objects (``ensure_index``), never left to block
        the journal."""
        try:
            self._apply_index(ops)
        except Exception as exc:  # any index failure: rebuild it from the store
            self.storage.put(REINDEX, f"{type(exc).__name__}: {exc}\n".encode())

    def _apply_index(self, ops: list[dict[str, Any]]) -> None:
        index = self.index
        for op in ops:
            if op["op"] == "studies":
                index.replace_studies(
                    ((u[0], u[1], u[2], u[3]) for u in op["updates"]),
                    clear_first=bool(op.get("clear")),
                )
            elif op["op"] == "patch":
                index.patch_studies((u[0], u[1], u[2], u[3]) for u in op["updates"])
            elif op["op"] == "audit":
                index.add_audit(op["rows"])
            elif op["op"] == "audit_change":
                index.replace_change_audit(op["change"], op["rows"])
            else:
                raise ValueError(f"unknown index update {op['op']!r}")

    def audit_rows(self) -> Iterator[dict[str, Any]]:
        """Every audit row, from the change records (the truth the index copies)."""
        for change_id in change_ids(self.storage):
            yield from audit_rows(read_change(self.storage, self.keys, change_id))

    # -- writing -------------------------------------------------------------------------
    @contextmanager
    def writing(self, holder: str, *, wait: bool = True) -> Iterator[None]:
        """Hold the write lease (re-entrant within this archive); the first entry recovers
        from an interrupted writer."""
        with self._lease_lock:
            if self._lease_depth:
                self._lease_depth += 1
                try:
                    yield
                finally:
                    self._lease_depth -= 1
                return
            self.index  # noqa: B018 - an index that cannot be reached stops a writer before it writes
            with self.storage.lease(_holder(holder), wait=wait):
                self._lease_depth = 1
                self._lease_owner = threading.get_ident()
                try:
                    recover(self.storage, self.keys, self.apply_index)
                    yield
                finally:
                    self._lease_depth = 0

    @property
    def holding_lease(self) -> bool:
        """Whether this thread holds the write lease (another thread of this process that
        reads meanwhile is a reader like any other: it must not see a change half-applied)."""
        return self._lease_depth > 0 and self._lease_owner == threading.get_ident()

    def transaction(self) -> Transaction:
        return Transaction(self.storage)

    def change(self, kind: str, **fields: Any) -> ChangeSet:
        """A change of ``kind`` (``store/changes.py``) to fill and :meth:`commit`."""
        return ChangeSet(self.storage, self.keys, kind, **fields)

    @contextmanager
    def changing(self, kind: str, **fields: Any) -> Iterator[ChangeSet]:
        """A change of ``kind`` to fill in the block (under the lease): committed when the
        block ends, unless it called :meth:`ChangeSet.abort`; forgotten if the block raises."""
        change = self.change(kind, **fields)
        try:
            yield change
        except BaseException:
            change.abort()
            raise
        if not change.aborted:
            self.commit(change)

    def commit(self, change: Transaction | ChangeSet) -> None:
        """Commit a transaction or change set (under the lease)."""
        if not self.holding_lease:
            raise RuntimeError("commit outside Archive.writing()")
        txn = change.txn if isinstance(change, ChangeSet) else change
        before = self._cached_generation()
        try:
            if isinstance(change, ChangeSet):
                change.finish()
            txn.commit(self.apply_index)
        except BaseException as exc:
            if not txn.committed:
                change.abort()
            elif isinstance(exc, ArchiveError):  # its journal is kept: a writer applies it
                exc.add_context(
                    f"; change {txn.id} was committed: the next command that writes to the "
                    "store finishes it"
                )
            raise
        if before is not None and before >= 0:
            after = generation(self.storage)
            if after == before + 1:  # the cache was current and took this change's rows
                self._record_generation(after)

    # -- reading -------------------------------------------------------------------------
    def read(self, read: Callable[[], T]) -> T:
        """``read()`` on a state no change was being applied to (``store/journal.py``)."""
        if self.holding_lease:
            return read()  # the writer itself: nothing is half-applied between its commits
        return read_consistently(self.storage, read)

    def read_to_write(self, read: Callable[[], T]) -> T:
        """:meth:`read` for a writer's plan (an edit's, a delete's), made before it takes the
        lease. A change whose writer died after its commit point (its journal left, not
        applied) is applied first when no writer holds the lease: a reader waits for it in
        vain (only a writer applies it), and this one is about to write anyway. When another
        writer holds the lease, that writer applies it and the read waits as any read does."""
        if not self.holding_lease and self.storage.head(JOURNAL) is not None:
            with suppress(StoreLockedError), self.writing("recovery", wait=False):
                pass  # taking the lease recovers (:meth:`writing`)
        return self.read(read)


def index_cache(location: str) -> Path:
    """Where this machine keeps the SQLite index of a store on object storage:
    ``$DICOMWEB_ARCHIVE_CACHE`` (default ``~/.cache/dicomweb-archive``), ``index/``, a name
    derived from the location. The index is rebuilt from the store's objects when the file is
    new (``ensure_index``): it is a cache, as the index of every store is."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    root = os.environ.get(CACHE_ENV) or Path(cache) / "dicomweb-archive"
    name = hashlib.sha256(location.encode()).hexdigest()[:24]
    return Path(root) / "index" / f"{name}.sqlite"


def _read_config(storage: Storage) -> StoreConfig | None:
    try:
        data = storage.get(CONFIG)
    except NoSuchObjectError:
        return None
    return StoreConfig.from_json(data, location=storage.location)


def _default_config() -> StoreConfig:
    from dicomweb_archive.dicom.recompression import Recompression  # noqa: PLC0415 - numpy

    return StoreConfig(recompression=Recompression().to_json())


def _holder(what: str) -> str:
    return f"{what} (pid {os.getpid()})"
