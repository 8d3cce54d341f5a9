"""Stage 1 on Dask workers (``mkdicomweb --scheduler ADDRESS`` or ``--workers N``).

The command (the *client*) keeps the store's lease for the whole run and every decision and
commit, as a local run does (``ops/ingest_batch.py``): it reads each file's header
(:meth:`Batch.begin`: the instance key, unchanged, refused or replacing, the notifications of
the study before anything of it is written). Only the files that become new instances written
directly are sent to the workers, in tasks of :data:`BATCH_FILES` files; replacements stay on
the client, and so does a whole ``-c`` run (one change, staged by one writer).

A worker holds no lease and opens the store's storage only (never its index): it reads the
file again at the same path, checks that it holds the instance the client decided on, and
writes the instance's frames (keys of its own SOP Instance UID, read by nothing before the
info record commits the instance) and its content-addressed bulk data ("only if absent"). It
returns a small result (:class:`Written`): the metadata and info record to commit and the keys
it wrote; frames never travel through the client. The client then commits each instance as a
local run does (:meth:`Batch.conclude`, in its writer threads, once the instance's task is
done), and reports the files in input order.

A task lost with its worker is run again by Dask (a worker that died mid-task left frames
under the same keys, which the next attempt overwrites, and bulk data the next attempt finds
present); :data:`RETRIES` more attempts are made of a task that raised. A bad file is no
failed task: its worded error comes back as that file's result. Files whose task failed on
every attempt are reported as failed, and their studies are swept at the end of the run (as
recovery does: ``store/recovery.py``). A client killed mid-run leaves what recovery removes:
the next writer, on taking the lease, removes the instance folders without an info record and
the unreferenced bulk data of every notified study (``docs/spec/pipeline.md``).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import re
import threading
import traceback
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future as ConcurrentFuture
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.parts_model import InlineLimits, InstanceEnd, InstanceHeader, Part
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.errors import (
    ArchiveError,
    InputChangedError,
    NotAStoreError,
    UnreadableInputError,
    UsageError,
    WorkersError,
)
from dicomweb_archive.ops.ingest_batch import Batch, file_sha256, read_parts, write_objects
from dicomweb_archive.ops.ingest_types import (
    FileResult,
    IngestReport,
    PipelineOptions,
    ProgressHook,
    RefusedReference,
    instance_key,
    record_error,
)
from dicomweb_archive.store import notify
from dicomweb_archive.store.instance import InstanceKey, InstanceWriter
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.local import LocalStorage
from dicomweb_archive.store.locations import storage_at
from dicomweb_archive.store.memory import MemoryStorage
from dicomweb_archive.store.recovery import sweep_study
from dicomweb_archive.store.storage import Storage

if TYPE_CHECKING:
    from distributed import Client, Future, LocalCluster

#: files per task: enough to make the scheduling cost small beside the work, few enough that a
#: task lost with its worker costs little to run again
BATCH_FILES = 4
#: further attempts of a task that raised (a task lost with its worker is rescheduled anyway)
RETRIES = 2
#: how long the client waits for a scheduler to have a worker, in seconds
CONNECT_SECONDS = 60
#: why a run stops when its scheduler is gone
SCHEDULER_GONE = (
    "the Dask scheduler no longer answers; run the same command again (what was stored "
    "stays, the rest is written)"
)
#: how often a client waiting for a task checks that its scheduler is still there, in seconds
POLL_SECONDS = 2
#: how long closing the client (and a local cluster) may take, in seconds
CLOSE_SECONDS = 10


@dataclass(frozen=True, slots=True)
class WorkSpec:
    """What a worker needs to write instances: where the store is, its keys, its inline limits
    and the run's recompression (a worker never reads the store's configuration or index)."""

    location: str
    keys: StoreKeys
    limits: InlineLimits
    recompression: Recompression | None


@dataclass(frozen=True, slots=True)
class SentFile:
    """One file of a task: the path a worker opens, the name errors give, the instance the
    client decided the file holds."""

    path: str
    name: str
    key: InstanceKey


@dataclass(slots=True)
class Written:
    """A worker's result for one file: the instance to commit and the keys written, or the
    worded error that stopped it."""

    end: InstanceEnd | None = None
    written: list[str] = field(default_factory=list)
    new_bulk: list[str] = field(default_factory=list)
    error: str | None = None
    exception: BaseException | None = None


class WorkerError(Exception):
    """An unexpected error on a worker, with the worker's traceback as its message (the
    exception itself may not travel back to the client)."""


class Workers:
    """A Dask client (and the local cluster it started, if any): where tasks run.

    ``notice`` is told, in one sentence, when the client has waited for a task while the
    scheduler has no worker (every worker died or was stopped): the run then waits for one,
    which is not an error (a worker that joins completes the run), but must not look like a
    hang. It is told again after workers came and went."""

    def __init__(
        self,
        client: Client,
        cluster: LocalCluster | None = None,
        *,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.cluster = cluster
        self.notice = notice
        self._told = False

    @property
    def slots(self) -> int:
        """Tasks the workers run at once (their threads)."""
        threads: dict[str, int] = self.client.nthreads()
        return max(1, sum(threads.values()))

    def submit(self, spec: WorkSpec, files: list[SentFile]) -> Future[list[Written]]:
        try:
            return self.client.submit(write_files, spec, files, retries=RETRIES, pure=False)
        except Exception as exc:  # a client that lost its scheduler is closed
            raise WorkersError(SCHEDULER_GONE) from exc

    def result(self, future: Future[list[Written]]) -> list[Written]:
        """A task's result. A task waits as long as it takes, but not for a scheduler that is
        gone: once the client gave up reconnecting (Dask tries for a minute), the task fails
        with a worded error instead of waiting forever."""
        while True:
            try:
                return future.result(timeout=POLL_SECONDS)
            except TimeoutError:
                if self.client.status in ("closing", "closed"):
                    raise WorkersError(SCHEDULER_GONE) from None
                self._check_workers()

    def _check_workers(self) -> None:
        """Tell ``notice`` once while the scheduler has no worker (see the class docstring)."""
        try:
            count = self.client.scheduler_info(n_workers=0).get("n_workers")
        except Exception:  # a scheduler that does not answer: the loop above says so
            return
        if count:
            self._told = False
        elif count == 0 and not self._told and self.notice is not None:
            self._told = True
            self.notice(
                "the Dask scheduler has no worker; the run waits for one (start one with "
                "dask worker SCHEDULER-ADDRESS, or stop the run with Ctrl-C: what was stored "
                "stays)"
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a scheduler that is gone: nothing to close
            self.client.close(timeout=CLOSE_SECONDS)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=CLOSE_SECONDS)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: a scheduler's address: ``[tcp|tls]://HOST:PORT`` (no scheme: tcp), HOST a name, an IPv4
#: address or a bracketed IPv6 address
_ADDRESS = re.compile(r"(?:(?:tcp|tls)://)?(?:[\w.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})")


def scheduler_address(text: str) -> bool:
    """Whether ``text`` has the form of a Dask scheduler's address (checked before the store
    is opened: a mistyped one is a usage error, not a 60 s wait or Dask's traceback)."""
    match = _ADDRESS.fullmatch(text)
    return match is not None and 0 < int(match.group(1)) < 65536


