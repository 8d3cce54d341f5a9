"""The instances stage and the whole pipeline (the seed's ``mkdicomweb``).

Stage 1 (``mkdicomwebinstances``, ``mkdicomwebdeduplicated``) reads P10 files through
:func:`dicomweb_archive.dicom.parts.generate_parts` and writes, per instance: frames and bulk
data, the deduplicated per-instance record (``-d``), the instance's ``metadata.gz`` (``-i``),
and its ``info.json.gz`` last, which commits it (``store/instance.py``); it notifies the group
and study stages before writing anything of a study. A different file with a stored SOP
Instance UID is refused, or with ``--replace`` replaces it in a ``replace`` change (the old
instance set aside, revertible); with ``-c`` the whole run is one ``clean`` change (the studies
the input touches set aside, the new instances written: a killed run changes nothing).
:func:`ingest` runs stage 1, then per options the group and study stages (pipeline.md).

Bad input never raises: each file gets a :class:`FileResult`, the batch goes on; a full store
stops it (every later file would fail too; the rest is reported as not read).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
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
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.errors import (
    StoreFullError,
    TruncatedError,
)
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.model.tags import (
    SOP_INSTANCE_UID_KEY,
)
from dicomweb_archive.ops import stages
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
    iter_input_files,
    recompression_counts,
    record_error,
    stream_sha256,
    stream_size,
    uid_of,
)
from dicomweb_archive.ops.ingest_warnings import incomplete_warning, uid_warnings
from dicomweb_archive.ops.stages import StageReport
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


def ingest(
    archive: Archive,
    inputs: Iterable[str | os.PathLike[str]],
    *,
    options: PipelineOptions | None = None,
    replace: bool | None = None,
    progress: ProgressHook | None = None,
    keep_results: bool = True,
) -> IngestReport:
    """Run the pipeline (``mkdicomweb``): stage 1, then group and study stages per options.

    ``replace`` overrides the field of ``options``; ``keep_results``: see ``IngestReport``.
    """
    options = options or PipelineOptions()
    if replace is not None:
        options = replace_options(options, replace=replace)
    return write_instances(
        archive,
        inputs,
        options=options,
        progress=progress,
        run_stages=True,
        keep_results=keep_results,
    )


replace_options = replace


def _excluded(archive: Archive) -> Path | None:
    root = getattr(archive.storage, "root", None)
    return root if isinstance(root, Path) else None


def write_instances(
    archive: Archive,
    inputs: Iterable[str | os.PathLike[str]],
    *,
    options: PipelineOptions,
    progress: ProgressHook | None = None,
    run_stages: bool = False,
    keep_results: bool = True,
) -> IngestReport:
    """Stage 1 on files and directories; with ``run_stages`` also the later stages.
    ``keep_results`` off: the report keeps only the results of files that failed or have
    warnings (memory does not grow with the number of files; see ``IngestReport``)."""
    started = time.perf_counter()
    report = IngestReport(keep_results=keep_results)
    with archive.writing("ingest"):
        batch = _Batch(archive, options, report, progress)
        paths = iter_input_files(
            (Path(i) for i in inputs),
            exclude=_excluded(archive),
            follow_dicomdir=options.follow_dicomdir,
        )
        try:
            for path in paths:
                if batch.full is not None:
                    report.not_read += 1
                    continue
                batch.add(path)
                batch.drain(MAX_IN_FLIGHT)
        finally:
            batch.close()
        report.studies = batch.touched
        _later_stages(archive, options, report, batch, run_stages=run_stages)
    report.seconds = time.perf_counter() - started
    return report


def write_stream(
    archive: Archive,
    stream: BinaryIO,
    *,
    options: PipelineOptions | None = None,
    name: str = "<stream>",
) -> FileResult:
    """Stage 1 on one P10 byte stream (a pipe will do), then the later stages per options."""
    return write_streams(archive, [(name, stream)], options=options).results[0]


def write_streams(
    archive: Archive,
    streams: Iterable[tuple[str, BinaryIO]],
    *,
    options: PipelineOptions | None = None,
    recompression_for: Callable[[str], Recompression | None] | None = None,
    change: ChangeSet | None = None,
) -> IngestReport:
    """Stage 1 on several named P10 streams, then the later stages once (like a file batch).

    ``recompression_for`` chooses the recompression of each stream by its name (instead of
    ``options.recompression``). A stream whose reading raises is reported and skipped. With
    ``change``, every instance is written into that change (it appears when the change is
    committed, by its caller, who also runs the stages in it).
    """
    options = options or PipelineOptions()
    report = IngestReport()
    started = time.perf_counter()
    with archive.writing("ingest"):
        batch = _Batch(archive, options, report, change=change)
        try:
            for name, stream in streams:
                result = FileResult(Path(name), "failed")
                report.results.append(result)
                if batch.full is not None:
                    result.error = f"{name}: not read: {batch.full}"
                    continue
                if recompression_for is not None:
                    batch.recompression = recompression_for(name)
                finish = batch.begin(stream, result, file_sha256=None)
                if finish is not None:
                    finish()
        finally:
            batch.close()
        report.studies = batch.touched
        _later_stages(archive, options, report, batch, run_stages=change is None)
    report.seconds = time.perf_counter() - started
    return report


def _later_stages(
    archive: Archive,
    options: PipelineOptions,
    report: IngestReport,
    batch: _Batch,
    *,
    run_stages: bool,
) -> None:
    """Group and study stages on every notified study: those this run touched, and any an
    interrupted run left; then what is still pending, and which touched studies hold no
    instance (every file of them failed)."""
    if run_stages and (options.group or options.study):
        try:
            report.stages = stages.run_stages(
                archive,
                None,
                group=options.group,
                study=options.study,
                remove_instance_files=options.remove_deduplicated_instances,
            )
        except StoreFullError as exc:
            report.stages = StageReport(failures={"(stages)": str(exc)})
    storage = archive.storage
    report.pending = sorted({s for stage in notify.STAGES for s in notify.pending(storage, stage)})
    unwritten = batch.touched - batch.written
    report.empty_studies = {s for s in unwritten if not archive.index.locate("study", s)}


class _Batch:
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
        #: why the store cannot take more (the batch stops)
        self.full: str | None = None

    def add(self, path: Path | RefusedReference) -> None:
        """Start one file; its writing may go on in a writer thread."""
        if isinstance(path, RefusedReference):  # a DICOMDIR's reference that is not read
            refused = FileResult(path.path, "failed")
            record_error(refused, path.error)
            self.queue.append((refused, None))
            return
        result = FileResult(path, "failed")  # recorded in the report by drain()

        def file_sha256() -> str:
            with path.open("rb") as again:
                return hashlib.file_digest(again, "sha256").hexdigest()

        try:
            handle = path.open("rb")
        except OSError as exc:
            record_error(result, exc)
            self.queue.append((result, None))
            return
        finish = self.begin(handle, result, file_sha256=file_sha256)
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
            self._check_full(result)
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
                change.abort()
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

    def _check_full(self, result: FileResult) -> None:
        if isinstance(result.exception, StoreFullError) and self.full is None:
            self.full = str(result.exception)

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
        file is unchanged, refused, or replaces a stored instance: that is done here).
        ``file_sha256`` hashes the whole input on demand (files can be read twice; pipes
        cannot): when the SOP Instance UID is already stored it tells, before any frame is
        read, whether the input is the same file.
        """
        name = str(result.path)
        parts = self._parts(stream, name, self.recompression)
        try:
            header = next(parts)
            assert isinstance(header, InstanceHeader)
            key = instance_key(header.metadata, name)
            result.key = key
            earlier = self.in_flight.pop(key.sop, None)
            if earlier is not None:
                wait([earlier])  # the same SOP Instance UID is being written: let it finish
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
            self._check_full(result)
            parts.close()
            return None

        def finish() -> None:
            self._finish(parts, result, key, previous, stream)

        if previous is not None:
            finish()  # a replacement goes into this run's replace change: do it here
            self._check_full(result)
            return None
        return finish

    def _parts(
        self, stream: BinaryIO, name: str, recompression: Recompression | None
    ) -> Generator[Part, None, None]:
        return generate_parts(
            stream,
            limits=self.limits,
            frames_uri=lambda meta: frames_uri(uid_of(meta, SOP_INSTANCE_UID_KEY) or ""),
            bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
            name=name,
            recompression=recompression,
        )

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
            end = self._write_parts(parts, writer)
            cut = incomplete_frame(end.info.skeleton)
            if end.stop_reason is not None and cut is None:
                raise TruncatedError(f"{name}: {end.stop_reason}; the file is incomplete")
            if cut is not None and not end.info.rebuilds_original():
                writer.abort()
                writer = InstanceWriter(self.storage, self.keys, key, sink)
                end = self._write_as_received(stream, name, writer)
            result.warnings = [*uid_warnings(key), *end.info.warnings, *incomplete_warning(end)]
            result.incomplete = incomplete_frame(end.info.skeleton) is not None
            result.size = end.info.original.size
            result.frames_recompressed, result.frames_kept = recompression_counts(end.info)
            new_sha = end.info.original.sha256
            if previous is not None and previous == (new_sha, key):
                result.status = "unchanged"
                writer.abort()
                if change is not None and point is not None:
                    self._undo_replacement(change, point, previous[1])
                return
            if previous is not None and not self.options.replace:
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
            writer.abort()
            if change is not None and point is not None and previous is not None:
                self._undo_replacement(change, point, previous[1])
            record_error(result, exc)
        finally:
            parts.close()

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
        self._pending_before = removed(change, self.replace_states.instance(old))
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

    def _write_as_received(
        self, stream: BinaryIO, name: str, writer: InstanceWriter
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
        again = self._parts(stream, name, None)
        try:
            next(again)  # the header, seen already
            return self._write_parts(again, writer)
        finally:
            again.close()

    @staticmethod
    def _write_parts(parts: Iterator[Part], writer: InstanceWriter) -> InstanceEnd:
        for part in parts:
            if isinstance(part, FramePart):
                writer.frame(part)
            elif isinstance(part, BulkPart):
                writer.bulk(part)
            elif isinstance(part, InstanceEnd):
                return part
        raise AssertionError("generate_parts ended without InstanceEnd")

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


def _parts(key: InstanceKey) -> tuple[str, str, str]:
    return key.study, key.series, key.sop
