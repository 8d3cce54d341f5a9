"""The SQLite index backend (Python's sqlite3, WAL mode, schema as ordered migrations).

Implements :class:`~dicomweb_archive.index.protocol.Index` with the statements of
``index/sql.py``. Every change is one transaction, so a reader (in WAL mode, never blocked)
sees a study's rows before or after a change, never half of it. A store on local disk keeps
its index in ``.dicomweb-archive/local/index.sqlite``; a memory store in a named in-memory
database; a store on S3 in a cache file of the machine (``archive.py``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from dicomweb_archive.index.protocol import Row
from dicomweb_archive.index.schema import MIGRATIONS, REBUILDS
from dicomweb_archive.index.sql import Dialect, SqlIndex, dicom_glob

_MEMORY: dict[str, sqlite3.Connection] = {}  # keeps named in-memory databases alive
_MEMORY_LOCK = threading.Lock()


def drop_memory_database(name: str) -> None:
    """Let a named in-memory database go (when the last connection to it closes)."""
    with _MEMORY_LOCK:
        keeper = _MEMORY.pop(name, None)
    if keeper is not None:
        keeper.close()


def _pattern(expression: str, value: str, fold: bool) -> tuple[str, list[Any]]:
    """``GLOB`` (case-sensitive; ``upper`` on both sides for PN, PS3.4 C.2.2.2.1.1)."""
    if fold:
        return f"upper({expression}) GLOB upper(?)", [dicom_glob(value)]
    return f"{expression} GLOB ?", [dicom_glob(value)]


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of a migration script, one by one."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()


class _Session:
    """sqlite3's connection as :class:`~dicomweb_archive.index.sql.Session`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, tuple(args))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        before = self.conn.total_changes
        self.conn.executemany(sql, rows)
        return self.conn.total_changes - before

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        cursor = self.conn.execute(sql, tuple(args))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in cursor]

    def first(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self.conn.execute(sql, tuple(args)).fetchone()
        return None if row is None else tuple(row)


def _use_wal(conn: sqlite3.Connection, wait: float = 30.0) -> None:
    """Put a database file in WAL mode. The switch needs the file to itself and SQLite answers
    "database is locked" at once, without its busy handler, while another connection opening the
    same new file holds it; so the switch is tried again (another connection may also have made
    it meanwhile) until ``wait`` seconds have passed."""
    deadline = time.monotonic() + wait
    delay = 0.005
    while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            conn.execute("PRAGMA journal_mode = wal")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class SQLiteIndex(SqlIndex):
    """The SQLite index of one store: a file, or (``memory_name``) a named in-memory database."""

    dialect = Dialect(no_limit=-1, pattern=_pattern)

    def __init__(self, path: Path | None = None, *, memory_name: str | None = None) -> None:
        # one connection per thread (the Archive keeps them apart), closed from any thread
        if memory_name is not None:
            uri = f"file:{memory_name}?mode=memory&cache=shared"
            with _MEMORY_LOCK:
                if memory_name not in _MEMORY:
                    _MEMORY[memory_name] = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        else:
            assert path is not None
            path.parent.mkdir(parents=True, exist_ok=True)
            # the busy timeout from the start: switching a new file to WAL takes a lock too
            self.conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
            _use_wal(self.conn)
        self.path = path
        self.conn.execute("PRAGMA busy_timeout = 30000")
        self._session = _Session(self.conn)
        #: migrations applied now that require the rows to be rebuilt from the store
        self.needs_rebuild = self._migrate()

    def __enter__(self) -> SQLiteIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _read(self) -> Iterator[_Session]:
        yield self._session

    @contextmanager
    def _write(self) -> Iterator[_Session]:
        with self.conn:
            yield self._session

    def _migrate(self) -> bool:
        """Apply the migrations the database lacks, each in one write transaction. Several
        connections may open a new index at once (a server's threads, ``scp`` and STOW-RS
        writers): ``BEGIN IMMEDIATE`` makes them take turns, and each reads the version again
        inside its transaction, so that no migration runs twice (running one again could
        succeed and set the version back)."""
        conn = self.conn
        start = self._version()
        rebuild = False
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= start:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._version() < number:
                    for statement in _statements(script):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {number}")
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            rebuild |= start > 0 and number in REBUILDS
        return rebuild

    def _version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])