def open_workers(
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    notice: Callable[[str], None] | None = None,
) -> Workers:
    """Connect to the Dask scheduler at ``scheduler``, or start a local cluster of ``workers``
    processes (one thread each) on 127.0.0.1; ``notice``: see :class:`Workers`.

    Raises:
        WorkersError: the scheduler does not answer, or has no worker.
    """
    # distributed is imported only by runs that use it (an extra: dicomweb-archive[dask])
    try:
        from distributed import Client, LocalCluster  # noqa: PLC0415
    except ImportError as exc:
        raise WorkersError(
            "--scheduler and --workers need Dask's distributed: "
            "pip install 'dicomweb-archive[dask]'"
        ) from exc
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers or 1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",  # no fixed port (the HTTP endpoint only; no dashboard)
            silence_logs=logging.CRITICAL,  # the report says what failed, file by file
        )
        return Workers(Client(cluster), cluster, notice=notice)
    try:
        client = Client(scheduler, timeout=f"{CONNECT_SECONDS}s")
    except Exception as exc:  # refused, timed out, or an address Dask cannot use
        raise WorkersError(f"--scheduler {scheduler}: no Dask scheduler answers there") from exc
    # Dask's own log lines (a lost scheduler, reconnection attempts) are not for the user:
    # the report says what failed, file by file (Dask's configuration sets its loggers' levels)
    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "distributed"]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        client.wait_for_workers(1, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise WorkersError(
            f"--scheduler {scheduler}: the scheduler has no worker (start one with "
            f"dask worker {scheduler})"
        ) from exc
    return Workers(client, notice=notice)


def check_reachable(archive: Archive) -> None:
    """Refuse a store that other processes cannot open (one in this process's memory).

    Raises:
        UsageError: the store is in memory (the options cannot go together: exit 2).
    """
    if isinstance(archive.storage, MemoryStorage):
        raise UsageError(
            f"{archive.location}: Dask workers cannot reach a store in this process's memory; "
            "give a directory or an s3:// location"
        )


# -- on a worker ---------------------------------------------------------------------------
_storages: dict[str, Storage] = {}
_storages_lock = threading.Lock()


def _storage(location: str) -> Storage:
    """The store's storage, opened once per worker process."""
    with _storages_lock:
        storage = _storages.get(location)
        if storage is None:
            storage = storage_at(location, create=False)
            if storage is None:
                raise NotAStoreError(f"{location}: a Dask worker finds no store there")
            _storages[location] = storage
        return storage


def write_files(spec: WorkSpec, files: list[SentFile]) -> list[Written]:
    """A task: write the frames and bulk data of each file's instance (see the module
    docstring); a file's error is its result, never the task's."""
    storage = _storage(spec.location)
    return [_write_file(storage, spec, file) for file in files]


def _write_file(storage: Storage, spec: WorkSpec, file: SentFile) -> Written:
    writer: InstanceWriter | None = None
    try:
        with open(file.path, "rb") as stream:  # noqa: PTH123 - the path as the client gave it
            parts = read_parts(stream, file.name, spec.limits, spec.recompression)
            try:
                writer = _writer(parts, storage, spec.keys, file)
                end, writer = write_objects(parts, writer, stream, file.name, spec.limits)
            finally:
                parts.close()
        return Written(end, list(writer.written), list(writer.new_bulk))
    except Exception as exc:  # one bad file must not stop the task
        if writer is not None:
            writer.abort()
        failed = FileResult(Path(file.name), "failed")
        record_error(failed, exc)
        return Written(error=failed.error, exception=_portable(exc))


def _writer(
    parts: Generator[Part, None, None], storage: Storage, keys: StoreKeys, file: SentFile
) -> InstanceWriter:
    header = next(parts)
    assert isinstance(header, InstanceHeader)
    key = instance_key(header.metadata, file.name)
    if key != file.key:
        raise InputChangedError(
            f"{file.name}: changed while it was being ingested (its header named another "
            "instance); run again"
        )
    if storage.head(StoreKeys.notification(notify.GROUP, key.study)) is None:
        # the command notified the study before sending the file: this is another store
        raise NotAStoreError(
            f"{storage.location}: the store a Dask worker opens there is not the one the "
            f"command writes (it was not told of the study of {file.name}); give every "
            "worker the store at the same absolute path, or an s3:// location"
        )
    return InstanceWriter(storage, keys, key, storage)


def _last_words(error: BaseException | None) -> str:
    """What a failed task said, in words: the last line of its text (a worker's traceback
    ends with the error), without the exception's class name."""
    lines = str(error or "").strip().splitlines()
    if not lines:
        return "no reason given"
    return re.sub(r"^[\w.]+(Error|Exception|Exit): ", "", lines[-1])


def _portable(exc: Exception) -> BaseException:
    """``exc``, or a :class:`WorkerError` with its traceback where it is unexpected (not a
    worded error, or one that translates an internal error: its cause would not travel) or
    cannot travel back to the client. Only the client's ``--verbose`` shows it: the file's
    line is worded on the worker (:func:`record_error`)."""
    if isinstance(exc, ArchiveError | OSError) and not isinstance(exc, UnreadableInputError):
        try:
            pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, just made
        except Exception:  # noqa: S110 - any failure: sent as text below
            pass
        else:
            return exc
    return WorkerError("on a Dask worker: " + "".join(traceback.format_exception(exc)))


# -- on the client -------------------------------------------------------------------------
class _Task:
    """Files sent to the workers together: gathered, then submitted, then committed."""

    def __init__(self) -> None:
        self.files: list[SentFile] = []
        self.results: list[FileResult] = []  # the files' results, filled in by the client
        self.future: Future[list[Written]] | None = None
        #: the commits of its files, in the writer threads (None: not started)
        self.concluding: list[ConcurrentFuture[None]] | None = None
        #: why it could not be sent (the scheduler is gone)
        self.failed: WorkersError | None = None


class DaskBatch(Batch):
    """Stage 1 with the writing of new instances on Dask workers (see the module docstring)."""

    def __init__(
        self,
        archive: Archive,
        options: PipelineOptions,
        report: IngestReport,
        progress: ProgressHook | None,
        *,
        workers: Workers,
    ) -> None:
        super().__init__(archive, options, report, progress)
        assert self.change is None  # -c runs stay local (one change, one writer)
        self.workers = workers
        # a directory by its absolute path: a worker's working directory is not the command's
        location = archive.location
        if isinstance(archive.storage, LocalStorage):
            location = str(archive.storage.root.absolute())
        self.spec = WorkSpec(location, self.keys, self.limits, self.recompression)
        #: two tasks per worker thread in flight: one running, one waiting to run
        self.in_flight_limit = BATCH_FILES * 2 * workers.slots
        self.gathering = _Task()
        self.sent: deque[tuple[FileResult, tuple[_Task, int] | None]] = deque()
        self.sent_sops: dict[str, _Task] = {}
        #: tasks submitted whose files are not yet being committed
        self.running: deque[_Task] = deque()
        self._ticket: tuple[_Task, int] | None = None
        #: studies where a file sent to the workers failed (swept when the run ends)
        self.unswept: set[str] = set()

    def add(self, path: Path | RefusedReference) -> None:
        """Read one file's header and decide; a new instance goes to the next task."""
        result, handle = self.open_input(path)
        if handle is None or isinstance(path, RefusedReference):
            self.sent.append((result, None))
            return
        self._ticket = None
        with handle:
            self.begin(handle, result, file_sha256=partial(file_sha256, path))
        self.sent.append((result, self._ticket))
        if len(self.gathering.files) >= BATCH_FILES:
            self._submit()

    def _write_later(
        self,
        parts: Generator[Part, None, None],
        result: FileResult,
        key: InstanceKey,
        stream: BinaryIO,
    ) -> None:
        parts.close()  # a worker reads the file again
        task = self.gathering
        self._ticket = (task, len(task.files))
        task.files.append(SentFile(str(result.path.absolute()), str(result.path), key))
        task.results.append(result)
        self.sent_sops[key.sop] = task

    def _await_earlier(self, sop: str) -> None:
        """An earlier file of this input has the same SOP Instance UID: it is committed first
        (then the duplicate rules apply to this one as in a local run)."""
        while sop in self.sent_sops and self.sent:
            self.drain(len(self.sent) - 1)

    def _submit(self) -> None:
        task, self.gathering = self.gathering, _Task()
        if task.files:
            try:
                task.future = self.workers.submit(self.spec, task.files)
            except WorkersError as exc:  # the scheduler is gone: the rest is not read
                task.failed = exc
                self.stopped = self.stopped or str(exc)
            self.running.append(task)

    def drain(self, keep: int) -> None:
        """Report files in input order, until at most ``keep`` remain in flight; the files of
        every task the workers finished are committed meanwhile, in the writer threads (as a
        local run commits: an instance's commit is its own)."""
        for task in [t for t in self.running if t.future is not None and t.future.done()]:
            self._conclude(task)
        while len(self.sent) > keep:
            result, ticket = self.sent.popleft()
            if ticket is not None:
                task, number = ticket
                if task.concluding is None:
                    self._conclude(task)  # waits for the workers
                assert task.concluding is not None
                task.concluding[number].result()
            self.check_stop(result)
            if self.progress is not None:
                self.progress(result)
            self.report.record(result)

    def _conclude(self, task: _Task) -> None:
        """Start the commits of a task's files (once its workers are done)."""
        if task.future is None and task.failed is None:
            self._submit()  # the task being gathered: sent now
        if task in self.running:  # (not when an earlier conclusion was interrupted: Ctrl-C)
            self.running.remove(task)
        error: BaseException | None = task.failed
        written: list[Written | None] = [None] * len(task.files)
        if task.future is not None:
            try:
                written = list(self.workers.result(task.future))
            except Exception as exc:
                error = exc
                if isinstance(exc, WorkersError):  # the scheduler is gone: the rest not read
                    self.stopped = self.stopped or str(exc)
        task.concluding = [
            self.executor.submit(self._complete, result, done, error)
            for result, done in zip(task.results, written, strict=True)
        ]

    def _complete(
        self, result: FileResult, written: Written | None, error: BaseException | None
    ) -> None:
        """Commit one file's instance as a local run does (``Batch.conclude``), or record why
        it is not stored."""
        key = result.key
        assert key is not None
        try:
            self._commit(result, written, error, key)
        finally:  # a later file with this SOP Instance UID finds this one committed
            self.sent_sops.pop(key.sop, None)

    def _commit(
        self,
        result: FileResult,
        written: Written | None,
        error: BaseException | None,
        key: InstanceKey,
    ) -> None:
        if written is None:  # the task failed on every attempt
            self.unswept.add(key.study)
            result.exception = error
            why = _last_words(error)
            result.error = (
                f"{result.path}: not stored: the Dask task that writes it failed on every "
                f"attempt (its workers died or could not reach the store: {why}); run again"
            )
            return
        if written.end is None:
            result.error = written.error
            result.exception = written.exception
            self.unswept.add(key.study)
            return
        writer = InstanceWriter(self.storage, self.keys, key, self.storage)
        writer.written = written.written
        writer.new_bulk = written.new_bulk
        self.conclude(result, written.end, writer)
        if result.status == "failed":
            self.unswept.add(key.study)

    def close(self) -> None:
        """Commit every file in flight, then sweep the studies where a file sent to the
        workers failed (what a worker that died wrote; no task writes any more)."""
        super().close()
        for study in sorted(self.unswept):
            sweep_study(self.storage, self.keys, study)
