"""The PostgreSQL index backend (psycopg 3 with a connection pool), for stores that several
processes or machines query and write: ``postgresql://USER@HOST:PORT/DB?schema=NAME``.

Implements :class:`~dicomweb_archive.index.protocol.Index` with the statements of
``index/sql.py``; the schema is the SQLite one (``index/schema.py``, the same ordered
migrations), with text columns ``COLLATE "C"`` (code point order and case-sensitive comparison,
as SQLite's), foreign keys checked at commit, and the ``user`` column quoted. The migrations
applied are counted in the table ``index_schema``; a transaction-scoped advisory lock keeps two
processes from migrating at once. ``schema`` (a parameter of the URL, not of libpq) puts the
tables in their own PostgreSQL schema, made if absent: several stores can share one database.
Pattern matching is ``LIKE`` with ``!`` as the escape character (``*`` and ``?`` are DICOM's
wildcards, PS3.4 C.2.2.2.4); PN matching folds case with ``upper`` on both sides (C.2.2.2.1.1).

Connections come from one :class:`psycopg_pool.ConnectionPool` per server and database in a
process, shared by the threads of ``serve`` and by the stores indexed there (each borrow sets
the search path to its store's schema, for one read or one transaction).
Every write is one transaction (``READ COMMITTED``: a reader sees a change's rows all or none).
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql as pgsql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from dicomweb_archive.errors import IndexUnavailableError, StoreConfigError
from dicomweb_archive.index.protocol import Row
from dicomweb_archive.index.schema import MIGRATIONS, REBUILDS
from dicomweb_archive.index.sql import Dialect, SqlIndex, dicom_like

SCHEMES = ("postgresql://", "postgres://")
#: connections one process keeps to one index at most (``serve``'s threads share them)
POOL_SIZE = 8
#: seconds to wait for the server to accept a connection
CONNECT_TIMEOUT = 10
_POOLS: dict[str, ConnectionPool[psycopg.Connection[Any]]] = {}
_POOLS_LOCK = threading.Lock()
_MIGRATION_LOCK = 0x64696377  # advisory lock key: "dicw"
# the pool retries a lost server in the background and logs each attempt: our errors say it in
# one sentence; an application that configures logging still receives these records
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())


def _pattern(expression: str, value: str, fold: bool) -> tuple[str, list[Any]]:
    if fold:
        # both sides folded under COLLATE "C", as SQLite's upper (ASCII letters only): the
        # database's own collation would fold the value's other letters and not the column's
        return (
            f"upper({expression}) LIKE upper(CAST(? AS TEXT) COLLATE \"C\") ESCAPE '!'",
            [dicom_like(value)],
        )
    return f"{expression} LIKE ? ESCAPE '!'", [dicom_like(value)]


def split_url(url: str) -> tuple[str, str | None]:
    """The libpq connection URL and the ``schema`` parameter of an index URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    if schema is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise StoreConfigError(
            f"index schema {schema!r}: use lower-case letters, digits and _ (at most 63)"
        )
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def _postgres_script(script: str) -> str:
    """A migration of ``index/schema.py`` in PostgreSQL's terms (see the module docstring)."""
    script = re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', script)
    # SQLite does not enforce foreign keys; here they hold at each commit (a study's rows are
    # replaced within one transaction, parents before children)
    script = re.sub(r"(REFERENCES \w+\([^)]*\))", r"\1 DEFERRABLE INITIALLY DEFERRED", script)
    return re.sub(r"^(\s*)user TEXT", r'\1"user" TEXT', script, flags=re.MULTILINE)


def _placeholders(statement: str) -> str:
    """``?`` placeholders (the shared statements') as psycopg's ``%s``."""
    return statement.replace("%", "%%").replace("?", "%s")


class _Session:
    """A psycopg connection as :class:`~dicomweb_archive.index.sql.Session`."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        self.conn.execute(_placeholders(sql), tuple(args))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        with self.conn.cursor() as cursor:
            cursor.executemany(_placeholders(sql), [tuple(r) for r in rows])
            return max(cursor.rowcount, 0)

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self.conn.cursor(row_factory=dict_row) as cursor:
            cursor.execute(_placeholders(sql), tuple(args))
            return list(cursor.fetchall())

    def first(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self.conn.execute(_placeholders(sql), tuple(args)).fetchone()
        return None if row is None else tuple(row)


def _pool(url: str) -> ConnectionPool[psycopg.Connection[Any]]:
    """The process's pool for the server and database of ``url`` (schemas share it)."""
    conninfo = split_url(url)[0]
    with _POOLS_LOCK:
        pool = _POOLS.get(conninfo)
        if pool is None:
            kwargs: dict[str, Any] = {"autocommit": True}
            try:  # one connection first: a refusal is one line, not the pool's retries
                psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT, **kwargs).close()
            except psycopg.Error as exc:
                raise IndexUnavailableError(
                    f"index {_safe(url)}: cannot connect ({_why(exc)})"
                ) from exc
            pool = ConnectionPool(
                conninfo, min_size=1, max_size=POOL_SIZE, kwargs=kwargs, open=False
            )
            try:
                pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            except Exception as exc:  # psycopg's errors, and the pool's own timeout
                pool.close()
                raise IndexUnavailableError(
                    f"index {_safe(url)}: cannot connect ({_why(exc)})"
                ) from exc
            _POOLS[conninfo] = pool
        return pool


