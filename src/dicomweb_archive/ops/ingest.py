"""Ingest: P10 files into the static DICOMweb store and the index (the seed's ``mkdicomweb``).

Plan of one run (``docs/spec/store-layout.md`` has the files, ``docs/spec/exit-codes.md`` the
outcomes):

1. take the store's write lock; finish any study left pending by an interrupted run;
2. for each input file: parse, decompose, and write the instance directory atomically (after
   marking its study pending); a bad file is reported and the batch goes on;
3. for each study touched: rewrite its query files and series metadata from its instance files,
   replace its index rows in one transaction, then clear its pending mark;
4. rewrite ``studies/index.json.gz`` from the index.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dicomweb_archive.dicom.decompose import InlineLimits, decompose
from dicomweb_archive.dicom.parse import parse_p10
from dicomweb_archive.errors import ArchiveError, DuplicateInstanceError, TruncatedError
from dicomweb_archive.index.database import Index
from dicomweb_archive.model.query import first_value
from dicomweb_archive.model.uid import check_uid
from dicomweb_archive.ops.study import study_rows
from dicomweb_archive.store.files import remove_file, remove_tree, write_bytes, write_json_gz
from dicomweb_archive.store.instance import InstanceKey, Original, write_instance
from dicomweb_archive.store.layout import StoreLayout, bulkdata_uri, frames_uri
from dicomweb_archive.store.lock import write_lock

Status = Literal["stored", "unchanged", "replaced", "failed"]
#: Files up to this size are read into memory; larger ones are memory-mapped.
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Threads writing instance directories (file-system latency overlaps; the GIL is released).
WRITER_THREADS = 4
#: Files parsed but not yet written, at most: bounds memory to a few files.
MAX_IN_FLIGHT = 8


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
    limits: InlineLimits | None = None,
    replace: bool = False,
    progress: ProgressHook | None = None,
) -> IngestReport:
    """Ingest files and directories into the store at ``store``; never raises for bad input.

    Files are parsed one at a time in this thread; writing their instance directories (which
    is mostly waiting on the file system) overlaps in a few threads, at most
    ``MAX_IN_FLIGHT`` files at once, so memory stays bounded. Results and progress come in
    input order.
    """
    started = time.perf_counter()
    layout = StoreLayout(Path(store))
    report = IngestReport()
    layout.root.mkdir(parents=True, exist_ok=True)
    with write_lock(layout.lock_path), Index(layout.index_path) as index:
        batch = _Batch(
            layout,
            index,
            limits=limits or InlineLimits(),
            replace=replace,
            report=report,
            progress=progress,
        )
        try:
            for path in iter_input_files((Path(i) for i in inputs), exclude=layout.root):
                batch.add(path)
        finally:
            batch.finish()
        refresh_studies(layout, index, batch.touched)
        report.studies = batch.touched
    report.seconds = time.perf_counter() - started
    return report


@dataclass(slots=True)
class _Job:
    """An instance ready to be written, and the file result to complete when it is."""

    result: FileResult
    status: Status
    sha: str
    future: Future[Any]


class _Batch:
    """One ingest run: duplicate bookkeeping, pending marks and the writer threads."""

    def __init__(
        self,
        layout: StoreLayout,
        index: Index,
        *,
        limits: InlineLimits,
        replace: bool,
        report: IngestReport,
        progress: ProgressHook | None,
    ) -> None:
        self.layout = layout
        self.index = index
        self.limits = limits
        self.replace = replace
        self.report = report
        self.progress = progress
        self.touched = set(pending_studies(layout))
        self.seen: dict[str, tuple[str, InstanceKey]] = {}
        self.jobs: deque[_Job] = deque()
        self.writing: dict[str, Future[Any]] = {}
        self.executor = ThreadPoolExecutor(max_workers=WRITER_THREADS)

    def add(self, path: Path) -> None:
        result = FileResult(path, "failed")
        self.report.results.append(result)
        try:
            job = self._plan(path, result)
        except Exception as exc:  # one bad file must not stop the batch
            _record_error(result, exc)
            job = None
        if job is None:
            self._done(result)
            return
        self.jobs.append(job)
        while len(self.jobs) > MAX_IN_FLIGHT:
            self._complete(self.jobs.popleft())

    def finish(self) -> None:
        while self.jobs:
            self._complete(self.jobs.popleft())
        self.executor.shutdown(wait=True)

    def _done(self, result: FileResult) -> None:
        if self.progress is not None:
            self.progress(result)

    def _complete(self, job: _Job) -> None:
        result = job.result
        try:
            job.future.result()
            result.status = job.status
        except Exception as exc:  # a failed write fails this file only
            _record_error(result, exc)
            if result.key is not None and self.seen.get(result.key.sop, ("",))[0] == job.sha:
                del self.seen[result.key.sop]
        self._done(result)

    def _previous(self, sop: str) -> tuple[str, InstanceKey] | None:
        previous = self.seen.get(sop)
        if previous is not None:
            return previous
        row = self.index.find_instance(sop)
        if row is None:
            return None
        key = InstanceKey(
            row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"]
        )
        return row["original_sha256"], key

    def _plan(self, path: Path, result: FileResult) -> _Job | None:
        """Read and check one file; returns the write job, or None when nothing is to write."""
        name = str(path)
        buffer, result.size, sha = _read(path)
        parsed = parse_p10(buffer, name=name)
        if parsed.stop_reason is not None:
            raise TruncatedError(f"{name}: {parsed.stop_reason}; the file is incomplete")
        parts = decompose(
            parsed,
            limits=self.limits,
            frames_uri=lambda meta: frames_uri(_uid(meta, "00080018") or ""),
            bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
        )
        key = InstanceKey(
            check_uid(_uid(parts.metadata, "0020000D"), "StudyInstanceUID", source=name),
            check_uid(_uid(parts.metadata, "0020000E"), "SeriesInstanceUID", source=name),
            check_uid(_uid(parts.metadata, "00080018"), "SOPInstanceUID", source=name),
        )
        result.key = key
        result.warnings = parts.warnings
        status: Status = "stored"
        previous = self._previous(key.sop)
        if previous is not None:
            if previous == (sha, key):
                result.status = "unchanged"
                return None
            if not self.replace:
                raise DuplicateInstanceError(
                    f"{name}: SOPInstanceUID {key.sop} is already stored from a different "
                    "file; use --replace to replace it"
                )
            status = "replaced"
            in_flight = self.writing.get(key.sop)
            if in_flight is not None:
                wait([in_flight])
            old = previous[1]
            if old != key:
                self._mark_pending(old.study)
                remove_tree(self.layout.instance(old.study, old.series, old.sop))
        self._mark_pending(key.study)
        future = self.executor.submit(
            write_instance, self.layout, key, parts, Original(sha, result.size)
        )
        self.writing[key.sop] = future
        self.seen[key.sop] = (sha, key)
        return _Job(result, status, sha, future)

    def _mark_pending(self, study: str) -> None:
        if study not in self.touched:
            write_bytes(self.layout.pending / study, b"")
            self.touched.add(study)


def _record_error(result: FileResult, exc: Exception) -> None:
    name = str(result.path)
    result.exception = exc
    if isinstance(exc, ArchiveError):
        result.error = str(exc)
    elif isinstance(exc, OSError):
        result.error = f"{name}: {exc.strerror or exc}" + (
            f" ({exc.filename})" if exc.filename and str(exc.filename) != name else ""
        )
    else:
        result.error = f"{name}: unexpected {type(exc).__name__} (run with --verbose for details)"


def pending_studies(layout: StoreLayout) -> list[str]:
    """Studies marked pending by a run that did not finish them, after cleaning up after it.

    An interrupted run can leave temporary files (``.name.XXXX.tmp``), staging directories
    (``.staging-<SOP>-<pid>``) and a directory set aside by a replace (``.<SOP>.old``) in the
    studies it was writing; they are removed, and a set-aside directory whose replacement never
    arrived is put back.
    """
    if not layout.pending.is_dir():
        return []
    studies = sorted(p.name for p in layout.pending.iterdir() if not p.name.startswith("."))
    _sweep(layout.studies, recursive=False)
    _sweep(layout.private, recursive=False)
    for study in studies:
        _sweep(layout.study(study), recursive=True)
    return studies


def _sweep(directory: Path, *, recursive: bool) -> None:
    if not directory.is_dir():
        return
    for path in list(directory.rglob(".*") if recursive else directory.glob(".*")):
        name = path.name
        if name.endswith(".old") and path.is_dir():
            original = path.with_name(name[1:-4])
            if not original.exists():
                path.replace(original)
            else:
                remove_tree(path)
        elif name.startswith(".staging-") and path.is_dir():
            remove_tree(path)
        elif name.endswith(".tmp") and path.is_file():
            path.unlink()


def refresh_studies(layout: StoreLayout, index: Index, studies: set[str]) -> None:
    """Rewrite the derived files and index rows of ``studies``, then the study list."""
    if not studies:
        return
    rows = [study_rows(layout, study, write=True) for study in sorted(studies)]
    index.replace_studies((r.study_instance_uid, r.study, r.series, r.instances) for r in rows)
    write_json_gz(layout.studies_index, index.study_query_objects())
    for study in studies:
        remove_file(layout.pending / study)


def _read(path: Path) -> tuple[bytes | mmap.mmap, int, str]:
    """The file's bytes (memory-mapped when large), size and SHA-256.

    A large file is hashed with buffered reads rather than through the map, so that its pages
    never all count as resident memory at once.
    """
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < MMAP_THRESHOLD:
            data = handle.read()
            return data, size, hashlib.sha256(data).hexdigest()
        sha = hashlib.file_digest(handle, "sha256").hexdigest()
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ), size, sha


def _uid(metadata: dict[str, object], key: str) -> str | None:
    element = metadata.get(key)
    if not isinstance(element, dict):
        return None
    value = first_value({key: element}, key)
    return value if isinstance(value, str) else None
