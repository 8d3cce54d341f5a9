"""The instances stage and the whole pipeline (the seed's ``mkdicomweb``).

Stage 1 (``mkdicomwebinstances``, ``mkdicomwebdeduplicated``) reads P10 files through
:func:`dicomweb_archive.dicom.parts.generate_parts` and writes, per instance: frames and bulk
data (their final place), the instance's ``metadata.gz`` and ``info.json.gz`` with ``-i``, and
the deduplicated per-instance record with ``-d``; it notifies the group and study stages
before writing anything. :func:`ingest` runs stage 1 and then, per options, the group and
study stages on the studies it touched (``docs/spec/pipeline.md``).

Bad input never raises: each file gets a :class:`FileResult`, the batch goes on.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

from dicomweb_archive.dicom.parts import (
    BulkPart,
    FramePart,
    InlineLimits,
    InstanceEnd,
    InstanceHeader,
    Part,
    generate_parts,
)
from dicomweb_archive.dicom.recompress import Recompression, is_recompressed
from dicomweb_archive.errors import ArchiveError, DuplicateInstanceError, TruncatedError
from dicomweb_archive.index.database import Index
from dicomweb_archive.model.query import first_value
from dicomweb_archive.model.uid import check_uid
from dicomweb_archive.ops.stages import build_locked, group_locked
from dicomweb_archive.store import notify
from dicomweb_archive.store.dedup import (
    StudyRecords,
    drop_instance,
    read_study_records,
    write_record,
)
from dicomweb_archive.store.files import read_json_gz, remove_tree
from dicomweb_archive.store.instance import InstanceKey, InstanceWriter
from dicomweb_archive.store.layout import StoreLayout, bulkdata_uri, frames_uri
from dicomweb_archive.store.lock import write_lock
from dicomweb_archive.store.recovery import recover

Status = Literal["stored", "unchanged", "replaced", "failed"]
#: Threads reading, recompressing and writing frames (codecs, hashing, zlib and file I/O
#: release the GIL). One more than the two cores we plan for: while one thread holds the GIL
#: for Python work, two can be in a codec (measured: 3 % faster recompressing ingest).
WRITER_THREADS = 3
#: Files started but not completed, at most: bounds memory to a few frames per thread.
MAX_IN_FLIGHT = 6


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """The seed's options (``docs/cli.md``)."""

    limits: InlineLimits = field(default_factory=InlineLimits)
    instances: bool = False  # -i: write instance metadata.gz/info.json.gz in stage 1
    deduplicate: bool = True  # -d: write the deduplicated per-instance record in stage 1
    group: bool = True  # -g: run the group stage after stage 1 (mkdicomweb)
    study: bool = True  # -s: run the study stage after stage 1 (mkdicomweb)
    clean: bool = False  # -c: remove the touched studies' outputs first
    remove_deduplicated_instances: bool = False  # -C: drop per-instance records once grouped
    replace: bool = False  # --replace: a different file may replace a stored SOP Instance UID
    path_instances: str = "instances"
    path_deduplicated: str = "deduplicated"
    #: -r/-t/-T: frames recompressed at ingest (None: --no-recompress, frames as received)
    recompression: Recompression | None = field(default_factory=Recompression)

    def layout(self, store: str | os.PathLike[str]) -> StoreLayout:
        return StoreLayout(Path(store), self.path_instances, self.path_deduplicated)


@dataclass(slots=True)
class FileResult:
    """What happened to one input file."""

    path: Path
    status: Status
    size: int = 0
    key: InstanceKey | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    exception: BaseException | None = None
    frames_recompressed: int = 0
    #: frames recompression was asked for but that were kept as received (warnings say why)
    frames_kept: int = 0


