"""Stage 1 on Dask workers (``ops/distributed.py``): the same store as one process writes,
byte for byte; a worker killed mid-task loses nothing; bad files and the local paths (``-c``,
duplicates, replacements) behave as without workers.

Every test starts a ``LocalCluster`` of two worker processes on 127.0.0.1 (seconds each:
marked ``dask``). The workers open the store at its location, so the tests run on directory and
S3 stores (``shared``: not on the memory storage, which other processes cannot reach); with
``--storage s3`` the workers reach the moto server through the AWS environment variables the
session set, which they inherit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from dicomweb_archive import Archive, ingest
from dicomweb_archive.dicom.parts_model import FramePart, InlineLimits
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.errors import InputChangedError, UnreadableInputError
from dicomweb_archive.ops.distributed import BATCH_FILES, SentFile, Workers, WorkSpec, write_files
from dicomweb_archive.ops.ingest_types import IngestReport, PipelineOptions
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store import notify
from dicomweb_archive.store.instance import InstanceKey
from dicomweb_archive.store.keys import CONFIG
from tests import stores
from tests.factory import uid, write_ct, write_series
from tests.malformed import pydicom_file

pytestmark = [pytest.mark.dask, pytest.mark.shared]

#: pydicom's files (distinct SOP Instance UIDs): explicit and implicit VR, big endian,
#: encapsulated (JPEG 2000, RLE), colour, palette, a multi-frame dose, no pixel data, a waveform
PYDICOM_FILES = (
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "ExplVR_BigEnd.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle.dcm",
    "examples_palette.dcm",
    "rtplan.dcm",
    "waveform_ecg.dcm",
    "rtdose.dcm",
)
#: recompression on (JPEG-LS lossless), as the store's default
JPEG_LS = PipelineOptions(recompression=Recompression())


def _cluster() -> LocalCluster:
    return LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
    )


@pytest.fixture(scope="module")
def workers() -> Iterator[Workers]:
    """Two worker processes for the module's tests."""
    with Workers(Client(cluster := _cluster()), cluster) as made:
        yield made


@pytest.fixture
def inputs(tmp_path: Path) -> list[Path]:
    """pydicom's files, a few CT slices and a 4-frame image (one task holds several)."""
    files = [pydicom_file(name) for name in PYDICOM_FILES]
    files += write_series(tmp_path / "in" / "ct", count=5, rows=128, columns=128)
    files.append(
        write_ct(tmp_path / "in" / "mf.dcm", study=uid(1), series=uid(2), sop=uid(3), frames=4)
    )
    return files


def _ingest(
    location: str, files: list[Path], workers: Workers | None, **options: Any
) -> IngestReport:
    with Archive.open_or_create(location) as archive:
        return ingest(archive, files, options=PipelineOptions(**options), workers=workers)


def _statuses(report: IngestReport) -> list[tuple[str, str, str | None]]:
    return [(r.path.name, r.status, r.error) for r in report.results]


def _verified(location: str) -> None:
    with Archive.open(location) as archive:
        report = verify(archive)
    assert report.ok and report.complete, report.to_json()


def _same_objects(one: str, other: str, *, private: bool = True) -> None:
    """Every object of the two stores is the same, byte for byte, private ones included
    (configuration, notifications) but for one: the configuration differs in its ``index``
    field where each store is indexed in a PostgreSQL schema of its own (``--index
    postgres``), and is compared without it. Nothing else is left out: an S3 store's lease
    object is deleted when released, and a directory store's lock file and SQLite index are
    under ``.dicomweb-archive/local/``, which the storage does not list."""
    first = stores.objects(one, private=private)
    second = stores.objects(other, private=private)
    assert sorted(first) == sorted(second)
    if CONFIG in first:
        configs = [json.loads(first.pop(CONFIG)), json.loads(second.pop(CONFIG))]
        for config in configs:
            del config["index"]
        assert configs[0] == configs[1]
    assert [k for k in first if first[k] != second[k]] == []


def test_workers_write_what_one_process_writes(
    new_store: Callable[[str], str], inputs: list[Path], workers: Workers
) -> None:
    """Ingest with two Dask workers writes every object byte for byte as one process does
    (recompression to JPEG-LS on), with the same report."""
    alone, spread = new_store("alone"), new_store("spread")
    local = _ingest(alone, inputs, None, recompression=Recompression())
    distributed = _ingest(spread, inputs, workers, recompression=Recompression())
    assert local.ok and local.frames_recompressed > 0
    assert _statuses(distributed) == _statuses(local)
    assert distributed.frames_recompressed == local.frames_recompressed
    _same_objects(alone, spread)
    _verified(spread)