def _drop(pool: ConnectionPool[psycopg.Connection[Any]]) -> None:
    """Forget a pool whose connection broke (the server stopped or restarted): the next borrow
    makes a new one after one connection attempt (:func:`_pool`), so that a server that is
    down is reported at once and a server that is back is used at once, rather than after the
    pool's own retries and their growing delays."""
    with _POOLS_LOCK:
        for conninfo, known in list(_POOLS.items()):
            if known is pool:
                del _POOLS[conninfo]
    # the borrowers waiting on it fail at once and its retries stop; its threads are waited
    # for elsewhere than in the request that found the connection broken
    threading.Thread(target=pool.close, name="index-pool-close", daemon=True).start()


@atexit.register
def _close_pools() -> None:
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.close()
        _POOLS.clear()


class PostgresIndex(SqlIndex):
    """The PostgreSQL index of one store (see the module docstring)."""

    dialect = Dialect(no_limit=None, pattern=_pattern)

    def __init__(self, url: str, *, owner: str | None = None) -> None:
        """``owner``: the location of the store this index belongs to (recorded by the first
        store that opens it; another store is refused: two stores in one schema would each
        replace the other's rows)."""
        self.url = url
        self._schema = split_url(url)[1]
        self._owner = owner
        _pool(url)  # a server that refuses is reported now
        schemas = [self._schema] if self._schema else ["public"]
        self._search_path = pgsql.SQL("SET search_path TO {}").format(
            pgsql.SQL(", ").join(pgsql.Identifier(name) for name in schemas)
        )
        #: migrations applied now that require the rows to be rebuilt from the store
        self.needs_rebuild = self._migrate()

    def close(self) -> None:
        """Nothing to close: the connections are the process's pool's."""

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool, its search path set to this index's schema. A server
        that is gone, or stops answering, is :class:`IndexUnavailableError` in one sentence
        (writers then leave the index to be rebuilt, ``Archive.apply_index``)."""
        pool = _pool(self.url)
        broken = False
        try:
            with pool.connection(timeout=CONNECT_TIMEOUT) as conn:
                try:
                    conn.execute(self._search_path)
                    yield conn
                finally:
                    broken = conn.broken
        except (psycopg.OperationalError, PoolTimeout) as exc:
            if broken:
                _drop(pool)
            raise IndexUnavailableError(
                f"index {_safe(self.url)}: the server does not answer ({_why(exc)})"
            ) from exc

    @contextmanager
    def _read(self) -> Iterator[_Session]:
        with self._connection() as conn:
            yield _Session(conn)

    @contextmanager
    def _write(self) -> Iterator[_Session]:
        with self._connection() as conn, conn.transaction():
            yield _Session(conn)

    def _migrate(self) -> bool:
        with self._connection() as conn, conn.transaction():
            if self._schema is not None:
                conn.execute(
                    pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        pgsql.Identifier(self._schema)
                    )
                )
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS index_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM index_schema").fetchone()
            version = int(row[0]) if row and row[0] is not None else 0
            rebuild = False
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                conn.execute(_postgres_script(script))
                conn.execute("INSERT INTO index_schema (version) VALUES (%s)", (number,))
                rebuild |= version > 0 and number in REBUILDS
            self._claim(conn)
            return rebuild

    def _claim(self, conn: psycopg.Connection[Any]) -> None:
        """Record this index's store, or refuse another store (see ``__init__``)."""
        if self._owner is None:
            return
        conn.execute("CREATE TABLE IF NOT EXISTS index_owner (store TEXT NOT NULL)")
        row = conn.execute("SELECT store FROM index_owner").fetchone()
        if row is None:
            conn.execute("INSERT INTO index_owner (store) VALUES (%s)", (self._owner,))
        elif row[0] != self._owner:
            where = f"schema {self._schema}" if self._schema else "the public schema"
            raise StoreConfigError(
                f"index {_safe(self.url)}: {where} holds the index of the store at {row[0]}; "
                "give each store its own schema (?schema=NAME)"
            )


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else "no reason given"
