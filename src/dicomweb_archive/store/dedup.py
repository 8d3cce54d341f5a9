"""Deduplicated instance data on disk: per-instance records, extracts and study group files.

Layout (``docs/spec/pipeline.md``):

- ``<path-instances>/<Study>/<SOP>.gz``: one instance record, ``{"kind": "instance", "refs":
  {level: sha256}, "attributes": {remainder}, "info": {info record}, ...}``;
- ``<path-instances>/<Study>/<sha256>.gz``: one extract (patient, study or series attributes),
  named by the SHA-256 of its canonical JSON, written once;
- ``<path-deduplicated>/<Study>/<sha256>.gz``: a group file, every instance record of the study
  with each extract stored once, named by the SHA-256 of its canonical JSON;
- ``<path-deduplicated>/<Study>/index.json.gz``: ``{"groups": [sha256]}``, the current group
  file (replaced atomically after the new group file is written).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dicomweb_archive.errors import CorruptStoreError
from dicomweb_archive.model.dedup import combine, content_hash, split
from dicomweb_archive.store.files import (
    read_json_gz,
    remove_file,
    remove_tree,
    write_json_gz,
)
from dicomweb_archive.store.layout import StoreLayout

JsonObject = dict[str, Any]
RECORD_VERSION = 1


@dataclass(slots=True)
class StudyRecords:
    """The instance records of a study and the extracts they refer to."""

    records: dict[str, JsonObject]  # SOP Instance UID -> record
    extracts: dict[str, JsonObject]  # sha256 -> extract

    def instance(self, sop: str) -> tuple[JsonObject, JsonObject]:
        """(metadata, info) of one instance, recombined."""
        record = self.records[sop]
        try:
            extracts = [self.extracts[sha] for sha in record["refs"].values()]
        except KeyError as exc:
            raise CorruptStoreError(f"extract {exc} of instance {sop} is missing") from exc
        return combine(extracts, record["attributes"]), record["info"]


def write_record(layout: StoreLayout, study: str, metadata: JsonObject, info: JsonObject) -> None:
    """Write an instance's record and any extract not yet stored."""
    record, extracts = make_record(metadata, info)
    for sha, extract in extracts.items():
        path = layout.extract(study, sha)
        if not path.exists():
            write_json_gz(path, extract)
    write_json_gz(layout.instance_record(study, info["sop_instance_uid"]), record)


def read_study_records(layout: StoreLayout, study: str) -> StudyRecords:
    """The study's group file, overlaid with newer per-instance records."""
    result = StudyRecords({}, {})
    for sha in current_groups(layout, study):
        group = _read(layout, layout.group(study, sha))
        result.extracts.update(group["extracts"])
        for record in group["instances"]:
            result.records[record["sop_instance_uid"]] = record
    directory = layout.instance_records(study)
    if directory.is_dir():
        for path in sorted(directory.glob("*.gz")):
            if _is_sha256(path.name[:-3]):
                continue  # an extract: read when a record refers to it
            value = _read(layout, path)
            if value.get("kind") == "instance":
                result.records[value["sop_instance_uid"]] = value
                for sha in value["refs"].values():
                    if sha not in result.extracts:
                        result.extracts[sha] = _read(layout, layout.extract(study, sha))
    return result


def current_groups(layout: StoreLayout, study: str) -> list[str]:
    path = layout.group_index(study)
    if not path.exists():
        return []
    groups: list[str] = _read(layout, path)["groups"]
    return groups


def make_record(metadata: JsonObject, info: JsonObject) -> tuple[JsonObject, dict[str, JsonObject]]:
    """An instance record and its extracts (by SHA-256) from metadata and info record."""
    extracts, remainder = split(metadata)
    by_hash = {content_hash(extract): extract for extract in extracts.values()}
    record = {
        "kind": "instance",
        "version": RECORD_VERSION,
        "study_instance_uid": info["study_instance_uid"],
        "series_instance_uid": info["series_instance_uid"],
        "sop_instance_uid": info["sop_instance_uid"],
        "refs": {level: content_hash(extract) for level, extract in extracts.items()},
        "attributes": remainder,
        "info": info,
    }
    return record, by_hash


def group_content(study: str, records: StudyRecords) -> tuple[str, JsonObject]:
    """A study's group file content and its name (SHA-256)."""
    used = {sha for record in records.records.values() for sha in record["refs"].values()}
    group = {
        "kind": "group",
        "version": RECORD_VERSION,
        "study_instance_uid": study,
        "extracts": {sha: records.extracts[sha] for sha in sorted(used)},
        "instances": [records.records[sop] for sop in sorted(records.records)],
    }
    return content_hash(group), group


def write_group(layout: StoreLayout, study: str, records: StudyRecords) -> str | None:
    """Write the study's group file from ``records``; returns its hash (None when empty)."""
    old = current_groups(layout, study)
    if not records.records:
        remove_tree(layout.groups(study))
        return None
    sha, group = group_content(study, records)
    if old != [sha]:
        write_json_gz(layout.group(study, sha), group)
        write_json_gz(layout.group_index(study), {"groups": [sha]})
        for previous in old:
            if previous != sha:
                remove_file(layout.group(study, previous))
    return sha


def remove_instance_records(layout: StoreLayout, study: str) -> None:
    """Remove the per-instance records and extracts of a study (``-C`` after grouping)."""
    remove_tree(layout.instance_records(study))


def drop_instance(layout: StoreLayout, study: str, sop: str) -> None:
    """Remove one instance from a study's deduplicated data (its record and group entry)."""
    remove_file(layout.instance_record(study, sop))
    if not current_groups(layout, study):
        return
    records = read_study_records(layout, study)
    records.records.pop(sop, None)
    write_group(layout, study, records)


def _is_sha256(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _read(layout: StoreLayout, path: Any) -> Any:
    try:
        return read_json_gz(path)
    except FileNotFoundError as exc:
        raise CorruptStoreError(f"{layout.relative(path)} is missing") from exc
    except (OSError, ValueError) as exc:
        raise CorruptStoreError(f"{layout.relative(path)} is unreadable") from exc
