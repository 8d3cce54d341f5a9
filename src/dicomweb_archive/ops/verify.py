"""Verify a store: integrity, index agreement, orphans, and each instance's equivalence class.

Checks (``docs/spec/verify.md``), per study:

- every instance directory has its info record; every frame and bulk-data file the record
  names exists and has the recorded SHA-256; no frame, bulk-data file or directory is left
  over (orphans);
- each instance's P10 file is rebuilt from the store alone and its SHA-256 compared with the
  ingested file's: equal gives the class ``bytes``; frames recompressed at ingest are decoded
  back to the received bytes on the way (``docs/spec/recompression.md``);
- each frame recompressed from a compressed original (whose codestreams are not kept) must
  decode to the pixels recorded at ingest: the class ``pixels+attributes``;
- an instance updated since ingest is ``edited``; its original is rebuilt from its history;
- the series metadata, query files and index rows equal what the instances' metadata gives;
- with ``deep``, each instance's metadata is derived again from its rebuilt file and compared
  with the stored ``metadata.gz`` (catches an edit that was made to every derived file alike).

``against`` compares the store with a directory of original P10 files by SOP Instance UID.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomweb_archive.dicom.codecs import PixelDescription
from dicomweb_archive.dicom.parts import InstanceEnd, generate_parts
from dicomweb_archive.dicom.recompress import (
    is_recompressed,
    rebuilds_original,
    source_frame,
    source_pixels,
    stored_pixel,
    stored_syntaxes,
)
from dicomweb_archive.dicom.skeleton import ChunkStream, generate_bytes
from dicomweb_archive.errors import ArchiveError, CodecError, MissingStoreFileError
from dicomweb_archive.index.database import Index
from dicomweb_archive.model.uid import check_uid, is_safe_uid
from dicomweb_archive.ops.against import verify_against
from dicomweb_archive.ops.delete import rejected_bulk
from dicomweb_archive.ops.study import group_by_series, study_rows
from dicomweb_archive.ops.update import history_entries
from dicomweb_archive.store import notify
from dicomweb_archive.store.dedup import read_study_records
from dicomweb_archive.store.files import read_json_gz
from dicomweb_archive.store.instance import InstanceKey, read_bulk, read_frame, study_uids
from dicomweb_archive.store.layout import StoreLayout, bulkdata_uri, frames_uri

JsonObject = dict[str, Any]
#: Instances checked at once (two cores, as ingest plans for).
VERIFY_THREADS = 2
INSTANCE_FILES = {"info.json.gz", "metadata.gz", "frames"}
SERIES_FILES = {"metadata.gz", "series-singleton.json.gz", "instances"}


@dataclass(slots=True, frozen=True)
class Finding:
    """One difference: what kind, where (a store path or UID), and a sentence."""

    kind: str
    where: str
    message: str


@dataclass(slots=True)
class Verdict:
    """The equivalence class of one instance (``bytes``, ``pixels+attributes``, ``edited`` or
    ``failed``) and why."""

    study: str
    series: str
    sop: str
    equivalence: str
    reason: str = ""


@dataclass(slots=True)
class VerifyReport:
    findings: list[Finding] = field(default_factory=list)
    instances: list[Verdict] = field(default_factory=list)
    against: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, kind: str, where: str, message: str) -> None:
        self.findings.append(Finding(kind, where, message))

    def to_json(self) -> JsonObject:
        classes: dict[str, int] = {}
        for verdict in self.instances:
            classes[verdict.equivalence] = classes.get(verdict.equivalence, 0) + 1
        return {
            "ok": self.ok,
            "instances": len(self.instances),
            "classes": classes,
            "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 3),
            "against": self.against,
            "findings": [
                {"kind": f.kind, "where": f.where, "message": f.message} for f in self.findings
            ],
            "verdicts": [
                {
                    "study": v.study,
                    "series": v.series,
                    "sop": v.sop,
                    "equivalence": v.equivalence,
                    **({"reason": v.reason} if v.reason else {}),
                }
                for v in self.instances
            ],
        }


ProgressHook = Callable[[Verdict], None]


def verify(
    store: str | os.PathLike[str],
    *,
    studies: list[str] | None = None,
    deep: bool = False,
    against: Path | None = None,
    progress: ProgressHook | None = None,
) -> VerifyReport:
    """Check the store (or some studies of it); never changes anything."""
    started = time.perf_counter()
    layout = StoreLayout(Path(store))
    report = VerifyReport()
    on_disk = study_uids(layout)
    chosen = (
        [check_uid(s, "StudyInstanceUID", source="argument") for s in studies]
        if studies
        else on_disk
    )
    with Index(layout.index_path) as index:
        for study in chosen:
            _verify_study(layout, index, study, report, deep=deep, progress=progress)
        if not studies:
            _verify_store(layout, index, on_disk, report)
        if against is not None:
            verify_against(layout, index, against, report)
    report.seconds = time.perf_counter() - started
    return report


def _verify_store(
    layout: StoreLayout, index: Index, on_disk: list[str], report: VerifyReport
) -> None:
    """Store-wide: the study list, and index studies without files."""
    indexed = {row["study_instance_uid"] for row in index.studies()}
    for study in sorted(indexed - set(on_disk)):
        report.add("index", study, f"study {study} is in the index but not in the store")
    if layout.studies_index.exists():
        if read_json_gz(layout.studies_index) != index.study_query_objects():
            report.add("query", layout.relative(layout.studies_index), "differs from the index")
    elif on_disk:
        report.add("missing", "studies/index.json.gz", "the study list is missing")
    for stage in notify.STAGES:
        for study in notify.pending(layout, stage):
            report.add("pending", study, f"the {stage} stage has not processed this study yet")
    for entry in layout.studies.iterdir() if layout.studies.is_dir() else []:
        if entry.name != "index.json.gz" and not (entry.is_dir() and is_safe_uid(entry.name)):
            report.add("orphan", layout.relative(entry), "not part of the store layout")


def _verify_study(
    layout: StoreLayout,
    index: Index,
    study: str,
    report: VerifyReport,
    *,
    deep: bool,
    progress: ProgressHook | None,
) -> None:
    pairs: list[tuple[JsonObject, JsonObject]] = []
    bulk_used: set[str] = set()
    keys: list[InstanceKey] = []
    series_dir = layout.series_dir(study)
    if not layout.study(study).is_dir():
        report.add("missing", f"studies/{study}", "the study is not in the store")
        return
    for series_path in sorted(series_dir.iterdir()) if series_dir.is_dir() else []:
        if not series_path.is_dir():
            if series_path.name != "index.json.gz":
                report.add("orphan", layout.relative(series_path), "not part of the layout")
            continue
        instances_dir = series_path / "instances"
        if not is_safe_uid(series_path.name) or not instances_dir.is_dir():
            report.add("orphan", layout.relative(series_path), "not a series directory")
            continue
        _check_names(layout, series_path, SERIES_FILES, report)
        keys.extend(
            InstanceKey(study, series_path.name, instance_path.name)
            for instance_path in sorted(instances_dir.iterdir())
            if instance_path.name != "index.json.gz"
        )
    # Instances are checked in parallel (decoding recompressed frames and hashing release the
    # GIL), each into its own report; the parts are merged in order, so the report is the same.
    with ThreadPoolExecutor(max_workers=VERIFY_THREADS) as pool:
        for part, bulk, pair in pool.map(lambda key: _verify_alone(layout, key, deep), keys):
            report.findings += part.findings
            report.instances += part.instances
            report.bytes_read += part.bytes_read
            bulk_used |= bulk
            if pair is not None:
                pairs.append(pair)
            if progress is not None:
                for verdict in part.instances:
                    progress(verdict)
    _check_bulkdata(layout, study, bulk_used, report)
    _check_derived(layout, index, study, pairs, report)
    _check_records(layout, study, pairs, report)


def _verify_alone(
    layout: StoreLayout, key: InstanceKey, deep: bool
) -> tuple[VerifyReport, set[str], tuple[JsonObject, JsonObject] | None]:
    part = VerifyReport()
    bulk: set[str] = set()
    pair = _verify_instance(layout, key, part, bulk, deep=deep)
    return part, bulk, pair


def _check_names(
    layout: StoreLayout, directory: Path, allowed: set[str], report: VerifyReport
) -> None:
    for entry in directory.iterdir():
        name = entry.name
        if name.startswith(".staging-") or (name[:1] == "." and name.endswith((".tmp", ".old"))):
            report.add("interrupted", layout.relative(entry), "left by an interrupted writer")
        elif entry.name not in allowed:
            report.add("orphan", layout.relative(entry), "not part of the store layout")


def _verify_instance(
    layout: StoreLayout,
    key: InstanceKey,
    report: VerifyReport,
    bulk_used: set[str],
    *,
    deep: bool,
) -> tuple[JsonObject, JsonObject] | None:
    where = layout.relative(layout.instance(key.study, key.series, key.sop))
    directory = layout.instance(key.study, key.series, key.sop)

    def fail(kind: str, message: str) -> None:
        report.add(kind, where, message)
        report.instances.append(Verdict(key.study, key.series, key.sop, "failed", message))

    if not is_safe_uid(key.sop) or not directory.is_dir():
        report.add("orphan", where, "not an instance directory")
        return None
    _check_names(layout, directory, INSTANCE_FILES, report)
    try:
        info: JsonObject = read_json_gz(layout.info(key.study, key.series, key.sop))
        metadata = read_json_gz(layout.instance_metadata(key.study, key.series, key.sop))[0]
    except FileNotFoundError as exc:
        fail("missing", f"{Path(str(exc.filename)).name} is missing")
        return None
    except (OSError, ValueError, IndexError) as exc:
        fail("corrupt", f"unreadable: {exc}")
        return None
    frames = _FrameChecker(layout, key, info, report, where)
    bulk_used.update(item["sha256"] for item in info["bulkdata"])
    checked = _Hashing(
        generate_bytes(
            info["skeleton"],
            read_frame=frames.read,
            read_bulk=frames.read_bulk,
            read_stored=frames.read_stored,
        )
    )
    edited = int(info.get("revision", 0)) > 0
    exact = rebuilds_original(info)
    try:
        derived = _derive(checked, info) if deep or edited else None
        for _ in checked:
            pass
        if edited and exact:
            original_sha = _original_sha(layout, key, frames)
        else:
            original_sha = checked.sha.hexdigest() if exact else info["original"]["sha256"]
    except MissingStoreFileError as exc:
        fail("missing", str(exc))
        return None
    except CodecError as exc:
        fail("pixels", str(exc))
        return None
    except (ArchiveError, OSError, ValueError) as exc:
        fail("corrupt", f"cannot be rebuilt: {exc}")
        return None
    frames.check_extra()
    report.bytes_read += checked.size
    if original_sha != info["original"]["sha256"]:
        what = "the original file rebuilt from history" if edited else "rebuilt P10 bytes"
        fail("rebuild", f"{what} differ(s) from the ingested file (SHA-256)")
        return None
    if derived is not None and derived != metadata:
        fail("metadata", "metadata.gz differs from the metadata of the rebuilt file")
        return None
    if frames.bad:
        report.instances.append(
            Verdict(key.study, key.series, key.sop, "failed", "frame or bulk data damaged")
        )
        return None
    if edited and checked.sha.hexdigest() == info["original"]["sha256"]:
        edited = False  # reverted to the original: the bytes are the ingested file's again
    if edited:
        changed = sorted(
            {c["attribute"] for entry in history_entries(layout, key.sop) for c in entry["changes"]}
        )
        report.instances.append(
            Verdict(key.study, key.series, key.sop, "edited", ", ".join(changed))
        )
    elif not exact:
        report.instances.append(
            Verdict(
                key.study,
                key.series,
                key.sop,
                "pixels+attributes",
                "frames of the compressed original were recompressed losslessly",
            )
        )
    else:
        report.instances.append(Verdict(key.study, key.series, key.sop, "bytes"))
    return metadata, info


def _original_sha(layout: StoreLayout, key: InstanceKey, frames: _FrameChecker) -> str:
    """SHA-256 of the original file rebuilt from the first history entry's skeleton and the
    stored frames and bulk data: an edited instance still holds its original."""
    entries = history_entries(layout, key.sop)
    if not entries or int(entries[0]["revision"]) != 0:
        raise MissingStoreFileError(f"{key.sop}: the history of this edited instance is missing")
    first = entries[0]
    sha = hashlib.sha256()
    for chunk in generate_bytes(
        first["info"]["skeleton"], read_frame=frames.read, read_bulk=frames.read_bulk
    ):
        sha.update(chunk)
    return sha.hexdigest()


class _Hashing:
    """Wraps a chunk iterator, hashing and counting; can be iterated once, by one reader."""

    def __init__(self, chunks: Iterator[bytes | memoryview]) -> None:
        self.chunks = chunks
        self.sha = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes | memoryview]:
        for chunk in self.chunks:
            self.sha.update(chunk)
            self.size += len(chunk)
            yield chunk


def _derive(checked: _Hashing, info: JsonObject) -> JsonObject | None:
    """The metadata of the rebuilt file, derived as ingest derives it; AvailableTransferSyntaxUID
    (0008,3002) names the stored frames' transfer syntaxes, which recompression chose."""
    stream = io.BufferedReader(ChunkStream(iter(checked)), buffer_size=1 << 20)
    for part in generate_parts(
        stream,
        frames_uri=lambda meta: frames_uri(_first(meta, "00080018")),
        bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
    ):
        if isinstance(part, InstanceEnd):
            if info["frames"]:
                part.metadata["00083002"] = {"vr": "UI", "Value": stored_syntaxes(info)}
            return part.metadata
    return None


