"""What an ingest run is asked (:class:`PipelineOptions`) and what it reports, and the small
helpers that turn what a file holds into a key or a reported failure."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.dicomdir import (
    DIRECTORY_RECORD_SEQUENCE_KEY,
    SNIFF,
    is_dicomdir,
    read_referenced_file_ids,
    unsafe_file_id,
)
from dicomweb_archive.dicom.parts_model import InlineLimits
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.errors import ArchiveError, DicomdirError, DuplicateInstanceError
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.query import first_value
from dicomweb_archive.model.tags import (
    SERIES_INSTANCE_UID_KEY,
    SOP_INSTANCE_UID_KEY,
    STUDY_INSTANCE_UID_KEY,
)
from dicomweb_archive.model.uid import check_uid
from dicomweb_archive.ops.stages import StageReport
from dicomweb_archive.store.instance import InstanceKey

Status = Literal["stored", "unchanged", "replaced", "failed"]
#: ``PipelineOptions.recompression``: the store's recorded default
STORE_DEFAULT = "store"


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """The seed's options for one run (``docs/cli.md``); the layout settings (``--path-*``,
    ``-m``, ``-M``) are the store's (``store/config.py``)."""

    instances: bool = False  # -i: write the instance's own metadata.gz in stage 1
    deduplicate: bool = False  # -d: write the deduplicated per-instance record in stage 1
    group: bool = True  # -g: run the group stage after stage 1 (mkdicomweb)
    study: bool = True  # -s: run the study stage after stage 1 (mkdicomweb)
    clean: bool = False  # -c: set the touched studies aside first (a revertible change)
    remove_deduplicated_instances: bool = False  # -C: drop per-instance records once grouped
    replace: bool = False  # --replace: a different file may replace a stored SOP Instance UID
    #: -r/-t/-T: frames recompressed at ingest (None: --no-recompress, frames as received;
    #: STORE_DEFAULT: the store's recorded default)
    recompression: Recompression | str | None = STORE_DEFAULT
    #: why this run writes (the clean and replace changes record it)
    reason: str = ""
    #: --follow-dicomdir: a DICOMDIR input stands for the files it references
    follow_dicomdir: bool = False

    def recompression_for(self, archive: Archive) -> Recompression | None:
        if self.recompression == STORE_DEFAULT:
            value = archive.config.recompression
            return Recompression.from_json(value) if value is not None else None
        assert not isinstance(self.recompression, str)
        return self.recompression


def inline_limits(archive: Archive) -> InlineLimits:
    """The store's inline limits of binary values (``-m``, ``-M``)."""
    default = InlineLimits()
    config = archive.config
    return InlineLimits(
        config.inline_public if config.inline_public is not None else default.public,
        config.inline_private if config.inline_private is not None else default.private,
    )


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
    #: the file ends inside Pixel Data: stored incomplete (``model/incomplete.py``)
    incomplete: bool = False
    #: the change that set aside what this file replaced
    change_id: str | None = None


@dataclass(slots=True)
class Tally:
    """What the files an ingest report does not keep came to (see ``IngestReport``)."""

    statuses: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    frames_recompressed: int = 0
    frames_kept: int = 0

    def add(self, result: FileResult) -> None:
        self.statuses[result.status] = self.statuses.get(result.status, 0) + 1
        self.bytes += result.size
        self.frames_recompressed += result.frames_recompressed
        self.frames_kept += result.frames_kept