class KillOnce(WorkerPlugin):
    """Makes the worker process exit, once, right after it wrote the first frame of the
    instance ``sop`` (the marker file says it has not yet)."""

    def __init__(self, marker: str, sop: str) -> None:
        self.marker = marker
        self.sop = sop

    def setup(self, worker: Any) -> None:
        from dicomweb_archive.store import instance

        frame = instance.InstanceWriter.frame
        marker, sop = self.marker, self.sop

        def frame_then_exit(writer: instance.InstanceWriter, part: FramePart) -> None:
            frame(writer, part)
            if writer.key.sop == sop and Path(marker).exists():
                os.unlink(marker)
                os._exit(1)

        setattr(instance.InstanceWriter, "frame", frame_then_exit)  # noqa: B010 - in the worker


def test_a_worker_killed_mid_task_loses_nothing(
    new_store: Callable[[str], str], inputs: list[Path], tmp_path: Path
) -> None:
    """A worker that dies in the middle of a task (after files of it were written, and one
    frame of the multi-frame file) loses nothing: the task runs again, every file is stored,
    the store verifies clean and holds exactly what one process writes (no leftovers)."""
    marker = tmp_path / "kill-once"
    marker.touch()
    mf = inputs.index(tmp_path / "in" / "mf.dcm")
    assert mf % BATCH_FILES > 0  # files of its task come before it
    alone, spread = new_store("alone"), new_store("spread")
    local = _ingest(alone, inputs, None)
    with Workers(Client(cluster := _cluster()), cluster) as dying:
        dying.client.register_plugin(KillOnce(str(marker), uid(3)))
        distributed = _ingest(spread, inputs, dying)
    assert not marker.exists()  # a worker did die
    assert distributed.ok, _statuses(distributed)
    assert _statuses(distributed) == _statuses(local)
    _same_objects(alone, spread)
    _verified(spread)


def test_a_bad_file_among_good_ones(
    new_store: Callable[[str], str], tmp_path: Path, workers: Workers
) -> None:
    """``mkdicomweb --workers 2`` (``dicomweb-archive create``): a file the client refuses
    (not DICOM) and one a worker finds broken (truncated after its header) each get one worded
    line naming the file; the others are stored; the exit code says it failed."""
    write_series(tmp_path / "in" / "good", count=3)
    broken = write_ct(tmp_path / "in" / "broken.dcm", study=uid(11), series=uid(12), sop=uid(13))
    broken.write_bytes(broken.read_bytes() + b"\xe1\x7f\x10\x00OB\x00\x00\x00\x10\x00\x00abcd")
    junk = tmp_path / "in" / "junk.dcm"
    junk.write_bytes(b"not a DICOM file at all")
    location = new_store("store")
    done = stores.run_cli("create", "-o", location, "--workers", "2", str(tmp_path / "in"))
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: {broken}: file is truncated inside the element at byte 9100; the file is "
        "incomplete",
        f"error: {junk}: not a DICOM file (no 'DICM' prefix, no DICOM data set)",
    ], done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "3 instances stored" in done.stdout and "2 failed" in done.stdout
    _verified(location)
    assert not stores.keys_under(location, f"studies/{uid(11)}/")  # nothing of it is left


def test_clean_duplicates_and_replacements_as_without_workers(
    new_store: Callable[[str], str], inputs: list[Path], tmp_path: Path, workers: Workers
) -> None:
    """With workers, a file given again is unchanged, a different file with a stored SOP
    Instance UID is refused (and with --replace replaces it), a file given twice in one input
    is compared with the first, and a -c run cleans: as without workers, run after run."""
    changed = tmp_path / "changed.dcm"
    shutil.copy(inputs[-1], changed)
    changed.write_bytes(changed.read_bytes()[:-2] + b"\x01\x02")  # the same UIDs, other pixels
    runs: list[tuple[list[Path], dict[str, Any]]] = [
        (inputs[:6], {}),
        ([*inputs, changed], {}),
        ([changed, inputs[0], inputs[0]], {"replace": True}),
        (inputs[3:], {"clean": True}),
    ]
    alone, spread = new_store("alone"), new_store("spread")
    for files, options in runs:
        local = _ingest(alone, files, None, **options)
        distributed = _ingest(spread, files, workers, **options)
        assert _statuses(distributed) == _statuses(local), options
        assert len(distributed.changes) == len(local.changes)
    _same_objects(alone, spread, private=False)  # change records name their times
    _verified(spread)