@dataclass(slots=True)
class IngestReport:
    """The outcome of an ingest run."""

    results: list[FileResult] = field(default_factory=list)
    studies: set[str] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def failures(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def instances(self) -> int:
        return sum(1 for r in self.results if r.status in ("stored", "replaced"))

    @property
    def bytes(self) -> int:
        return sum(r.size for r in self.results if r.status != "failed")

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def frames_recompressed(self) -> int:
        return sum(r.frames_recompressed for r in self.results if r.status != "failed")

    @property
    def frames_kept(self) -> int:
        return sum(r.frames_kept for r in self.results if r.status != "failed")


ProgressHook = Callable[[FileResult], None]


def iter_input_files(inputs: Iterable[Path], *, exclude: Path | None = None) -> Iterator[Path]:
    """Files named and files under directories named, recursively, in sorted order."""
    excluded = exclude.resolve() if exclude else None
    for item in inputs:
        if item.is_dir():
            for dirpath, dirnames, filenames in os.walk(item):
                here = Path(dirpath)
                if excluded is not None and here.resolve() == excluded:
                    dirnames[:] = []
                    continue
                dirnames.sort()
                for name in sorted(filenames):
                    yield here / name
        else:
            yield item


def ingest(
    inputs: Iterable[str | os.PathLike[str]],
    store: str | os.PathLike[str],
    *,
    options: PipelineOptions | None = None,
    limits: InlineLimits | None = None,
    replace: bool | None = None,
    progress: ProgressHook | None = None,
) -> IngestReport:
    """Run the pipeline (``mkdicomweb``): stage 1, then group and study stages per options.

    ``limits`` and ``replace`` override the fields of ``options``.
    """
    options = options or PipelineOptions()
    if limits is not None:
        options = replace_options(options, limits=limits)
    if replace is not None:
        options = replace_options(options, replace=replace)
    return write_instances(inputs, store, options=options, progress=progress, run_stages=True)


replace_options = replace


def write_instances(
    inputs: Iterable[str | os.PathLike[str]],
    store: str | os.PathLike[str],
    *,
    options: PipelineOptions,
    progress: ProgressHook | None = None,
    run_stages: bool = False,
) -> IngestReport:
    """Stage 1 on files and directories; with ``run_stages`` also the later stages."""
    started = time.perf_counter()
    layout = options.layout(store)
    report = IngestReport()
    layout.root.mkdir(parents=True, exist_ok=True)
    if run_stages and options.study:
        # The study stage would write each instance's metadata.gz and info.json.gz anyway:
        # writing them inside the staging directory now saves an atomic write each, and the
        # study stage then finds them up to date.
        options = replace(options, instances=True)
    with write_lock(layout.lock_path):
        recover(layout)
        batch = _Batch(layout, options, report, progress)
        try:
            for path in iter_input_files((Path(i) for i in inputs), exclude=layout.root):
                batch.add(path)
                batch.drain(MAX_IN_FLIGHT)
        finally:
            batch.close()
        report.studies = batch.touched
        if run_stages:
            _later_stages(layout, options)
    report.seconds = time.perf_counter() - started
    return report


def write_stream(
    stream: BinaryIO,
    store: str | os.PathLike[str],
    *,
    options: PipelineOptions | None = None,
    name: str = "<stream>",
) -> FileResult:
    """Stage 1 on one P10 byte stream (a pipe will do), then the later stages per options."""
    return write_streams([(name, stream)], store, options=options)[0]


def write_streams(
    streams: Iterable[tuple[str, BinaryIO]],
    store: str | os.PathLike[str],
    *,
    options: PipelineOptions | None = None,
    recompression_for: Callable[[str], Recompression | None] | None = None,
) -> list[FileResult]:
    """Stage 1 on several named P10 streams, then the later stages once (like a file batch).

    ``recompression_for`` chooses the recompression of each stream by its name (instead of
    ``options.recompression``).
    """
    options = options or PipelineOptions()
    layout = options.layout(store)
    layout.root.mkdir(parents=True, exist_ok=True)
    results: list[FileResult] = []
    with write_lock(layout.lock_path):
        recover(layout)
        batch = _Batch(layout, options, IngestReport())
        try:
            for name, stream in streams:
                result = FileResult(Path(name), "failed")
                results.append(result)
                if recompression_for is not None:
                    batch.options = replace(options, recompression=recompression_for(name))
                finish = batch.begin(stream, result, file_sha256=None)
                if finish is not None:
                    finish()
        finally:
            batch.close()
        _later_stages(layout, options)
    return results


def _later_stages(layout: StoreLayout, options: PipelineOptions) -> None:
    """Group and study stages on every notified study: those this run touched, and any an
    interrupted run left."""
    read: dict[str, StudyRecords] = {}
    if options.deduplicate and options.group:
        group_locked(
            layout, None, remove_instance_files=options.remove_deduplicated_instances, read=read
        )
    if options.study:
        build_locked(layout, None, known=read)


class _Batch:
    """One stage-1 run: duplicate bookkeeping, cleaning, notifications."""

    def __init__(
        self,
        layout: StoreLayout,
        options: PipelineOptions,
        report: IngestReport,
        progress: ProgressHook | None = None,
    ) -> None:
        self.layout = layout
        self.options = options
        self.report = report
        self.progress = progress
        self.queue: deque[tuple[FileResult, Future[None] | None]] = deque()
        self.in_flight: dict[str, Future[None]] = {}
        self.executor = ThreadPoolExecutor(max_workers=WRITER_THREADS)
        self.touched: set[str] = set()
        self.cleaned: set[str] = set()
        self.seen: dict[str, tuple[str, InstanceKey]] = {}
        self.records: dict[str, dict[str, tuple[str, InstanceKey]]] = {}
        self.index = Index(layout.index_path)

    def add(self, path: Path) -> None:
        """Start one file; its writing may go on in a writer thread."""
        result = FileResult(path, "failed")
        self.report.results.append(result)

        def file_sha256() -> str:
            with path.open("rb") as again:
                return hashlib.file_digest(again, "sha256").hexdigest()

        try:
            handle = path.open("rb")
        except OSError as exc:
            _record_error(result, exc)
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
            if self.progress is not None:
                self.progress(result)

    def close(self) -> None:
        try:
            self.drain(0)
        finally:
            self.executor.shutdown(wait=True)
            self.index.close()

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
        file is unchanged or refused). ``file_sha256`` hashes the whole input on demand (files
        can be read twice; pipes cannot): when the SOP Instance UID is already stored it tells,
        before any frame is read, whether the input is the same file.
        """
        name = str(result.path)
        parts = generate_parts(
            stream,
            limits=self.options.limits,
            frames_uri=lambda meta: frames_uri(_uid(meta, "00080018") or ""),
            bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
            name=name,
            recompression=self.options.recompression,
        )
        try:
            header = next(parts)
            assert isinstance(header, InstanceHeader)
            key = _key(header.metadata, name)
            result.key = key
            earlier = self.in_flight.pop(key.sop, None)
            if earlier is not None:
                wait([earlier])  # the same SOP Instance UID is being written: let it finish
            previous = self._previous(key)
            sha = file_sha256() if previous is not None and file_sha256 is not None else None
            if previous is not None and previous == (sha, key):
                result.status = "unchanged"
                result.size = _size(stream)
                parts.close()
                return None
            differs = previous is not None and (previous[1] != key or sha is not None)
            if differs and not self.options.replace:
                raise _duplicate(name, key)
            self._prepare_study(key.study)
        except Exception as exc:  # one bad file must not stop the batch
            _record_error(result, exc)
            parts.close()
            return None

        def finish() -> None:
            self._finish(parts, result, key, previous)

        if previous is not None and previous[1] != key:
            finish()  # moving an instance between studies touches shared state: do it here
            return None
        return finish

    def _finish(
        self,
        parts: Generator[Part, None, None],
        result: FileResult,
        key: InstanceKey,
        previous: tuple[str, InstanceKey] | None,
    ) -> None:
        """Read the frames, write the instance, its record and bookkeeping."""
        name = str(result.path)
        writer: InstanceWriter | None = None
        try:
            writer = InstanceWriter(self.layout, key)
            end = self._write_parts(parts, writer)
            result.warnings = end.info["warnings"]
            result.size = end.info["original"]["size"]
            result.frames_recompressed, result.frames_kept = _recompression_counts(end.info)
            if end.stop_reason is not None:
                raise TruncatedError(f"{name}: {end.stop_reason}; the file is incomplete")
            new_sha = end.info["original"]["sha256"]
            if previous is not None and previous == (new_sha, key):
                result.status = "unchanged"
                return
            if previous is not None and not self.options.replace:
                raise _duplicate(name, key)
            if previous is not None and previous[1] != key:
                self._move_away(previous[1])
            writer.commit(end, instance_files=self.options.instances)
            writer = None
            if self.options.deduplicate:
                write_record(self.layout, key.study, end.metadata, end.info)
            self.seen[key.sop] = (new_sha, key)
            result.status = "replaced" if previous is not None else "stored"
        except Exception as exc:  # one bad file must not stop the batch
            _record_error(result, exc)
        finally:
            parts.close()
            if writer is not None:
                writer.abort()

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

    def _prepare_study(self, study: str) -> None:
        """Clean the study on first sight with -c; notify the next stages before writing."""
        if self.options.clean and study not in self.cleaned:
            self.cleaned.add(study)
            remove_tree(self.layout.study(study))
            remove_tree(self.layout.instance_records(study))
            remove_tree(self.layout.groups(study))
            self.seen = {sop: v for sop, v in self.seen.items() if v[1].study != study}
            self.records[study] = {}
        if study not in self.touched:
            if self.options.deduplicate:
                notify.notify(self.layout, notify.GROUP, study)
            notify.notify(self.layout, notify.STUDY, study)
            self.touched.add(study)

    def _move_away(self, old: InstanceKey) -> None:
        """A replacement lives in another study or series: remove the old instance."""
        self._prepare_study(old.study)
        remove_tree(self.layout.instance(old.study, old.series, old.sop))
        drop_instance(self.layout, old.study, old.sop)
        self.records.get(old.study, {}).pop(old.sop, None)

    def _previous(self, key: InstanceKey) -> tuple[str, InstanceKey] | None:
        """What the store holds for this SOP Instance UID: (original SHA-256, where).

        Stage 1 is complete for an instance when its output exists: the deduplicated record
        (with ``-d``) or the instance's info record (instances stage alone). An instance
        stored in another study or series is found through the index.
        """
        if key.sop in self.seen:
            return self.seen[key.sop]
        if self.options.clean and key.study not in self.cleaned:
            return None
        if self.options.deduplicate:
            known = self._known(key.study).get(key.sop)
            if known is not None:
                return known
        else:
            info_path = self.layout.info(key.study, key.series, key.sop)
            if info_path.exists():
                return read_json_gz(info_path)["original"]["sha256"], key
        row = self.index.find_instance(key.sop)
        if row is None:
            return None
        where = InstanceKey(
            row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"]
        )
        if where.study == key.study and self.options.deduplicate:
            return None  # indexed, but its record is gone: write it again
        return row["original_sha256"], where

    def _known(self, study: str) -> dict[str, tuple[str, InstanceKey]]:
        """The study's deduplicated records as SOP -> (SHA-256, where), read once per run."""
        if study not in self.records:
            records = read_study_records(self.layout, study)
            self.records[study] = {
                sop: (
                    record["info"]["original"]["sha256"],
                    InstanceKey(study, record["series_instance_uid"], sop),
                )
                for sop, record in records.records.items()
            }
        return self.records[study]