def _first(metadata: JsonObject, key: str) -> str:
    values = metadata.get(key, {}).get("Value") or [""]
    return str(values[0])


class _FrameChecker:
    """Reads stored frames for a rebuild, checking each against the info record once."""

    def __init__(
        self,
        layout: StoreLayout,
        key: InstanceKey,
        info: JsonObject,
        report: VerifyReport,
        where: str,
    ) -> None:
        self.layout, self.key, self.info, self.report, self.where = (
            layout,
            key,
            info,
            report,
            where,
        )
        self.cache: tuple[int, memoryview] | None = None
        self.source_cache: tuple[int, bytes | memoryview] | None = None
        self.pixel = stored_pixel(info)
        self.bad = False

    def read(self, number: int) -> bytes | memoryview:
        """Frame ``number`` as received (decoded, for a recompressed frame)."""
        record = self.info["frames"][number - 1]
        if not is_recompressed(record):
            return self.read_stored(number)
        if self.source_cache is None or self.source_cache[0] != number:
            data = source_frame(self.read_stored(number), record, self.pixel, self.read_bulk)
            self.source_cache = (number, data)
        return self.source_cache[1]

    def read_stored(self, number: int) -> memoryview:
        """Frame ``number`` as stored; a losslessly recompressed frame whose original is not
        kept must decode to the source pixels recorded at ingest."""
        if self.cache is not None and self.cache[0] == number:
            return self.cache[1]
        data = read_frame(self.layout, self.key, number)
        expected = self.info["frames"][number - 1]["sha256"]
        if hashlib.sha256(data).hexdigest() != expected:
            self.bad = True
            path = self.layout.frame(self.key.study, self.key.series, self.key.sop, number)
            self.report.add("hash", self.layout.relative(path), "frame differs from its SHA-256")
        record = self.info["frames"][number - 1]
        if is_recompressed(record) and "bulk" not in record["source"]:
            source_pixels(data, record, self._pixel())  # raises CodecError: the pixels differ
        self.cache = (number, data)
        return data

    def _pixel(self) -> PixelDescription:
        if self.pixel is None:
            raise CodecError("the info record lacks the pixel description of recompressed frames")
        return self.pixel

    def read_bulk(self, sha: str) -> bytes:
        data = read_bulk(self.layout, self.key.study, sha)
        if hashlib.sha256(data).hexdigest() != sha:
            self.bad = True
            path = self.layout.bulkdata(self.key.study, sha)
            self.report.add("hash", self.layout.relative(path), "bulk data differs from its name")
        return data

    def check_extra(self) -> None:
        directory = self.layout.frames_dir(self.key.study, self.key.series, self.key.sop)
        expected = {f"{n}.mht" for n in range(1, len(self.info["frames"]) + 1)}
        for entry in directory.iterdir() if directory.is_dir() else []:
            if entry.name not in expected:
                self.report.add("orphan", self.layout.relative(entry), "frame file not recorded")
        for name in sorted(expected):
            if not (directory / name).exists():  # frames no skeleton segment refers to
                self.bad = True
                self.report.add("missing", self.layout.relative(directory / name), "missing")


