"""Writing and reading one instance's files: frames, bulk data, metadata and info record.

An instance directory is built complete under a staging name and moved into place with one
rename, so readers and interrupted runs never see half an instance. Bulk data is
content-addressed per study and written once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomweb_archive.dicom.parts import BulkPart, FramePart, InstanceEnd
from dicomweb_archive.errors import CorruptStoreError, MissingStoreFileError
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


@dataclass(frozen=True, slots=True)
class InstanceKey:
    """The three UIDs that place an instance in the store."""

    study: str
    series: str
    sop: str


class InstanceWriter:
    """Writes one instance's files as its parts arrive, into a staging directory.

    Frames go to ``frames/<n>.mht`` in the staging directory, bulk data to the study's
    content-addressed bulk-data directory (atomically, once); :meth:`commit` adds the metadata
    and info record and moves the directory into place in one rename; :meth:`abort` removes it.
    """

    def __init__(self, layout: StoreLayout, key: InstanceKey) -> None:
        self.layout = layout
        self.key = key
        self.target = layout.instance(key.study, key.series, key.sop)
        self.staging = self.target.with_name(f".staging-{key.sop}-{os.getpid()}")
        if self.staging.exists():
            remove_tree(self.staging)
        self.staging.parent.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir()
        self.frames_dir = self.staging / "frames"

    def frame(self, part: FramePart) -> None:
        if part.number == 1:
            self.frames_dir.mkdir()
        boundary = boundary_for(part.sha256)
        with (self.frames_dir / f"{part.number}.mht").open("wb") as handle:
            handle.write(part_header(boundary, part.media_type))
            handle.write(part.data)
            handle.write(part_trailer(boundary))

    def bulk(self, part: BulkPart) -> None:
        path = self.layout.bulkdata(self.key.study, part.sha256)
        if not path.exists():
            write_bytes(path, part.data)

    def commit(self, end: InstanceEnd, *, instance_files: bool) -> None:
        """Move the instance into place; with ``instance_files`` include its metadata and info
        record (otherwise the study stage writes them from the deduplicated record)."""
        if instance_files:
            (self.staging / "info.json.gz").write_bytes(gzip_bytes(to_json_bytes(end.info)))
            metadata = gzip_bytes(to_json_bytes([end.metadata]))
            (self.staging / "metadata.gz").write_bytes(metadata)
        replace_dir(self.staging, self.target)

    def abort(self) -> None:
        remove_tree(self.staging)


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


def read_frame(layout: StoreLayout, key: InstanceKey, number: int) -> memoryview:
    """The payload of stored frame ``number`` (1-based)."""
    path = layout.frame(key.study, key.series, key.sop, number)
    try:
        data = path.read_bytes()
        return parse_part(data, source=layout.relative(path))[1]
    except FileNotFoundError as exc:
        raise MissingStoreFileError(f"{layout.relative(path)}: frame file is missing") from exc
    except ValueError as exc:
        raise CorruptStoreError(str(exc)) from exc


def read_bulk(layout: StoreLayout, study: str, sha256: str) -> bytes:
    path = layout.bulkdata(study, sha256)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise MissingStoreFileError(f"{layout.relative(path)}: bulk data file is missing") from exc


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
