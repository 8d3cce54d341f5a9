"""A backend that goes away in the middle of a batch (issue 16, outside tester): the PostgreSQL
index stopped, or the S3 endpoint gone. Like a full store, the first such failure stops the
batch: the files after it are counted "not read", in one line that says what is unavailable
and that running the same command again completes the work, without obstore's internals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dicomweb_archive import Archive, ingest
from dicomweb_archive.errors import IndexUnavailableError, StorageUnavailableError
from dicomweb_archive.ops.batch import BatchLine, run_batch
from dicomweb_archive.ops.ingest_types import FileResult
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store import journal
from dicomweb_archive.store.s3 import LEASE_SECONDS_ENV, TIMEOUT_ENV
from tests.factory import write_series
from tests.pgserver import binaries, postgres_cluster
from tests.s3server import BUCKET, s3_server_process
from tests.stores import run_cli

FILES = 12


@pytest.mark.skipif(binaries() is None, reason="PostgreSQL is not installed")
def test_the_index_stopped_mid_batch_stops_it(tmp_path: Path) -> None:
    """The PostgreSQL server stopped after the first file: the batch stops at the first file
    that needs the index; the rest is counted not read, with the index as the reason; the
    same run once the server is back completes the store."""
    files = write_series(tmp_path / "in", count=FILES)
    with postgres_cluster() as cluster:
        archive = Archive.open_or_create(str(tmp_path / "s"), index=f"{cluster.url}?schema=midway")

        stopped: list[FileResult] = []

        def stop_after_first(result: FileResult) -> None:
            if not stopped:
                stopped.append(result)
                cluster.stop()

        report = ingest(archive, files, progress=stop_after_first)
        assert not report.ok
        failed = [r for r in report.results if r.status == "failed"]
        assert 1 <= len(failed) <= 6, [r.error for r in failed]
        assert all(isinstance(r.exception, IndexUnavailableError) for r in failed)
        assert report.not_read == FILES - len(failed) - report.instances > 0
        assert report.stopped is not None and report.stopped.startswith("the store's index")
        archive.close()
        cluster.start()
        with Archive.open(str(tmp_path / "s")) as again:
            assert ingest(again, files).ok


def test_the_storage_gone_mid_batch_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The S3 endpoint paused after the first file: the batch stops at the first file that
    fails for it, in words without obstore's internals; the rest is counted not read; the
    same run once the endpoint answers again completes the store."""
    monkeypatch.setenv(TIMEOUT_ENV, "1")
    monkeypatch.setenv(LEASE_SECONDS_ENV, "3")  # the lease left to expire: taken over soon
    files = write_series(tmp_path / "in", count=FILES)
    with s3_server_process(tmp_path / "cache") as (_endpoint, process):
        location = f"s3://{BUCKET}/midway"
        archive = Archive.open_or_create(location)
        paused: list[FileResult] = []

        def pause_after_first(result: FileResult) -> None:
            if not paused:
                paused.append(result)
                os.kill(process.pid, signal.SIGSTOP)

        try:
            report = ingest(archive, files, progress=pause_after_first)
        finally:
            os.kill(process.pid, signal.SIGCONT)
        assert not report.ok
        failed = [r for r in report.results if r.status == "failed"]
        assert 1 <= len(failed) <= 6, [r.error for r in failed]
        assert all(isinstance(r.exception, StorageUnavailableError) for r in failed)
        for result in failed:
            assert "retries" not in (result.error or ""), result.error
            assert "does not answer" in (result.error or ""), result.error
        assert report.not_read == FILES - len(failed) - report.instances > 0
        assert report.stopped is not None and report.stopped.startswith("the store's storage")
        archive.close()
        with Archive.open(location) as again:
            assert ingest(again, files).ok


@pytest.mark.skipif(binaries() is None, reason="PostgreSQL is not installed")
def test_an_edit_batch_line_by_line_stops_when_the_index_is_down(tmp_path: Path) -> None:
    """`edit --file --continue-on-error` with the index server stopped: the first line fails
    with the index's error, the others are not tried (each would wait for the server)."""
    files = write_series(tmp_path / "in", count=2)
    with postgres_cluster() as cluster:
        archive = Archive.open_or_create(str(tmp_path / "s"), index=f"{cluster.url}?schema=ed")
        assert ingest(archive, files).ok
        study = archive.index.studies()[0]["study_instance_uid"]
        cluster.stop()
        lines = [BatchLine(n, "study", study, (f"StudyID={n}",)) for n in range(2, 6)]
        results = run_batch(archive, lines, continue_on_error=True)
        archive.close()
    assert results[0].error is not None and results[0].error.startswith("index ")
    assert all(
        r.error and r.error.startswith("not applied: the store's index") for r in results[1:]
    )


