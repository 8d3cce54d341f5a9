"""P10 export (the seed's ``mkdicomwebpart10``): rebuild instances from the store alone.

Each instance is rebuilt from its info record's skeleton (``docs/spec/info-record.md``),
streamed segment by segment (memory bounded by one frame) and hashed on the way: an unedited
instance must come out with the SHA-256 of the file that was ingested, and any other outcome
is reported as a failure for that instance, never written silently.

Outputs (``docs/spec/export.md``):
- a directory: ``<out>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, each file
  written atomically;
- a zip archive (file or stream, members named as above, stored uncompressed): each instance's
  bytes are spooled (in memory up to :data:`ZIP_SPOOL`, then in a temporary file) and become a
  member only once they are whole and checked, so an instance that fails leaves no member;
- a directory with a DICOMDIR (PS3.10 media): pydicom's FileSet lays it out, its records are
  made from each file's head (``dicom/media.py``), and each file is the exported file itself.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import ArchiveError, ExportError, NoSuchStudyError, UsageError
from dicomweb_archive.index.queries import study_condition
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.model.uid import check_uid
from dicomweb_archive.ops.reconstruct import generate_instance, generate_p10
from dicomweb_archive.store.edit_state import steps_of
from dicomweb_archive.store.instance import InstanceKey, read_info

if TYPE_CHECKING:
    from pydicom.fileset import FileSet

#: Instances rebuilt at once by a directory export (two cores, as ingest plans for).
EXPORT_THREADS = 2
#: An instance's bytes up to this size are spooled in memory before they become a zip member;
#: a bigger one is spooled to a temporary file (beside the zip, or the system's temporary
#: directory for a stream)
ZIP_SPOOL = 64 << 20
ZIP_COPY_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Selection:
    """Which instances to export: a study (optionally a series and some instances), a
    patient, a query against the index, or every study; the kinds combine as a union."""

    study: str | None = None
    series: str | None = None
    sops: tuple[str, ...] = ()
    patient_id: str | None = None
    query: dict[str, str] = field(default_factory=dict)
    every_study: bool = False


@dataclass(slots=True)
class Exported:
    """One exported instance (or its failure)."""

    key: InstanceKey
    name: str
    size: int = 0
    sha256: str = ""
    error: str | None = None
    transcoded: bool = False
    edited: bool = False
    #: pixel-identical, not byte-identical: the original's codestreams were recompressed
    recompressed: bool = False
    #: the received file ends inside Pixel Data (``model/incomplete.py``)
    incomplete: bool = False
    #: what stopped it when that was not an error the archive words (shown with --verbose)
    exception: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        """Record why this instance was not exported, in one worded line."""
        if isinstance(exc, ArchiveError | OSError):
            self.error = f"SOPInstanceUID {self.key.sop}: {exc}"
        else:
            self.error = (
                f"SOPInstanceUID {self.key.sop}: an unexpected error stopped it (run with "
                "--verbose for details); the other instances are exported"
            )
            self.exception = exc

    @property
    def equivalence(self) -> str:
        """The instance's equivalence class as verify names it (``ops/verify_instance.py``),
        so that both commands count the same store alike: ``failed``, ``incomplete`` (the
        received file ends inside Pixel Data), ``edited`` (edit steps apply),
        ``pixels+attributes`` (recompressed at ingest) or ``bytes``."""
        if self.error is not None:
            return "failed"
        if self.incomplete:
            return "incomplete"
        if self.edited:
            return "edited"
        return "pixels+attributes" if self.recompressed else "bytes"


@dataclass(slots=True)
class ExportReport:
    items: list[Exported] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[Exported]:
        return [item for item in self.items if item.error is not None]

    @property
    def bytes(self) -> int:
        return sum(item.size for item in self.items if item.error is None)

    @property
    def ok(self) -> bool:
        return not self.failures


ProgressHook = Callable[[Exported], None]


def member_name(key: InstanceKey) -> str:
    """The documented name of an exported instance, relative to the output."""
    return f"{key.study}/{key.series}/{key.sop}.dcm"


def select(archive: Archive, selection: Selection) -> list[tuple[InstanceKey, str]]:
    """The instances selected, with their original SHA-256, in a stable order."""
    index = archive.index
    studies: list[str] = []
    if selection.study is not None:
        studies.append(check_uid(selection.study, "StudyInstanceUID", source="argument"))
    if selection.patient_id is not None:
        studies += index.studies_of_patient(selection.patient_id)
    if selection.query:
        studies += index.find_studies(study_condition(selection.query))
    if selection.every_study:
        studies += [row["study_instance_uid"] for row in index.studies()]
    if not studies and selection.study is None:
        if selection.every_study:
            raise NoSuchStudyError("the store has no studies to export")
        what = "patient" if selection.patient_id is not None else "query"
        raise NoSuchStudyError(f"no study of the store matches the {what}")
    rows = []
    seen: set[str] = set()
    for study in dict.fromkeys(studies):
        narrow = study == selection.study
        series = selection.series if narrow else None
        if series is not None:
            check_uid(series, "SeriesInstanceUID", source="argument")
        sops = [check_uid(s, "SOPInstanceUID", source="argument") for s in selection.sops]
        found = index.find_instances(study, series, sops if narrow else None)
        if not found:
            raise NoSuchStudyError(_missing(study, series, sops if narrow else []))
        if narrow and sops and len(found) != len(set(sops)):
            missing = sorted(set(sops) - {row["sop_instance_uid"] for row in found})
            raise NoSuchStudyError(f"SOPInstanceUID {missing[0]} is not in that series")
        for row in found:
            if row["sop_instance_uid"] not in seen:
                seen.add(row["sop_instance_uid"])
                key = InstanceKey(
                    row["study_instance_uid"],
                    row["series_instance_uid"],
                    row["sop_instance_uid"],
                )
                rows.append((key, row["original_sha256"]))
    return rows


def _missing(study: str, series: str | None, sops: list[str]) -> str:
    if series is None:
        return f"StudyInstanceUID {study} is not in the store"
    if sops:
        return f"none of the SOPInstanceUIDs is in series {series} of study {study}"
    return f"SeriesInstanceUID {series} of study {study} is not in the store"


def export(
    archive: Archive,
    selection: Selection,
    *,
    out: Path | None = None,
    zip_file: Path | BinaryIO | None = None,
    dicomdir: bool = False,
    transfer_syntax: str | None = None,
    progress: ProgressHook | None = None,
) -> ExportReport:
    """Export the selected instances to a directory, a zip (path or stream), or DICOMDIR media.

    With ``transfer_syntax``, instances stored in another transfer syntax are decoded and
    written in that one (``ops/transcode.py``); the others are still byte-exact. Instances
    whose compressed original was recompressed at ingest are written pixel-identical in
    ``transfer_syntax`` or their stored one (``Exported.recompressed``).
    """
    target = None
    if transfer_syntax is not None:
        from dicomweb_archive.ops.transcode import check_target  # noqa: PLC0415 - pydicom

        target = check_target(transfer_syntax)
    started = time.perf_counter()
    targets = sum(x is not None for x in (out, zip_file))
    if targets != 1:
        raise UsageError("give exactly one output: a directory or a zip file/stream")
    if dicomdir and out is None:
        raise UsageError("--dicomdir writes media to a directory: give --out DIR")
    chosen = select(archive, selection)
    report = ExportReport()
    if out is not None and dicomdir:
        _export_media(archive, chosen, out, report, progress=progress, target=target)
    elif out is not None:
        # Instances are rebuilt in parallel (decoding recompressed frames, hashing and file
        # I/O release the GIL); results are reported in the selection's order.
        with ThreadPoolExecutor(max_workers=EXPORT_THREADS) as pool:
            for item in pool.map(
                lambda pair: _to_file(
                    archive, pair[0], pair[1], out / member_name(pair[0]), target
                ),
                chosen,
            ):
                report.items.append(item)
                if progress is not None:
                    progress(item)
    else:
        assert zip_file is not None
        _export_zip(archive, chosen, zip_file, report, progress=progress, target=target)
    report.seconds = time.perf_counter() - started
    return report


class _Checked:
    """Streams an instance's bytes while hashing them; with a target transfer syntax, rebuilds
    the instance whole, checks it, and yields the transcoded file instead."""

    def __init__(self, archive: Archive, key: InstanceKey, target: str | None) -> None:
        self.archive, self.key, self.target = archive, key, target
        self.sha = hashlib.sha256()
        self.size = 0
        self.output_sha: str | None = None
        self.edited = False
        self.recompressed = False
        self.incomplete = False

    def __iter__(self) -> Iterator[bytes | memoryview]:
        info = read_info(self.archive.storage, self.archive.keys, self.key)
        self.incomplete = incomplete_frame(info.skeleton) is not None
        if self.target is not None and self.incomplete:
            raise ExportError(
                "the received file ends inside Pixel Data: it is not transcoded (export it "
                "without --transfer-syntax to get it as received)"
            )
        self.edited = bool(steps_of(self.archive.storage, self.archive.keys, self.key))
        if not info.rebuilds_original():  # pixel-identical, checked frame by frame
            self.recompressed = True
            output = b"".join(
                generate_instance(
                    self.archive, self.key, info=info, syntax=self.target, check_parts=self.edited
                )
            )
            self.size = len(output)
            self.output_sha = hashlib.sha256(output).hexdigest()
            yield output
            return
        # an unedited instance's whole file is checked against the original's SHA-256
        # (_verdict): decoded frames need no check of their own on the way
        chunks = generate_p10(
            self.archive, self.key, info=info, check_parts=self.edited, check_pixels=self.edited
        )
        if self.target is None:
            for chunk in chunks:
                self.sha.update(chunk)
                self.size += len(chunk)
                yield chunk
            return
        original = b"".join(chunks)
        self.sha.update(original)
        from dicomweb_archive.ops.transcode import transcode  # noqa: PLC0415 - pydicom, numpy

        output = transcode(original, self.target)
        self.size = len(output)
        self.output_sha = hashlib.sha256(output).hexdigest()
        yield output


def _verdict(item: Exported, checked: _Checked, expected: str) -> None:
    item.size = checked.size
    item.sha256 = checked.output_sha or checked.sha.hexdigest()
    item.incomplete = checked.incomplete
    if checked.recompressed:  # pixels checked frame by frame against the recorded hashes
        item.recompressed = True
        item.transcoded = checked.target is not None
        item.edited = checked.edited
        return
    item.transcoded = checked.output_sha is not None and checked.output_sha != expected
    item.edited = checked.edited
    if checked.sha.hexdigest() != expected and not checked.edited:
        why = _damaged_part(checked)
        item.error = f"SOPInstanceUID {item.key.sop}: " + (
            why
            or f"rebuilt bytes differ from the ingested file (SHA-256 {item.sha256[:12]}... "
            f"instead of {expected[:12]}...); run verify"
        )


def _damaged_part(checked: _Checked) -> str | None:
    """Which part of an instance whose rebuilt bytes differ from the original is damaged:
    the instance is rebuilt again with every part checked (only after a mismatch: an unedited
    instance is exported without checking its parts, the whole file's hash proves them)."""
    try:
        for _chunk in generate_p10(checked.archive, checked.key, check_parts=True):
            pass
    except ArchiveError as exc:
        return str(exc)
    return None


def _to_file(
    archive: Archive, key: InstanceKey, expected: str, path: Path, target: str | None
) -> Exported:
    item = Exported(key, str(path))
    try:
        checked = _Checked(archive, key, target)
        write_file(path, checked)
        _verdict(item, checked, expected)
        if item.error is not None:
            path.unlink()
    except Exception as exc:  # one instance must not stop the export of the others
        item.fail(exc)
    return item


def _export_zip(
    archive: Archive,
    chosen: list[tuple[InstanceKey, str]],
    archive_to: Path | BinaryIO,
    report: ExportReport,
    *,
    progress: ProgressHook | None,
    target: str | None,
) -> None:
    with contextlib.ExitStack() as stack:
        if isinstance(archive_to, Path):
            archive_to.parent.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(
                tempfile.NamedTemporaryFile(
                    dir=archive_to.parent,
                    prefix=f".{archive_to.name}.",
                    suffix=".tmp",
                    delete=False,
                )
            )
            temp = Path(handle.name)
            stack.callback(lambda: temp.unlink(missing_ok=True))
            sink = cast(BinaryIO, handle)
        else:
            sink = archive_to
        spool_dir = str(archive_to.parent) if isinstance(archive_to, Path) else None
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as zipped:
            for key, sha in chosen:
                item = Exported(key, member_name(key))
                try:
                    _zip_member(zipped, item, _Checked(archive, key, target), sha, spool_dir)
                except Exception as exc:  # one instance must not stop the export of the others
                    item.fail(exc)
                report.items.append(item)
                if progress is not None:
                    progress(item)
        if isinstance(archive_to, Path):
            handle.close()
            os.chmod(temp, 0o666 & ~_umask())
            temp.replace(archive_to)


def _zip_member(
    zipped: zipfile.ZipFile, item: Exported, checked: _Checked, sha: str, spool_dir: str | None
) -> None:
    """Add an instance as a member once its bytes are whole and checked (:func:`_verdict`):
    they are spooled first, so that an instance failing on the way leaves no member."""
    with tempfile.SpooledTemporaryFile(max_size=ZIP_SPOOL, dir=spool_dir) as spool:
        for chunk in checked:
            spool.write(chunk)
        _verdict(item, checked, sha)
        if item.error is not None:
            return
        spool.seek(0)
        info = zipfile.ZipInfo(item.name, date_time=(1980, 1, 1, 0, 0, 0))
        with zipped.open(info, "w", force_zip64=True) as member:
            shutil.copyfileobj(spool, member, ZIP_COPY_CHUNK)


def _export_media(
    archive: Archive,
    chosen: list[tuple[InstanceKey, str]],
    out: Path,
    report: ExportReport,
    *,
    progress: ProgressHook | None,
    target: str | None,
) -> None:
    """Export into a staging directory, let pydicom's FileSet lay out the media and write the
    DICOMDIR (PS3.10 8, PS3.3 F) from records made of each file's head (``dicom/media.py``),
    then move each exported file, byte for byte, to its place on the media; file names are
    then the File-set's, not ours."""
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        from pydicom.fileset import FileSet  # noqa: PLC0415 - DICOMDIR output only

        fileset = FileSet()
        exported: dict[str, Path] = {}
        in_series: dict[str, int] = {}
        for key, sha in chosen:
            path = staging / f"{key.sop}.dcm"
            item = _to_file(archive, key, sha, path, target)
            if item.error is None:
                in_series[key.series] = in_series.get(key.series, 0) + 1
                try:
                    _add_record(archive, fileset, item, path, in_series[key.series])
                    exported[key.sop] = path
                except Exception as exc:  # one instance must not stop the export of the others
                    item.fail(exc)
                    path.unlink(missing_ok=True)
            report.items.append(item)
            if progress is not None:
                progress(item)
        _write_media(fileset, out, exported, report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _add_record(
    archive: Archive, fileset: FileSet, item: Exported, path: Path, position: int
) -> None:
    """Add the directory records of an exported instance, made from its head: its data set
    ends where its trailing bytes start (they end a byte-exact or edited file; a transcoded
    or recompressed file is read whole, pydicom stopping before Pixel Data)."""
    from dicomweb_archive.dicom.media import (  # noqa: PLC0415 - pydicom
        add_record,
        fill_record_keys,
        read_record_head,
    )
    from dicomweb_archive.dicom.rewrite import VALUE_ERRORS  # noqa: PLC0415 - pydicom

    key = item.key
    trailing = read_info(archive.storage, archive.keys, key).trailing
    end = item.size
    if trailing is not None and not (item.transcoded or item.recompressed):
        end -= trailing.size
    uids = {
        "StudyInstanceUID": key.study,
        "SeriesInstanceUID": key.series,
        "SOPInstanceUID": key.sop,
    }
    try:
        with path.open("rb") as handle:
            head = read_record_head(handle, data_set_end=end, uids=uids)
        fill_record_keys(head, instance_number=position)
        add_record(fileset, head)
    except VALUE_ERRORS as exc:  # pydicom reads the values a directory record needs
        raise ExportError(
            "not added to the DICOMDIR: a value its directory record needs cannot be read "
            "or does not fit its VR (export it without --dicomdir)"
        ) from exc


def _write_media(
    fileset: FileSet, out: Path, exported: dict[str, Path], report: ExportReport
) -> None:
    """Write the DICOMDIR and the File-set's files, then put each exported file in place of
    the head pydicom wrote for it (``os.replace``: each file is whole at every moment)."""
    from dicomweb_archive.dicom.media import media_files, write_media  # noqa: PLC0415

    write_media(fileset, out)
    placed = media_files(fileset)
    for sop, path in exported.items():
        os.replace(path, placed[sop])
    for item in report.items:
        if item.key.sop in exported:
            item.name = str(placed[item.key.sop])


def write_file(path: Path, chunks: Iterable[bytes | memoryview]) -> int:
    """Write an output file atomically (temporary name in its folder, then renamed), with the
    mode the umask gives; returns its size. Outputs are not store data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    size = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                size += handle.write(chunk)
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return size


@functools.cache
def _umask() -> int:
    """The process's umask, read once (reading it means setting it: two export threads each
    reading it could see the other's temporary 0 and make files world-writable)."""
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
        return mask


_UMASK_LOCK = threading.Lock()
