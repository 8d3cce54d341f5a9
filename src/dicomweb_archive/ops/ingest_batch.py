"""Stage 1 of one ingest run, file by file (:class:`Batch`, used by ``ops/ingest.py``).

:meth:`Batch.begin` reads a file's header and decides (unchanged, refused, replacing, or a new
instance), notifying the group and study stages before anything of a study is written;
:func:`write_objects` writes the instance's frames and bulk data (in a writer thread here, or
on a Dask worker: ``ops/distributed.py``), and :meth:`Batch.conclude` commits it (the
deduplicated record with ``-d``, the info record last: ``store/instance.py``) and keeps the
run's bookkeeping. Results are reported in input order.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.parts import (
    BulkPart,
    FramePart,
    InstanceEnd,
    InstanceHeader,
    Part,
    generate_parts,
)
from dicomweb_archive.dicom.parts_model import InlineLimits
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.errors import (
    IndexUnavailableError,
    StorageUnavailableError,
    StoreFullError,
    TruncatedError,
)
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.tags import (
    SOP_INSTANCE_UID_KEY,
)
from dicomweb_archive.ops.changes import (
    finish_studies,
    removed,
    set_aside_instance,
    set_aside_study,
)
from dicomweb_archive.ops.ingest_seen import SeenInstances
from dicomweb_archive.ops.ingest_types import (
    FileResult,
    IngestReport,
    PipelineOptions,
    ProgressHook,
    RefusedReference,
    duplicate_error,
    inline_limits,
    instance_key,
    recompression_counts,
    record_error,
    stream_sha256,
    stream_size,
    uid_of,
)
from dicomweb_archive.ops.ingest_warnings import incomplete_warning, uid_warnings
from dicomweb_archive.ops.state import States
from dicomweb_archive.ops.study import metadata_hash
from dicomweb_archive.store import notify
from dicomweb_archive.store.changes import ChangeSet, Touched
from dicomweb_archive.store.dedup import write_record
from dicomweb_archive.store.edit_state import Entry
from dicomweb_archive.store.instance import InstanceKey, InstanceWriter
from dicomweb_archive.store.keys import bulkdata_uri, frames_uri

#: Threads reading, recompressing and writing frames (codecs, hashing, zlib and file I/O
#: release the GIL). One more than the two cores we plan for: while one thread holds the GIL
#: for Python work, two can be in a codec (measured: 3 % faster recompressing ingest).
WRITER_THREADS = 3
#: Files started but not completed, at most: bounds memory to a few frames per thread.
MAX_IN_FLIGHT = 6
#: why a batch stopped when the store has no space left (:func:`stop_reason`)
STORE_FULL = "the store is full"


class Batch:
    """One stage-1 run: duplicate bookkeeping, the clean and replace changes, notifications."""

    def __init__(
        self,
        archive: Archive,
        options: PipelineOptions,
        report: IngestReport,
        progress: ProgressHook | None = None,
        *,
        change: ChangeSet | None = None,
    ) -> None:
        self.archive = archive
        #: the change every instance of this run goes into (None: each is committed alone);
        #: with -c, this run's own ``clean`` change, committed by :meth:`close`
        self.owns_change = change is None and options.clean
        if self.owns_change:
            change = archive.change(
                "clean", level="study", target="input files", reason=options.reason
            )
        self.change = change
        self.storage = archive.storage
        self.keys = archive.keys
        self.options = options
        self.report = report
        self.progress = progress
        self.recompression = options.recompression_for(archive)
        self.limits = inline_limits(archive)
        #: files started but not yet completed, at most (``drain``)
        self.in_flight_limit = MAX_IN_FLIGHT
        self.queue: deque[tuple[FileResult, Future[None] | None]] = deque()
        self.in_flight: dict[str, Future[None]] = {}
        self.executor = ThreadPoolExecutor(max_workers=WRITER_THREADS)
        self.touched: set[str] = set()
        self.written: set[str] = set()  # studies an instance of this run was stored in
        self.cleaned: set[str] = set()
        self.seen = SeenInstances(archive, change)
        #: the one change that collects every replacement of this run
        self.replacing: ChangeSet | None = None
        self.replaced_studies: set[str] = set()
        #: the studies as the replace change first saw them, and the edit state entry of the
        #: instance being replaced (put back if its replacement fails)
        self.replace_states: States | None = None
        self._pending_before: Touched | None = None
        self._pending_entry: Entry | None = None
        #: the info record of the instance being replaced (is the new one the same data set?)
        self._pending_info: InfoRecord | None = None
        #: why the store cannot take more now (full, or its index or storage unavailable):
        #: the batch stops, the files after are not read (``stop_reason``)
        self.stopped: str | None = None

    @staticmethod
    def open_input(path: Path | RefusedReference) -> tuple[FileResult, BinaryIO | None]:
        """A file's result (recorded in the report when its turn comes) and its stream; None
        when it cannot be read (a DICOMDIR's reference that is not read, a file that does
        not open): its result says why."""
        if isinstance(path, RefusedReference):
            refused = FileResult(path.path, "failed")
            record_error(refused, path.error)
            return refused, None
        result = FileResult(path, "failed")
        try:
            return result, path.open("rb")
        except OSError as exc:
            record_error(result, exc)
            return result, None

    def add(self, path: Path | RefusedReference) -> None:
        """Start one file; its writing may go on in a writer thread."""
        result, handle = self.open_input(path)
        if handle is None or isinstance(path, RefusedReference):
            self.queue.append((result, None))
            return
        finish = self.begin(handle, result, file_sha256=partial(file_sha256, path))
        if finish is None:
            handle.close()
            self.queue.append((result, None))
            return

        def work() -> None:
            try:
                finish()
            finally:
                handle.close()

        future = self.executor.submit(work)
        assert result.key is not None
        self.in_flight[result.key.sop] = future
        self.queue.append((result, future))

    def drain(self, keep: int) -> None:
        """Complete queued files, in input order, until at most ``keep`` remain."""
        while len(self.queue) > keep:
            result, future = self.queue.popleft()
            if future is not None:
                future.result()
                if result.key is not None and self.in_flight.get(result.key.sop) is future:
                    del self.in_flight[result.key.sop]
            self.check_stop(result)
            if self.progress is not None:
                self.progress(result)
            self.report.record(result)

    def close(self) -> None:
        """Finish the files in flight, then commit the replacements, or this run's clean
        change (with the stages of the studies they touched, so that served files and index
        change with them)."""
        try:
            self.drain(0)
        finally:
            self.executor.shutdown(wait=True)
        change, studies = None, self.replaced_studies
        if self.replacing is not None:
            change, self.replacing = self.replacing, None
        elif self.owns_change:
            change, studies = self.change, self.touched | self.replaced_studies
        if change is not None and not (change.touched or change.aside):
            change.abort()  # nothing replaced after all (sent again unchanged, or refused)
            change = None
        if change is None:
            return
        try:
            if self.options.study:
                finish_studies(self.archive, change, studies)
            else:
                change.stage_edit_states()
            self.archive.commit(change)
        except BaseException:
            change.abort()
            raise
        self.report.changes.append(change.id)

    def check_stop(self, result: FileResult) -> None:
        """Stop the batch at the first file that failed for want of the store as a whole."""
        if self.stopped is None:
            self.stopped = stop_reason(result.exception)

    def begin(
        self,
        stream: BinaryIO,
        result: FileResult,
        *,
        file_sha256: Callable[[], str] | None,
    ) -> Callable[[], None] | None:
        """Stage 1 for one stream, up to the decision to write it (in the calling thread).

        Parses the header, checks the UIDs and what the store holds, notifies the next stages,
        and returns the function that reads the frames and writes the instance (None when the
        file is unchanged, refused, or replaces a stored instance: that is done here; or when
        :meth:`_write_later` sent it to a worker: ``ops/distributed.py``).
        ``file_sha256`` hashes the whole input on demand (files can be read twice; pipes
        cannot): when the SOP Instance UID is already stored it tells, before any frame is
        read, whether the input is the same file.
        """
        name = str(result.path)
        parts = read_parts(stream, name, self.limits, self.recompression)
        try:
            header = next(parts)
            assert isinstance(header, InstanceHeader)
            key = instance_key(header.metadata, name)
            result.key = key
            self._await_earlier(key.sop)
            if self.options.clean:  # -c: the study set aside first, then the UID looked for
                self._prepare_study(key.study)
            previous = self.seen.previous(key)
            if previous is not None and file_sha256 is None and self.seen.written_in_run(key.sop):
                file_sha256 = partial(stream_sha256, stream, name, key)  # compared, not replaced
            sha = file_sha256() if previous is not None and file_sha256 is not None else None
            if previous is not None and previous == (sha, key):
                result.status = "unchanged"
                result.size = stream_size(stream)
                parts.close()
                return None
            differs = previous is not None and (previous[1] != key or sha is not None)
            if differs and self.seen.written_in_run(key.sop) is not None:
                raise duplicate_error(name, key, twice=True)
            if differs and not self.options.replace:
                raise duplicate_error(name, key)
            self._prepare_study(key.study)
        except Exception as exc:  # one bad file must not stop the batch
            record_error(result, exc)
            self.check_stop(result)
            parts.close()
            return None

        if previous is not None:
            # a replacement goes into this run's replace change: done here
            self._finish(parts, result, key, previous, stream)
            self.check_stop(result)
            return None
        return self._write_later(parts, result, key, stream)

    def _await_earlier(self, sop: str) -> None:
        """The same SOP Instance UID is being written by an earlier file: let it finish."""
        earlier = self.in_flight.pop(sop, None)
        if earlier is not None:
            wait([earlier])

    def _write_later(
        self,
        parts: Generator[Part, None, None],
        result: FileResult,
        key: InstanceKey,
        stream: BinaryIO,
    ) -> Callable[[], None] | None:
        """What writes a new instance (in a writer thread, by :meth:`add`)."""

        def finish() -> None:
            self._finish(parts, result, key, None, stream)

        return finish

    def _finish(
        self,
        parts: Generator[Part, None, None],
        result: FileResult,
        key: InstanceKey,
        previous: tuple[str, InstanceKey] | None,
        stream: BinaryIO,
    ) -> None:
        """Read the frames, write the instance, its record and bookkeeping."""
        name = str(result.path)
        try:
            change = self._replacement(previous[1]) if previous is not None else self.change
        except Exception as exc:  # one bad file must not stop the batch
            record_error(result, exc)
            return parts.close()
        sink = change.txn if change is not None else self.storage
        writer = InstanceWriter(self.storage, self.keys, key, sink)
        point = change.txn.savepoint() if previous is not None and change is not None else None
        try:
            end, writer = write_objects(parts, writer, stream, name, self.limits)
        except Exception as exc:  # one bad file must not stop the batch
            self._failed(result, exc, writer, change=change, point=point, previous=previous)
            return None
        finally:
            parts.close()
        self.conclude(result, end, writer, change=change, point=point, previous=previous)
        return None

    def conclude(
        self,
        result: FileResult,
        end: InstanceEnd,
        writer: InstanceWriter,
        *,
        change: ChangeSet | None = None,
        point: Any = None,
        previous: tuple[str, InstanceKey] | None = None,
    ) -> None:
        """Commit an instance whose frames and bulk data ``writer`` wrote (here, or on a
        worker: ``ops/distributed.py``): the record with ``-d``, the info record last, this
        run's bookkeeping and the file's result."""
        key = writer.key
        name = str(result.path)
        try:
            result.warnings = [*uid_warnings(key), *end.info.warnings, *incomplete_warning(end)]
            result.incomplete = incomplete_frame(end.info.skeleton) is not None
            result.size = end.info.original.size
            result.frames_recompressed, result.frames_kept = recompression_counts(end.info)
            new_sha = end.info.original.sha256
            if previous is not None and (
                previous == (new_sha, key) or self._same_data_set(previous[1], key, end)
            ):
                result.status = "unchanged"
                writer.abort()
                if change is not None and point is not None:
                    self._undo_replacement(change, point, previous[1])
                return
            if previous is not None and not self.options.replace and not self._completes(end):
                raise duplicate_error(name, key)
            if self.options.deduplicate:
                txn = change.txn if change is not None else None
                writer.written.append(self.keys.instance_record(key.study, key.sop))
                write_record(self.storage, self.keys, key.study, end.metadata, end.info, txn=txn)
            writer.commit(end, metadata=self.options.instances)
            self.seen.remember(key)
            if change is not None and previous is not None:
                self._record_replacement(change, previous[1], key, end)
            elif change is not None:
                after = metadata_hash(end.metadata)
                change.include(Touched(key.study, key.series, key.sop, None, 0, after_sha256=after))
            result.status = "replaced" if previous is not None else "stored"
            self.written.add(key.study)
        except Exception as exc:  # one bad file must not stop the batch
            self._failed(result, exc, writer, change=change, point=point, previous=previous)

    def _same_data_set(self, old: InstanceKey, new: InstanceKey, end: InstanceEnd) -> bool:
        """Whether a stream (STOW-RS, C-STORE) holds the data set of the instance it would
        replace, in a file that differs only outside it: the File Meta a storage SCP writes
        (the sender's AE title), the preamble, the encoding of the same frames
        (``InfoRecord.same_data_set``). Such a stream is the stored instance sent again;
        with ``--replace`` its file replaces the stored one all the same."""
        stored = self._pending_info
        if self.options.replace:  # the new file is to be kept, whatever it holds
            return False
        return old == new and stored is not None and stored.same_data_set(end.info)

    def _completes(self, end: InstanceEnd) -> bool:
        """Whether a file is the whole of the stored instance being replaced, which was
        stored incomplete (cut inside Pixel Data: ``InfoRecord.completed_by``): it replaces
        it without ``--replace``, as the stored instance's sender would want (a STOW-RS or
        C-STORE retry)."""
        stored = self._pending_info
        return stored is not None and stored.completed_by(end.info)

    def _failed(
        self,
        result: FileResult,
        exc: Exception,
        writer: InstanceWriter,
        *,
        change: ChangeSet | None,
        point: Any,
        previous: tuple[str, InstanceKey] | None,
    ) -> None:
        """The instance is not stored: what it wrote is removed (a replaced one stays). A
        storage that does not answer keeps them, as a killed writer would: without their
        info record they are no instance, and the next run that writes removes them."""
        with contextlib.suppress(StorageUnavailableError):
            writer.abort()
        if change is not None and point is not None and previous is not None:
            self._undo_replacement(change, point, previous[1])
        record_error(result, exc)

    def _replacement(self, old: InstanceKey) -> ChangeSet:
        """This run's replace change (or the change the whole run goes into), with ``old``
        set aside in it (before the new objects, which may have the same keys, are staged)."""
        if self.change is None and self.replacing is None:
            self.replacing = self.archive.change(
                "replace", level="instance", target="input files", reason=self.options.reason
            )
        change = self.change or self.replacing
        assert change is not None
        if change is self.change:  # a failed replacement rolls the change back to a savepoint:
            wait(list(self.in_flight.values()))  # no other file may be writing into it
        self._prepare_study(old.study, clean=False)  # (-c cleans the input's studies)
        if self.replace_states is None:
            self.replace_states = States(change.txn, self.keys)
        stored = self.replace_states.instance(old)
        self._pending_before = removed(change, stored)
        self._pending_info = stored.info
        self._pending_entry = change.edit_state(old.study).instances.get(old.sop)
        set_aside_instance(change, old)
        return change

    def _undo_replacement(self, change: ChangeSet, point: Any, old: InstanceKey) -> None:
        """The new file was not stored: the old instance stays (nothing set aside)."""
        change.txn.rollback(point)
        if self._pending_entry is not None:
            change.edit_state(old.study).instances[old.sop] = self._pending_entry
        for name in [k for k in change.aside if k.startswith(self.keys.instance(*_parts(old)))]:
            change.restore_aside(name)
        record = self.keys.instance_record(old.study, old.sop)
        if record in change.aside:
            change.restore_aside(record)

    def _record_replacement(
        self, change: ChangeSet, old: InstanceKey, new: InstanceKey, end: InstanceEnd
    ) -> None:
        before = self._pending_before
        assert before is not None
        after_sha = metadata_hash(end.metadata)
        if old == new:
            before.revision_after = 0
            before.after_sha256 = after_sha
            change.include(before)
        else:
            change.include(before)
            change.include(Touched(new.study, new.series, new.sop, None, 0, after_sha256=after_sha))
            self.seen.forget(old)
        self.replaced_studies |= {old.study, new.study}

    def _prepare_study(self, study: str, *, clean: bool = True) -> None:
        """Clean the study on first sight with -c (in this run's change); notify the next
        stages before writing."""
        if clean and self.options.clean and study not in self.cleaned:
            self.cleaned.add(study)
            assert self.change is not None
            set_aside_study(self.change, study)
            self.seen.cleaned(study)
        if study not in self.touched:
            if self.change is not None:
                notify.notify_in(self.change.txn, notify.GROUP, study)
                notify.notify_in(self.change.txn, notify.STUDY, study)
            else:
                notify.notify(self.storage, notify.GROUP, study)
                notify.notify(self.storage, notify.STUDY, study)
            self.touched.add(study)


def stop_reason(exc: BaseException | None) -> str | None:
    """Why no further file can be stored now, when ``exc`` says so: the store is full, or its
    index or storage does not answer (the next run of the same command completes the work);
    None for a failure of one file."""
    if isinstance(exc, StoreFullError):
        return STORE_FULL
    for error, what in ((IndexUnavailableError, "index"), (StorageUnavailableError, "storage")):
        if isinstance(exc, error):
            return (
                f"the store's {what} is unavailable; the same command run again once it "
                "answers completes the work"
            )
    return None


def _parts(key: InstanceKey) -> tuple[str, str, str]:
    return key.study, key.series, key.sop


def file_sha256(path: Path) -> str:
    """SHA-256 of a whole input file, read again (``Batch.begin``: is it the stored one?)."""
    with path.open("rb") as again:
        return hashlib.file_digest(again, "sha256").hexdigest()


def read_parts(
    stream: BinaryIO, name: str, limits: InlineLimits, recompression: Recompression | None
) -> Generator[Part, None, None]:
    """The parts of one input (``dicom/parts.py``), with the store's URIs of frames and bulk
    data."""
    return generate_parts(
        stream,
        limits=limits,
        frames_uri=lambda meta: frames_uri(uid_of(meta, SOP_INSTANCE_UID_KEY) or ""),
        bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
        name=name,
        recompression=recompression,
    )


def write_objects(
    parts: Iterator[Part],
    writer: InstanceWriter,
    stream: BinaryIO,
    name: str,
    limits: InlineLimits,
) -> tuple[InstanceEnd, InstanceWriter]:
    """Write an instance's frames and bulk data from its parts (the header read already);
    returns its end (metadata and info record, to commit) and the writer that holds what was
    written (a new one when the file was read again as received). When it raises, the caller
    aborts ``writer``: what a second reading wrote is removed here.

    Raises:
        TruncatedError: the file stops early where no incomplete instance can be stored.
    """
    end = _write_parts(parts, writer)
    cut = incomplete_frame(end.info.skeleton)
    if end.stop_reason is not None and cut is None:
        raise TruncatedError(f"{name}: {end.stop_reason}; the file is incomplete")
    if cut is not None and not end.info.rebuilds_original():
        writer.abort()
        again = InstanceWriter(writer.storage, writer.keys, writer.key, writer.sink)
        try:
            end = _write_as_received(stream, name, again, limits)
        except BaseException:
            again.abort()  # the caller aborts the first writer only
            raise
        writer = again
    return end, writer


def _write_as_received(
    stream: BinaryIO, name: str, writer: InstanceWriter, limits: InlineLimits
) -> InstanceEnd:
    """A file that ends inside Pixel Data, whose frames were recompressed without keeping
    its codestreams, read again with its frames as received: its export must give it back
    byte for byte, and only the received codestreams can."""
    if not stream.seekable():
        raise TruncatedError(
            f"{name}: file ends inside Pixel Data, and its frames were recompressed as they "
            "were read: give it as a file, or with --keep-originals or --no-recompress"
        )
    stream.seek(0)
    again = read_parts(stream, name, limits, None)
    try:
        next(again)  # the header, seen already
        return _write_parts(again, writer)
    finally:
        again.close()


def _write_parts(parts: Iterator[Part], writer: InstanceWriter) -> InstanceEnd:
    for part in parts:
        if isinstance(part, FramePart):
            writer.frame(part)
        elif isinstance(part, BulkPart):
            writer.bulk(part)
        elif isinstance(part, InstanceEnd):
            return part
    raise AssertionError("generate_parts ended without InstanceEnd")