def _recompression_counts(info: dict[str, Any]) -> tuple[int, int]:
    """Frames recompressed, and frames kept as received although recompression applied to
    the instance (its info record then holds the pixel description)."""
    recompressed = sum(1 for f in info["frames"] if is_recompressed(f))
    asked = "pixel" in info["stored"]
    return recompressed, (len(info["frames"]) - recompressed if asked else 0)


def _size(stream: BinaryIO) -> int:
    try:
        return os.fstat(stream.fileno()).st_size
    except (OSError, ValueError):
        return 0


def _key(metadata: dict[str, object], name: str) -> InstanceKey:
    return InstanceKey(
        check_uid(_uid(metadata, "0020000D"), "StudyInstanceUID", source=name),
        check_uid(_uid(metadata, "0020000E"), "SeriesInstanceUID", source=name),
        check_uid(_uid(metadata, "00080018"), "SOPInstanceUID", source=name),
    )


def _duplicate(name: str, key: InstanceKey) -> DuplicateInstanceError:
    return DuplicateInstanceError(
        f"{name}: SOPInstanceUID {key.sop} is already stored from a different file; "
        "use --replace to replace it"
    )


def _record_error(result: FileResult, exc: Exception) -> None:
    name = str(result.path)
    result.status = "failed"
    result.exception = exc
    if isinstance(exc, ArchiveError):
        result.error = str(exc)
    elif isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != name else ""
        result.error = f"{name}: {exc.strerror or exc}{where}"
    else:
        result.error = f"{name}: unexpected {type(exc).__name__} (run with --verbose for details)"


def _uid(metadata: dict[str, object], key: str) -> str | None:
    element = metadata.get(key)
    if not isinstance(element, dict):
        return None
    value = first_value({key: element}, key)
    return value if isinstance(value, str) else None