def test_a_file_changed_after_its_header_was_read(
    new_store: Callable[[str], str], tmp_path: Path
) -> None:
    """A worker that finds another instance in a file than the client decided on (the file
    changed in between) writes nothing of it and says so, worded (a task, run here)."""
    path = write_ct(tmp_path / "a.dcm", study=uid(21), series=uid(22), sop=uid(23))
    location = new_store("store")
    with Archive.open_or_create(location) as archive:
        spec = WorkSpec(location, archive.keys, InlineLimits(), Recompression())
    decided = InstanceKey(uid(21), uid(22), uid(24))
    [written] = write_files(spec, [SentFile(str(path), "in/a.dcm", decided)])
    assert written.end is None
    assert written.error == (
        "in/a.dcm: changed while it was being ingested (its header named another instance); "
        "run again"
    )
    assert isinstance(written.exception, InputChangedError)
    assert stores.keys_under(location, f"studies/{uid(21)}/") == []


def test_workers_refuse_a_store_in_memory(tmp_path: Path) -> None:
    """Workers cannot reach a store in the command's memory: one line, a usage error (exit
    2), no cluster."""
    path = write_ct(tmp_path / "a.dcm", study=uid(21), series=uid(22), sop=uid(23))
    done = stores.run_cli("create", "-o", "memory://alone", "--workers", "2", str(path))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "error: memory://alone: Dask workers cannot reach a store in this process's memory; "
        "give a directory or an s3:// location\n"
    )


def test_an_internal_error_on_a_worker_keeps_its_traceback(
    new_store: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An internal error on a worker comes back as the file's worded line, and, for
    ``--verbose``, as an error whose message is the worker's traceback, cause included (a
    chained cause would not travel back with the exception itself)."""
    from dicomweb_archive.ops import distributed

    def broken(*args: Any, **kwargs: Any) -> Any:
        try:
            raise KeyError("deep inside")
        except KeyError as exc:
            raise UnreadableInputError("in/a.dcm: cannot be read: an internal error") from exc

    monkeypatch.setattr(distributed, "write_objects", broken)
    path = write_ct(tmp_path / "a.dcm", study=uid(21), series=uid(22), sop=uid(23))
    location = new_store("store")
    with Archive.open_or_create(location) as archive:
        spec = WorkSpec(location, archive.keys, InlineLimits(), Recompression())
        notify.notify(archive.storage, notify.GROUP, uid(21))  # as the command does first
    key = InstanceKey(uid(21), uid(22), uid(23))
    [written] = write_files(spec, [SentFile(str(path), "in/a.dcm", key)])
    assert written.error == "in/a.dcm: cannot be read: an internal error"
    assert isinstance(written.exception, distributed.WorkerError)
    assert "KeyError: 'deep inside'" in str(written.exception)


def test_two_files_with_one_sop_instance_uid_in_one_input(
    new_store: Callable[[str], str], inputs: list[Path], tmp_path: Path, workers: Workers
) -> None:
    """Pairs of files holding one SOP Instance UID with other pixels, between other files: the
    second of each pair is refused as given twice, as without workers (an outside tester saw
    the later one stored over the first in 3 runs of 4 when the first was not yet committed;
    a race this small input does not reliably show)."""
    files: list[Path] = []
    for number, source in enumerate(inputs[:4]):
        twin = tmp_path / f"twin{number}.dcm"
        data = source.read_bytes()
        twin.write_bytes(data[:-2] + bytes([data[-2] ^ 1, data[-1]]))  # other pixels
        files += [source, *inputs[4:6], twin]
    alone, spread = new_store("alone"), new_store("spread")
    local = _ingest(alone, files, None)
    distributed = _ingest(spread, files, workers)
    assert _statuses(distributed) == _statuses(local)
    assert sum(r.status == "failed" for r in local.results) == 4
    _same_objects(alone, spread)
    _verified(spread)


def test_a_worker_that_opens_another_store_writes_nothing(
    new_store: Callable[[str], str], tmp_path: Path
) -> None:
    """A worker that finds another store at the location it was given (a relative path from
    another working directory, a file system mounted elsewhere) writes nothing and says so:
    the command notifies a study before it sends its files, and that store was not told."""
    path = write_ct(tmp_path / "a.dcm", study=uid(21), series=uid(22), sop=uid(23))
    location = new_store("other")
    with Archive.open_or_create(location) as archive:
        spec = WorkSpec(location, archive.keys, InlineLimits(), Recompression())
    [written] = write_files(
        spec, [SentFile(str(path), "in/a.dcm", InstanceKey(*map(uid, (21, 22, 23))))]
    )
    assert written.end is None and written.error is not None
    assert "is not the one the command writes" in written.error
    assert stores.keys_under(location, f"studies/{uid(21)}/") == []


def test_a_relative_store_is_sent_to_workers_by_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: Workers
) -> None:
    """The command gives the workers a directory store's absolute path (a worker's working
    directory is not the command's: frames went into another store; outside tester)."""
    from dicomweb_archive.ops.distributed import DaskBatch

    monkeypatch.chdir(tmp_path)
    with Archive.open_or_create("relative-store") as archive:
        batch = DaskBatch(archive, PipelineOptions(), IngestReport(), None, workers=workers)
        try:
            assert batch.spec.location == str(tmp_path / "relative-store")
        finally:
            batch.executor.shutdown()