@dataclass(slots=True)
class IngestReport:
    """The outcome of an ingest run: a result per file (in input order), or, with
    ``keep_results`` off (the commands, so that memory does not grow with the number of
    files), results only for the files that failed or have warnings, the rest counted in
    ``tally``."""

    results: list[FileResult] = field(default_factory=list)
    keep_results: bool = True
    tally: Tally = field(default_factory=Tally)
    #: studies this run wrote instances of
    studies: set[str] = field(default_factory=set)
    #: what the later stages did (None: not run)
    stages: StageReport | None = None
    #: studies still waiting for the group or study stage after this run
    pending: list[str] = field(default_factory=list)
    #: studies this run notified that hold no instance (every file of them failed): not built
    empty_studies: set[str] = field(default_factory=set)
    #: changes this run made (clean, replace)
    changes: list[str] = field(default_factory=list)
    #: files not read because the store was full, or its index or storage unavailable
    not_read: int = 0
    #: why the batch stopped (``ops/ingest_batch.py``'s ``stop_reason``), None: it did not
    stopped: str | None = None
    seconds: float = 0.0

    def record(self, result: FileResult) -> None:
        """Add one file's result (kept, or counted: see the class docstring)."""
        if self.keep_results or result.status == "failed" or result.warnings:
            self.results.append(result)
        else:
            self.tally.add(result)

    def count(self, status: Status) -> int:
        """How many files ended with ``status``."""
        return sum(1 for r in self.results if r.status == status) + self.tally.statuses.get(
            status, 0
        )

    @property
    def failures(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def instances(self) -> int:
        return self.count("stored") + self.count("replaced")

    @property
    def bytes(self) -> int:
        return sum(r.size for r in self.results if r.status != "failed") + self.tally.bytes

    @property
    def ok(self) -> bool:
        return not self.failures and not self.not_read and (self.stages is None or self.stages.ok)

    @property
    def frames_recompressed(self) -> int:
        kept = sum(r.frames_recompressed for r in self.results if r.status != "failed")
        return kept + self.tally.frames_recompressed

    @property
    def incomplete(self) -> int:
        """Instances stored incomplete (their files have a warning that says so: always in
        ``results``)."""
        return sum(1 for r in self.results if r.incomplete and r.status in ("stored", "replaced"))

    @property
    def frames_kept(self) -> int:
        return sum(r.frames_kept for r in self.results if r.status != "failed") + (
            self.tally.frames_kept
        )


ProgressHook = Callable[[FileResult], None]


def iter_input_files(
    inputs: Iterable[Path], *, exclude: Path | None = None, follow_dicomdir: bool = False
) -> Iterator[Path | RefusedReference]:
    """Files named and files under directories named, recursively, in sorted order.

    With ``follow_dicomdir`` a DICOMDIR stands for the files it references, in its record
    order (``dicom/dicomdir.py``), and every file comes once.
    """
    if not follow_dicomdir:
        yield from _walk(inputs, exclude)
        return
    seen: set[Path] = set()
    for path in _walk(inputs, exclude):
        try:
            found = generate_referenced_files(path) if _is_dicomdir(path) else iter([path])
            for item in found:
                if isinstance(item, RefusedReference):
                    yield item
                elif (real := item.resolve()) not in seen:
                    seen.add(real)
                    yield item
        except DicomdirError as exc:
            yield RefusedReference(path, exc)


@dataclass(frozen=True, slots=True)
class RefusedReference:
    """A reference of the DICOMDIR ``path`` that is not followed, and why (a worded error)."""

    path: Path
    error: DicomdirError


def _is_dicomdir(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return is_dicomdir(handle.read(SNIFF))
    except OSError:
        return False  # reported when it is read


def generate_referenced_files(dicomdir: Path) -> Iterator[Path | RefusedReference]:
    """The files a DICOMDIR references (Referenced File ID, relative to its folder, PS3.10
    8.5), in record order: a path inside its folder, or a :class:`RefusedReference` for one
    that would leave it (symbolic links resolved).

    Raises:
        DicomdirError: the DICOMDIR cannot be read.
    """
    try:
        with dicomdir.open("rb") as handle:
            file_ids = read_referenced_file_ids(handle, name=str(dicomdir))
    except OSError as exc:
        raise DicomdirError(f"{dicomdir}: {exc.strerror or exc}") from exc
    root = dicomdir.parent
    real_root = root.resolve()
    for number, parts in enumerate(file_ids, start=1):
        where = f"{dicomdir}: record {number}"
        shown = "\\".join(p.replace("\0", "") for p in parts)
        if unsafe_file_id(parts):
            message = f"Referenced File ID {shown!r} is not a path inside the DICOMDIR's folder"
        else:
            path = root.joinpath(*parts)
            if path.resolve().is_relative_to(real_root):
                yield path
                continue
            message = f"{path} leaves the DICOMDIR's folder"
        yield RefusedReference(dicomdir, DicomdirError(f"{where}: {message}; not read"))


def _walk(inputs: Iterable[Path], exclude: Path | None) -> Iterator[Path]:
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


def recompression_counts(info: InfoRecord) -> tuple[int, int]:
    """Frames recompressed, and frames kept as received although recompression applied to
    the instance (its info record then holds the pixel description)."""
    recompressed = sum(1 for f in info.frames if f.recompressed)
    asked = info.stored.pixel is not None
    return recompressed, (len(info.frames) - recompressed if asked else 0)


def stream_size(stream: BinaryIO) -> int:
    try:
        return os.fstat(stream.fileno()).st_size
    except (OSError, ValueError):
        return 0


def stream_sha256(stream: BinaryIO, name: str, key: InstanceKey) -> str:
    """SHA-256 of a whole seekable stream, read again from its start: a stream whose SOP
    Instance UID this run already wrote is compared with it, never taken as a replacement of
    it. One that cannot be read again (a pipe) cannot be compared: refused as given twice."""
    if not stream.seekable():
        raise duplicate_error(name, key, twice=True)
    stream.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def instance_key(metadata: dict[str, object], name: str) -> InstanceKey:
    """Where the instance goes: its Study, Series and SOP Instance UIDs, checked.

    Raises:
        DicomdirError: the file is a DICOMDIR, which holds no instance.
        MissingUidError, UnsafeUidError: a UID is missing or is no UID.
    """
    if DIRECTORY_RECORD_SEQUENCE_KEY in metadata:
        raise DicomdirError(
            f"{name}: is a DICOMDIR (a media directory, PS3.10 8.6), not an instance; "
            "--follow-dicomdir ingests the files it references"
        )
    return InstanceKey(
        check_uid(uid_of(metadata, STUDY_INSTANCE_UID_KEY), "StudyInstanceUID", source=name),
        check_uid(uid_of(metadata, SERIES_INSTANCE_UID_KEY), "SeriesInstanceUID", source=name),
        check_uid(uid_of(metadata, SOP_INSTANCE_UID_KEY), "SOPInstanceUID", source=name),
    )


def duplicate_error(name: str, key: InstanceKey, *, twice: bool = False) -> DuplicateInstanceError:
    """A file with a stored SOP Instance UID (``twice``: one this run wrote from another file,
    refused even with --replace: one input cannot say which file is the instance)."""
    if twice:
        error = DuplicateInstanceError(
            f"{name}: SOPInstanceUID {key.sop} is given twice in this input, by files that "
            "differ; give one of them"
        )
        error.stored = False
        return error
    return DuplicateInstanceError(
        f"{name}: SOPInstanceUID {key.sop} is already stored from a different file; "
        "use --replace to replace it"
    )


def record_error(result: FileResult, exc: Exception) -> None:
    name = str(result.path)
    result.status = "failed"
    result.exception = exc
    if isinstance(exc, ArchiveError):
        message = str(exc)
        result.error = message if name in message else f"{name}: {message}"
    elif isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != name else ""
        result.error = f"{name}: {exc.strerror or exc}{where}"
    else:
        result.error = f"{name}: an unexpected error stopped it (run with --verbose for details)"


def uid_of(metadata: dict[str, object], key: str) -> str | None:
    element = metadata.get(key)
    if not isinstance(element, dict):
        return None
    value = first_value({key: element}, key)
    return value if isinstance(value, str) else None
