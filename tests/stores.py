"""Stores for tests on either storage (``--storage``), and what tests read of them.

Tests never touch a store's files directly: they read its objects through its storage, so
that every test runs on both backends.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from dicomweb_archive import Archive, IngestReport, ingest
from dicomweb_archive.ops.ingest_types import PipelineOptions
from dicomweb_archive.store.instance import InstanceKey, read_instance_metadata
from dicomweb_archive.store.memory import forget as forget_memory
from dicomweb_archive.store.storage import PRIVATE, from_json_gz

BACKEND = "local"
#: the S3 stores :func:`location` named, in order, until :func:`forget` removes them
MADE: list[str] = []
#: with ``--index postgres``: the server's URL, the schemas handed to new stores (in order) and
#: those emptied for reuse (a new schema costs its tables and indexes: 60 to 160 ms)
POSTGRES_URL: str | None = None
SCHEMAS: list[str] = []
_FREE_SCHEMAS: list[str] = []


def location(tmp_path: Path, name: str = "store") -> str:
    if BACKEND == "memory":
        return f"memory://{name}-{uuid.uuid4().hex[:12]}"
    if BACKEND == "s3":
        from tests.s3server import BUCKET

        where = f"s3://{BUCKET}/{name}-{uuid.uuid4().hex[:12]}"
        MADE.append(where)
        return where
    return str(tmp_path / name)


def forget(where: str) -> None:
    """Free a store's memory, or remove a store's objects from the S3 bucket."""
    if where.startswith("memory://"):
        forget_memory(where)
    elif where in MADE:
        from dicomweb_archive.store.s3 import S3Storage

        MADE.remove(where)
        S3Storage(where).delete_prefix("")


def marks() -> tuple[int, int]:
    """How many S3 stores and index schemas were handed out so far (for :func:`release`)."""
    return len(MADE), len(SCHEMAS)


def release(since: tuple[int, int]) -> None:
    """Remove the S3 stores, and empty for reuse the index schemas, handed out after
    ``since`` (those of a test, or of a module's fixtures)."""
    stores, schemas = since
    for where in MADE[stores:]:
        forget(where)
    emptied = SCHEMAS[schemas:]
    del SCHEMAS[schemas:]
    if emptied and POSTGRES_URL is not None:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for name in emptied:
                tables = conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = %s AND table_name <> 'index_schema'",
                    (name,),
                ).fetchall()
                with conn.transaction():  # foreign keys are checked at commit
                    for (table,) in tables:
                        conn.execute(f'DELETE FROM "{name}"."{table}"')
                _FREE_SCHEMAS.append(name)


def index_schema() -> str:
    """A schema for a new store's index: an emptied one, or a new name."""
    name = _FREE_SCHEMAS.pop() if _FREE_SCHEMAS else f"s_{uuid.uuid4().hex[:16]}"
    SCHEMAS.append(name)
    return name


def open_store(where: str | Path) -> Archive:
    return Archive.open(where)


def objects(where: str | Path, *, private: bool = False) -> dict[str, bytes]:
    """Every object of the store (without the private prefix unless ``private``)."""
    with Archive.open(where) as archive:
        storage = archive.storage
        return {
            info.key: storage.get(info.key)
            for info in storage.list_prefix("")
            if private or not info.key.startswith(PRIVATE)
        }


def tree_hashes(where: str | Path, *, private: bool = False) -> dict[str, str]:
    """SHA-256 of every object (the served tree and deduplicated data; all with ``private``)."""
    return {k: hashlib.sha256(v).hexdigest() for k, v in objects(where, private=private).items()}


def etags(where: str | Path, prefix: str = "") -> dict[str, str]:
    """The etag of every object under ``prefix``: unchanged objects keep theirs."""
    with Archive.open(where) as archive:
        return {i.key: i.etag for i in archive.storage.list_prefix(prefix)}


def read_json(where: str | Path, key: str) -> Any:
    with Archive.open(where) as archive:
        return from_json_gz(archive.storage.get(key))


def served_metadata(where: str | Path, study: str, series: str, sop: str) -> Any:
    """An instance's served metadata: its own metadata.gz (``-i``), else its object in the
    series metadata."""
    with Archive.open(where) as archive:
        return read_instance_metadata(
            archive.storage, archive.keys, InstanceKey(study, series, sop)
        )


def read(where: str | Path, key: str) -> bytes:
    with Archive.open(where) as archive:
        return archive.storage.get(key)


def exists(where: str | Path, key: str) -> bool:
    with Archive.open(where) as archive:
        return archive.storage.head(key) is not None


def keys_under(where: str | Path, prefix: str) -> list[str]:
    with Archive.open(where) as archive:
        return [info.key for info in archive.storage.list_prefix(prefix)]


def index_dump(where: str | Path) -> dict[str, list[dict[str, object]]]:
    with Archive.open(where) as archive:
        return archive.index.dump()


def size(where: str | Path) -> int:
    """Bytes of every object but the private ones."""
    return sum(len(v) for v in objects(where).values())


def ingested(
    where: str | Path,
    files: list[Path] | list[str] | list[Path | str],
    *,
    options: PipelineOptions | None = None,
    replace: bool | None = None,
) -> IngestReport:
    """Ingest ``files`` into the store at ``where`` (made when there is none)."""
    with Archive.open_or_create(where) as archive:
        return ingest(archive, files, options=options, replace=replace)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``dicomweb-archive ARGS`` in its own process, with this environment (an S3 endpoint's
    or an index cache's variables included); output captured."""
    return subprocess.run(
        [sys.executable, "-m", "dicomweb_archive.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=os.environ.copy(),
    )
