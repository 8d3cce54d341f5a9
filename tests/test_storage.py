"""The storage protocol and the journal, on both backends; a full device (issue 11, defect 12)."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pydicom
import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive, ingest
from dicomweb_archive.cli.main import SEED_APPS, app
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.errors import (
    NoSuchObjectError,
    ObjectExistsError,
    OutsideStoreError,
    PreconditionFailedError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    WriteInProgressError,
)
from dicomweb_archive.ops.update import update
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.dedup import current_groups, read_study_records
from dicomweb_archive.store.journal import Transaction, read_consistently, replay
from dicomweb_archive.store.keys import GENERATION, JOURNAL, STAGING
from dicomweb_archive.store.local import LocalStorage
from dicomweb_archive.store.memory import MemoryStorage, forget
from dicomweb_archive.store.s3 import S3Storage
from dicomweb_archive.store.storage import ObjectInfo, Storage
from tests.factory import write_series
from tests.s3server import BUCKET
from tests.stores import tree_hashes

runner = CliRunner()


@pytest.fixture(params=["local", "memory", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path)
    elif request.param == "memory":
        yield MemoryStorage("protocol-test")
    else:
        request.getfixturevalue("s3_endpoint")
        yield S3Storage(f"s3://{BUCKET}/protocol-{uuid.uuid4().hex[:12]}")


def test_put_get_head_and_etags(storage: Storage) -> None:
    """A put is read back whole; replacing an object changes its etag; head of nothing is
    None; get of nothing raises NoSuchObjectError."""
    first = storage.put("a/b/c.bin", b"one")
    assert storage.get("a/b/c.bin") == b"one"
    assert storage.head("a/b/c.bin") == first and first.size == 3
    second = storage.put("a/b/c.bin", [b"tw", b"o!"])
    assert second.etag != first.etag and storage.get("a/b/c.bin") == b"two!"
    assert storage.head("a/b/none") is None
    with pytest.raises(NoSuchObjectError):
        storage.get("a/b/none")
    with storage.open("a/b/c.bin") as handle:
        assert handle.read() == b"two!"


def test_conditional_puts(storage: Storage) -> None:
    """Only if absent fails on an existing object; only if unchanged fails on another etag;
    neither changes the object when it fails."""
    info = storage.put("k", b"1", if_absent=True)
    with pytest.raises(ObjectExistsError):
        storage.put("k", b"2", if_absent=True)
    with pytest.raises(PreconditionFailedError):
        storage.put("k", b"3", if_match="not-the-etag")
    assert storage.get("k") == b"1"
    storage.put("k", b"4", if_match=info.etag)
    assert storage.get("k") == b"4"
    with pytest.raises(PreconditionFailedError):
        storage.put("missing", b"5", if_match=info.etag)


def test_copy_delete_list_children(storage: Storage) -> None:
    """Copy gives the target the source's bytes; delete of nothing is fine; listing is by
    prefix in key order; children are one level down, deeper levels ending with '/'."""
    for key in ("s/2/x", "s/1/y", "s/1/z/w", "s10/q", "t"):
        storage.put(key, key.encode())
    storage.copy("s/1/y", "u/copy")
    assert storage.get("u/copy") == b"s/1/y"
    assert [i.key for i in storage.list_prefix("s/")] == ["s/1/y", "s/1/z/w", "s/2/x"]
    assert [i.key for i in storage.list_prefix("s")] == [
        "s/1/y",
        "s/1/z/w",
        "s/2/x",
        "s10/q",
    ]
    assert storage.children("s/") == ["1/", "2/"]
    assert storage.children("s/1/") == ["y", "z/"]
    storage.delete("s/1/z/w")
    storage.delete("s/1/z/w")
    assert storage.children("s/1/") == ["y"]
    with pytest.raises(NoSuchObjectError):
        storage.copy("nothing", "else")


@pytest.mark.parametrize("fresh", [False, True])
def test_a_failed_put_leaves_no_prefix(storage: Storage, fresh: bool) -> None:
    """A prefix exists only while it holds objects, as on object storage: a put that fails
    half-way leaves no empty folder behind (verify once took one for an instance without
    its info record), and deleting a missing object still removes a folder left empty."""

    def failing() -> Iterator[bytes]:
        yield b"half"
        raise OSError(errno.EIO, "the device went away")

    storage.put("a/kept", b"x")
    with pytest.raises(OSError, match="went away"):
        storage.put("a/b/c/object", failing(), fresh=fresh)
    assert storage.children("a/") == ["kept"]
    assert storage.head("a/b/c/object") is None
    if isinstance(storage, LocalStorage):  # a folder made by some other failure
        (Path(storage.location) / "a" / "d" / "e").mkdir(parents=True)
        storage.delete("a/d/e/missing")
        assert storage.children("a/") == ["kept"]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/./b", "a\\b", "a/b/"])
def test_keys_are_checked(storage: Storage, key: str) -> None:
    """A key that could leave the store, or is not a plain relative path, is refused."""
    with pytest.raises(StoreError, match="not a storage key"):
        storage.put(key, b"x")


def test_the_lease_keeps_writers_apart(storage: Storage) -> None:
    """While one writer holds the lease, another cannot take it without waiting, and readers
    see who holds it."""
    with storage.lease("first writer"):
        assert "first writer" in (storage.lease_holder() or "")
        errors: list[BaseException] = []

        def second() -> None:
            try:
                with storage.lease("second", wait=False):
                    pass
            except StoreLockedError as exc:
                errors.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
        assert errors and "first writer" in str(errors[0])
    assert storage.lease_holder() is None


def test_local_reads_never_leave_the_store(tmp_path: Path) -> None:
    """A store file replaced by a link to a file outside the store is not read."""
    outside = tmp_path / "secret"
    outside.write_bytes(b"not yours")
    storage = LocalStorage(tmp_path / "store")
    storage.put("studies/x", b"mine")
    path = tmp_path / "store" / "studies" / "x"
    path.unlink()
    path.symlink_to(outside)
    with pytest.raises(OutsideStoreError, match="outside the store"):
        storage.get("studies/x")


def test_a_transaction_is_all_or_nothing(storage: Storage) -> None:
    """Staged objects are invisible until commit; reads through the transaction see them;
    abort leaves nothing; a rollback to a savepoint forgets what came after it."""
    storage.put("keep", b"old")
    storage.put("gone", b"bye")
    txn = Transaction(storage)
    txn.put("keep", b"new")
    txn.delete("gone")
    point = txn.savepoint()
    txn.put("later", b"x")
    txn.rollback(point)
    assert txn.get("keep") == b"new" and txn.head("gone") is None and txn.head("later") is None
    assert storage.get("keep") == b"old" and storage.get("gone") == b"bye"
    assert [i.key for i in txn.list_prefix("")] == ["keep"]
    txn.commit(None)
    assert storage.get("keep") == b"new" and storage.head("gone") is None
    assert storage.head("later") is None and storage.head(JOURNAL) is None
    assert not list(storage.list_prefix(STAGING))
    other = Transaction(storage)
    other.put("keep", b"newer")
    other.abort()
    assert storage.get("keep") == b"new" and not list(storage.list_prefix(STAGING))


def test_a_journal_left_by_a_crash_is_replayed(storage: Storage) -> None:
    """A journal written (the commit point) but not applied is applied by the next writer;
    staging objects of a transaction that never committed are removed."""
    storage.put("a", b"1")
    txn = Transaction(storage)
    txn.put("a", b"2")
    txn.put("b", b"3")
    record = {
        "id": txn.id,
        "generation": 1,
        "puts": sorted(txn.staged.items()),
        "deletes": [],
        "index": [],
    }
    import json

    storage.put(JOURNAL, json.dumps(record).encode())
    orphan = Transaction(storage)
    orphan.put("c", b"never")
    assert replay(storage, None) == txn.id
    assert storage.get("a") == b"2" and storage.get("b") == b"3" and storage.head("c") is None
    assert storage.head(JOURNAL) is None and not list(storage.list_prefix(STAGING))
    assert storage.get(GENERATION) == b"1"


def test_a_consistent_read_checks_the_journal_after_it_only(storage: Storage) -> None:
    """A read while no change is applied costs three checks (each an S3 request): the
    generation before and after, and that no journal is there after; a journal before the
    read is caught by those after it."""
    heads: list[str] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(storage, name)

        def head(self, key: str) -> ObjectInfo | None:
            heads.append(key)
            return storage.head(key)

    assert read_consistently(cast(Storage, Counting()), lambda: 1) == 1
    assert sorted(heads) == sorted([GENERATION, GENERATION, JOURNAL])


def test_readers_wait_for_a_change_being_applied(storage: Storage) -> None:
    """A reader does not return what it read while a journal was there; once it is gone the
    read goes on; with no patience left it says which change is in progress."""
    storage.put(JOURNAL, b'{"id": "abc"}')
    with pytest.raises(WriteInProgressError, match="abc"):
        read_consistently(storage, lambda: 1, patience=0.1)

    def finish() -> None:
        time.sleep(0.2)
        storage.delete(JOURNAL)

    thread = threading.Thread(target=finish)
    thread.start()
    assert read_consistently(storage, lambda: 42, patience=10) == 42
    thread.join()


def _full_store(location: str, quota: int) -> Archive:
    archive = Archive.open_or_create(location)
    assert isinstance(archive.storage, MemoryStorage)
    archive.storage.quota = archive.storage.used + quota
    return archive


def test_a_full_store_stops_ingest_cleanly(tmp_path: Path) -> None:
    """Defect 12: when the store is full, ingest reports it in one line per file it tried
    and counts the files it did not read; nothing half-written is left; once there is room a
    new run completes the store."""
    files = write_series(tmp_path / "in", count=6, rows=128, columns=128)
    location = "memory://full-ingest"
    try:
        archive = _full_store(location, 120_000)
        report = ingest(archive, files)
        assert not report.ok and report.instances >= 1
        assert any("no space left" in (r.error or "") for r in report.results)
        assert report.not_read + len(report.failures) + report.instances == len(files)
        assert not list(archive.storage.list_prefix(STAGING))
        assert isinstance(archive.storage, MemoryStorage)
        archive.storage.quota = None
        again = ingest(archive, files)
        assert again.ok
        final = verify(archive)
        assert final.ok and final.complete, final.findings
    finally:
        forget(location)


def test_a_full_store_leaves_an_update_undone(tmp_path: Path) -> None:
    """Defect 12: an update that does not fit fails with one error and changes nothing."""
    files = write_series(tmp_path / "in", count=3, patient_id="P1")
    location = "memory://full-update"
    try:
        archive = _full_store(location, 10**9)
        assert ingest(archive, files).ok
        before = tree_hashes(location, private=True)
        assert isinstance(archive.storage, MemoryStorage)
        archive.storage.quota = archive.storage.used + 2000
        with pytest.raises(StoreFullError, match="no space left"):
            update(archive, "patient", "P1", ["PatientName=NO^ROOM"])
        assert tree_hashes(location, private=True) == before
        result = runner.invoke(
            app,
            normalise_argv(["update", "-o", location, "-patient", "P1", "PatientName=NO^ROOM"]),
        )
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert result.output.startswith("error: ") and "no space left" in result.output
        assert tree_hashes(location, private=True) == before
    finally:
        forget(location)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.local
def test_a_full_disk_gives_one_line_and_no_leftovers(tmp_path: Path, small_disk: Path) -> None:
    """Defect 12 on a real file system: ENOSPC is one error line, exit code 1, no temporary
    file is left, and later commands still work."""
    write_series(tmp_path / "in", count=12, rows=256, columns=256)
    store = small_disk / "store"
    result = runner.invoke(
        SEED_APPS["mkdicomweb"], ["--no-recompress", "-o", str(store), str(tmp_path / "in")]
    )
    assert result.exit_code == 1, result.output
    assert "no space left" in result.output and "Traceback" not in result.output
    assert not list((store / ".dicomweb-archive" / "local" / "tmp").glob("*"))
    result = runner.invoke(app, ["verify", "-o", str(store)])
    assert result.exit_code in (0, 4), result.output
    assert "Traceback" not in result.output
    assert os.path.ismount(small_disk)


def test_barrier_makes_plain_puts_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory's barrier flushes the puts written without fsync since the last barrier
    (an instance's frames and info record, before scp answers "stored"), and only then."""
    calls: list[int] = []
    monkeypatch.setattr(os, "sync", lambda: calls.append(1))
    storage = LocalStorage(tmp_path)
    storage.barrier()
    assert calls == []
    storage.put("studies/a/info.json.gz", b"x", fresh=True)
    storage.barrier()
    assert calls == [1]
    storage.barrier()
    assert calls == [1]
    storage.copy("studies/a/info.json.gz", "studies/b/info.json.gz")
    storage.barrier()
    assert calls == [1, 1]


def test_the_group_index_is_read_without_a_check_first(tmp_path: Path, store: str) -> None:
    """Reading a study's records reads its group index once, with no existence check before
    (a request more on object storage); a study with none has no groups."""
    files = write_series(tmp_path / "in", count=2)
    study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with Archive.open_or_create(store) as archive:
        ingest(archive, files)
        heads: list[str] = []
        real = archive.storage

        class Counting:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def head(self, key: str) -> ObjectInfo | None:
                heads.append(key)
                return real.head(key)

        counting = cast(Storage, Counting())
        records = read_study_records(counting, archive.keys, study)
        assert len(records.records) == 2
        assert archive.keys.group_index(study) not in heads
        assert current_groups(counting, archive.keys, "1.2.3.999") == []
