"""Writing and reading one instance's files: frames, bulk data, metadata and info record.

An instance directory is built complete under a staging name and moved into place with one
rename, so readers and interrupted runs never see half an instance. Bulk data is
content-addressed per study and written once.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomweb_archive.dicom.decompose import InstanceParts
from dicomweb_archive.errors import CorruptStoreError
from dicomweb_archive.store.files import (
    gzip_bytes,
    read_json_gz,
    remove_tree,
    replace_dir,
    to_json_bytes,
    write_bytes,
)
from dicomweb_archive.store.layout import StoreLayout
from dicomweb_archive.store.multipart import boundary_for, parse_part, part_header, part_trailer

INFO_VERSION = 1


@dataclass(frozen=True, slots=True)
class InstanceKey:
    """The three UIDs that place an instance in the store."""

    study: str
    series: str
    sop: str


@dataclass(frozen=True, slots=True)
class Original:
    """Facts about the ingested file kept in the info record."""

    sha256: str
    size: int


def write_instance(
    layout: StoreLayout, key: InstanceKey, parts: InstanceParts, original: Original
) -> dict[str, Any]:
    """Write every file of an instance; returns the info record written."""
    buffer = parts.buffer
    target = layout.instance(key.study, key.series, key.sop)
    staging = target.with_name(f".staging-{key.sop}-{os.getpid()}")
    if staging.exists():
        remove_tree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    frames_dir = staging / "frames"
    frames: list[dict[str, Any]] = []
    if parts.frames:
        frames_dir.mkdir()
    for number, source in enumerate(parts.frames, start=1):
        data = source.read(buffer)
        sha = hashlib.sha256(data).hexdigest()
        boundary = boundary_for(sha)
        with (frames_dir / f"{number}.mht").open("wb") as handle:
            handle.write(part_header(boundary, parts.frame_media_type))
            handle.write(data)
            handle.write(part_trailer(boundary))
        frames.append({"sha256": sha, "size": len(data)})
        del data
        _release(buffer, source.ranges)
    bulkdata: list[dict[str, Any]] = []
    for sha, bulk in sorted(parts.bulk.items()):
        path = layout.bulkdata(key.study, sha)
        if not path.exists():
            write_bytes(path, bulk.read(buffer))
        bulkdata.append({"sha256": sha, "size": bulk.length})
    info = {
        "version": INFO_VERSION,
        "study_instance_uid": key.study,
        "series_instance_uid": key.series,
        "sop_instance_uid": key.sop,
        "original": {
            "sha256": original.sha256,
            "size": original.size,
            "transfer_syntax_uid": parts.parsed.transfer_syntax,
            "has_preamble": parts.parsed.has_preamble,
            "has_file_meta": bool(parts.parsed.meta),
        },
        "stored": {
            "transfer_syntax_uid": parts.stored_transfer_syntax,
            "media_type": parts.frame_media_type,
        },
        "frames": frames,
        "bulkdata": bulkdata,
        "skeleton": parts.skeleton,
        "warnings": parts.warnings,
    }
    (staging / "info.json.gz").write_bytes(gzip_bytes(to_json_bytes(info)))
    (staging / "metadata.gz").write_bytes(gzip_bytes(to_json_bytes([parts.metadata])))
    replace_dir(staging, target)
    return info


def _release(buffer: object, ranges: list[tuple[int, int]]) -> None:
    """Drop a written frame's pages from a memory-mapped input (resident memory stays at about
    one frame however large the file); the bytes stay in the page cache."""
    if not isinstance(buffer, mmap.mmap):
        return
    for offset, length in ranges:
        start = offset - offset % mmap.PAGESIZE
        with contextlib.suppress(OSError, ValueError):
            buffer.madvise(mmap.MADV_DONTNEED, start, length + offset - start)


def read_info(layout: StoreLayout, key: InstanceKey) -> dict[str, Any]:
    path = layout.info(key.study, key.series, key.sop)
    try:
        info: dict[str, Any] = read_json_gz(path)
    except FileNotFoundError as exc:
        raise CorruptStoreError(f"{layout.relative(path)}: info record is missing") from exc
    except (OSError, ValueError) as exc:
        raise CorruptStoreError(f"{layout.relative(path)}: info record is unreadable") from exc
    return info


def read_instance_metadata(layout: StoreLayout, key: InstanceKey) -> dict[str, Any]:
    path = layout.instance_metadata(key.study, key.series, key.sop)
    try:
        value = read_json_gz(path)
    except FileNotFoundError as exc:
        raise CorruptStoreError(f"{layout.relative(path)}: instance metadata is missing") from exc
    except (OSError, ValueError) as exc:
        raise CorruptStoreError(
            f"{layout.relative(path)}: instance metadata is unreadable"
        ) from exc
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise CorruptStoreError(f"{layout.relative(path)}: not a one-instance metadata array")
    result: dict[str, Any] = value[0]
    return result


def read_frame(layout: StoreLayout, key: InstanceKey, number: int) -> bytes:
    """The payload of stored frame ``number`` (1-based)."""
    path = layout.frame(key.study, key.series, key.sop, number)
    try:
        data = path.read_bytes()
        return parse_part(data, source=layout.relative(path))[1]
    except FileNotFoundError as exc:
        raise CorruptStoreError(f"{layout.relative(path)}: frame file is missing") from exc
    except ValueError as exc:
        raise CorruptStoreError(str(exc)) from exc


def read_bulk(layout: StoreLayout, study: str, sha256: str) -> bytes:
    path = layout.bulkdata(study, sha256)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CorruptStoreError(f"{layout.relative(path)}: bulk data file is missing") from exc


def instance_keys(layout: StoreLayout, study: str) -> list[InstanceKey]:
    """Every instance directory of a study on disk, sorted (the files are the truth)."""
    keys: list[InstanceKey] = []
    series_dir = layout.series_dir(study)
    if not series_dir.is_dir():
        return keys
    for series in sorted(p.name for p in series_dir.iterdir() if _visible_dir(p)):
        instances = layout.instances_dir(study, series)
        if not instances.is_dir():
            continue
        keys.extend(
            InstanceKey(study, series, sop.name)
            for sop in sorted(instances.iterdir())
            if _visible_dir(sop) and (sop / "info.json.gz").exists()
        )
    return keys


def study_uids(layout: StoreLayout) -> list[str]:
    if not layout.studies.is_dir():
        return []
    return sorted(p.name for p in layout.studies.iterdir() if _visible_dir(p))


def _visible_dir(path: Path) -> bool:
    return not path.name.startswith(".") and path.is_dir()