def _check_bulkdata(layout: StoreLayout, study: str, used: set[str], report: VerifyReport) -> None:
    root = layout.bulkdata_dir(study)
    if not root.is_dir():
        return
    used = used | rejected_bulk(layout, study)
    for path in root.rglob("*"):
        if path.is_file():
            sha = "".join(path.relative_to(root).parts)
            if sha not in used:
                report.add("orphan", layout.relative(path), "bulk data no instance refers to")


def _check_derived(
    layout: StoreLayout,
    index: Index,
    study: str,
    pairs: list[tuple[JsonObject, JsonObject]],
    report: VerifyReport,
) -> None:
    """Series metadata, query files and index rows against the instances' metadata."""
    expected = study_rows(layout, study, write=False, grouped=group_by_series(pairs))
    for path, value in expected.files.items():
        try:
            actual = read_json_gz(path)
        except FileNotFoundError:
            report.add("missing", layout.relative(path), "derived file is missing")
            continue
        except (OSError, ValueError):
            report.add("corrupt", layout.relative(path), "derived file is unreadable")
            continue
        if actual != value:
            report.add("query", layout.relative(path), "does not agree with the instances")
    stored_rows = index.study_dump(study)
    rows = {
        "studies": [expected.study] if expected.study else [],
        "series": expected.series,
        "instances": expected.instances,
    }
    for table, computed in rows.items():
        stored = stored_rows[table]
        normalised = [_normalise(row) for row in computed]
        if sorted(map(repr, stored)) != sorted(map(repr, normalised)):
            report.add("index", study, f"the index's {table} rows do not match the files")


def _check_records(
    layout: StoreLayout,
    study: str,
    pairs: list[tuple[JsonObject, JsonObject]],
    report: VerifyReport,
) -> None:
    """The deduplicated records (the pipeline's truth) recombine to the instance files."""
    try:
        records = read_study_records(layout, study)
    except ArchiveError as exc:
        report.add("corrupt", study, f"deduplicated data: {exc}")
        return
    if not records.records:
        return  # written by the instances stage alone, or -C without grouping: nothing to check
    by_sop = {info["sop_instance_uid"]: (metadata, info) for metadata, info in pairs}
    for sop in sorted(set(records.records) | set(by_sop)):
        if sop not in records.records or sop not in by_sop:
            report.add("records", sop, "deduplicated records and instance files disagree")
        elif records.instance(sop) != by_sop[sop]:
            report.add("records", sop, "deduplicated record differs from the instance files")


def _normalise(row: dict[str, Any]) -> dict[str, Any]:
    """A row as SQLite returns it (JSON columns as text)."""
    return {
        key: json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if isinstance(value, dict | list)
        else value
        for key, value in row.items()
    }