def test_a_run_whose_workers_are_gone_says_it_waits_for_one(
    new_store: Callable[[str], str], tmp_path: Path
) -> None:
    """A scheduler without workers (every worker died or was stopped) makes the run wait for
    one: it says so once instead of waiting silently (outside tester), and a worker that joins
    completes the task."""
    path = write_ct(tmp_path / "a.dcm", study=uid(31), series=uid(32), sop=uid(33))
    location = new_store("waiting")
    with Archive.open_or_create(location) as archive:
        notify.notify(archive.storage, notify.GROUP, uid(31))
        spec = WorkSpec(location, archive.keys, InlineLimits(), None)
    told: list[str] = []
    cluster = LocalCluster(
        n_workers=0, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    )

    def notice(message: str) -> None:  # told while waiting: a worker joins then
        told.append(message)
        threading.Thread(target=cluster.scale, args=(1,)).start()

    with Workers(Client(cluster), cluster, notice=notice) as workers:
        sent = SentFile(str(path), "a.dcm", InstanceKey(*map(uid, (31, 32, 33))))
        [written] = workers.result(workers.submit(spec, [sent]))
    assert written.error is None and written.end is not None
    assert told == [
        "the Dask scheduler has no worker; the run waits for one (start one with dask "
        "worker SCHEDULER-ADDRESS, or stop the run with Ctrl-C: what was stored stays)"
    ]


@pytest.mark.local  # the command runs in a process of its own on a directory store
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_run_with_workers_stopped_by_a_signal(tmp_path: Path, number: int) -> None:
    """Ctrl-C or SIGTERM mid-run (outside tester): one worded line, exit 130, the local
    cluster closed (no traceback: the interrupted commit was started again; no leaked
    semaphores reported), and what was stored verifies once the stages ran."""
    files = write_series(tmp_path / "in", count=400, rows=256, columns=256)
    store = tmp_path / "store"
    command = [str(Path(sys.executable).parent / "mkdicomweb"), "--workers", "1", "-o"]
    with subprocess.Popen(
        [*command, str(store), str(tmp_path / "in")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a suite started in the background has SIGINT ignored, and its
        # children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    ) as process:
        while not list((store / "studies").glob("*/series/*/instances/*/frames/1*")):
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        process.send_signal(number)
        out, err = process.communicate(timeout=120)
    assert (process.returncode, out) == (130, ""), err
    assert err.startswith("error: interrupted: what was stored is kept;"), err
    assert len(err.splitlines()) == 1, err
    with Archive.open(str(store)) as archive:
        ingest(archive, files[:1])  # a later run completes the stages
    _verified(str(store))


@pytest.mark.parametrize("address", ["foo://x:1", "not an address", "tcp://127.0.0.1:99999"])
def test_a_mistyped_scheduler_address_is_a_usage_error(tmp_path: Path, address: str) -> None:
    """A scheduler address that is none is one usage line, exit 2, before any store is made
    (was: Dask's traceback, or a wait of a minute; outside tester)."""
    path = write_ct(tmp_path / "a.dcm", study=uid(21), series=uid(22), sop=uid(23))
    store = tmp_path / "store"
    done = stores.run_cli("create", "-o", str(store), "--scheduler", address, str(path))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"error: --scheduler {address}: give a Dask scheduler's address, tcp://HOST:PORT "
        "(the port 1 to 65535)\n"
    )
    assert not store.exists()