def test_an_outage_after_the_commit_point_says_the_change_is_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch edit whose S3 endpoint stops answering right after its journal is written: the
    error names the change and says it was committed and that the next writing command
    finishes it; the next command does."""
    monkeypatch.setenv(TIMEOUT_ENV, "1")
    monkeypatch.setenv(LEASE_SECONDS_ENV, "3")
    files = write_series(tmp_path / "in", count=2)
    with s3_server_process(tmp_path / "cache") as (_endpoint, process):
        location = f"s3://{BUCKET}/committed"
        with Archive.open_or_create(location) as archive:
            assert ingest(archive, files).ok
            study = archive.index.studies()[0]["study_instance_uid"]
        apply = journal._apply

        def pause_then_apply(*args: Any) -> None:
            os.kill(process.pid, signal.SIGSTOP)
            apply(*args)

        monkeypatch.setattr(journal, "_apply", pause_then_apply)
        lines = [BatchLine(2, "study", study, ("StudyDescription=renamed",))]
        with Archive.open(location) as archive:
            try:
                with pytest.raises(StorageUnavailableError) as raised:
                    run_batch(archive, lines)
            finally:
                os.kill(process.pid, signal.SIGCONT)
        monkeypatch.setattr(journal, "_apply", apply)
        message = str(raised.value)
        assert "was committed" in message and "next command that writes" in message, message
        with Archive.open(location) as archive:
            with archive.writing("test"):  # what every writing command does first
                pass
            assert archive.index.studies()[0]["study_description"] == "renamed"
            assert verify(archive).ok


def test_verify_after_a_killed_writer_says_it_was_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer of this host killed after its commit point, its lease left behind: verify
    says the committed change waits for the next command that writes, naming no process as
    applying it, and reports no study as changed while it was verified."""
    files = write_series(tmp_path / "in", count=2)
    with s3_server_process(tmp_path / "cache") as _server:
        location = f"s3://{BUCKET}/killed"
        with Archive.open_or_create(location) as archive:
            assert ingest(archive, files).ok
            study = archive.index.studies()[0]["study_instance_uid"]

        def killed(*_args: Any) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(journal, "_apply", killed)
        lines = [BatchLine(2, "study", study, ("StudyDescription=renamed",))]
        with Archive.open(location) as archive, pytest.raises(KeyboardInterrupt):
            run_batch(archive, lines)
        monkeypatch.undo()
        process = subprocess.Popen(["true"])  # a pid of this host that no longer runs
        process.wait()
        lease = {
            "holder": f"edit (pid {process.pid})",
            "token": "killed",
            "expires": time.time() + 600,
            "host": socket.gethostname(),
            "pid": process.pid,
        }
        with Archive.open(location) as archive:
            archive.storage.put(".dicomweb-archive/lease.json", json.dumps(lease).encode())
            report = verify(archive)
        messages = [finding.message for finding in report.findings]
        assert not any("being applied by" in m or "in progress" in m for m in messages), messages
        assert not any(f.kind == "busy" for f in report.findings), messages
        assert any("the next command that writes" in m for m in messages), messages


def _edit(location: str, study: str) -> subprocess.CompletedProcess[str]:
    return run_cli("edit", "-o", location, "--study", study, "StudyDescription=renamed")


def test_waiting_for_another_hosts_lease_says_so(tmp_path: Path) -> None:
    """A lease held by a writer of another host: `edit` says once, on stderr, whose lease it
    waits for and when it expires, then takes it over once expired."""
    files = write_series(tmp_path / "in", count=1)
    with s3_server_process(tmp_path / "cache") as _server:
        location = f"s3://{BUCKET}/elsewhere"
        with Archive.open_or_create(location) as archive:
            assert ingest(archive, files).ok
            study = archive.index.studies()[0]["study_instance_uid"]
            lease = {
                "holder": "ingest (pid 7)",
                "token": "theirs",
                "expires": time.time() + 4,
                "host": "another-host.example",
                "pid": 7,
            }
            archive.storage.put(".dicomweb-archive/lease.json", json.dumps(lease).encode())
        result = _edit(location, study)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert (
        "waiting for the store's lease held by ingest (pid 7) on another-host.example" in (lines[0])
    )


@pytest.mark.local
def test_waiting_for_a_local_lease_says_so(tmp_path: Path) -> None:
    """A local writer holds the lease for two seconds: `edit` says once whose lease it waits
    for, then goes on."""
    files = write_series(tmp_path / "in", count=1)
    location = str(tmp_path / "s")
    with Archive.open_or_create(location) as archive:
        assert ingest(archive, files).ok
        study = archive.index.studies()[0]["study_instance_uid"]
        held = threading.Event()

        def hold() -> None:
            with archive.storage.lease("ingest (pid 7)"):
                held.set()
                time.sleep(3)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait()
        result = _edit(location, study)
        holder.join()
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines == [f"{location}: waiting for the store's lease held by ingest (pid 7)"]
