"""Deduplicated instance data on disk: per-instance records, extracts and study group files.

Layout (``docs/spec/pipeline.md``):

- ``<path-instances>/<Study>/<SOP>.gz``: one instance record, ``{"kind": "instance", "refs":
  {level: sha256}, "attributes": {remainder}, "info": {info record but its metadata}, ...}``;
- ``<path-instances>/<Study>/<sha256>.gz``: one extract (patient, study or series attributes),
  named by the SHA-256 of its canonical JSON, written once;
- ``<path-deduplicated>/<Study>/<sha256>.gz``: a group file, every instance record of the study
  with each extract stored once, named by the SHA-256 of its canonical JSON;
- ``<path-deduplicated>/<Study>/index.json.gz``: ``{"groups": [sha256]}``, the current group
  file (replaced atomically after the new group file is written).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from dicomweb_archive.errors import CorruptStoreError, NoSuchObjectError, ObjectExistsError
from dicomweb_archive.model.dedup import combine, content_hash, split
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.store.journal import Transaction
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.storage import Reader, Storage, from_json_gz, json_gz

JsonObject = dict[str, Any]
RECORD_VERSION = 1


@dataclass(slots=True)
class StudyRecords:
    """The instance records of a study and the extracts they refer to."""

    records: dict[str, JsonObject]  # SOP Instance UID -> record
    extracts: dict[str, JsonObject]  # sha256 -> extract
    #: the instances whose record is a per-instance file (not only in the group file)
    per_instance: set[str] = field(default_factory=set)

    def instance(self, sop: str) -> tuple[JsonObject, InfoRecord]:
        """(metadata, info) of one instance, recombined."""
        record = self.records[sop]
        try:
            extracts = [self.extracts[sha] for sha in record["refs"].values()]
        except KeyError as exc:
            raise CorruptStoreError(f"extract {exc} of instance {sop} is missing") from exc
        metadata = combine(extracts, record["attributes"])
        return metadata, InfoRecord.from_json({**record["info"], "metadata": metadata})


def write_record(
    storage: Storage,
    keys: StoreKeys,
    study: str,
    metadata: JsonObject,
    info: InfoRecord,
    *,
    txn: Transaction | None = None,
) -> None:
    """Write an instance's record and any extract not yet stored. Extracts are new objects
    named by their content (written at once); the record goes into ``txn`` when given (it
    replaces a stored one)."""
    record, extracts = make_record(metadata, info)
    for sha, extract in extracts.items():
        key = keys.extract(study, sha)
        if (txn or storage).head(key) is None:
            with contextlib.suppress(ObjectExistsError):
                storage.put(key, json_gz(extract), if_absent=True)
    data = json_gz(record)
    if txn is not None:
        txn.put(keys.instance_record(study, info.sop_instance_uid), data)
    else:  # a new instance's record: read by nothing before its info record commits it
        storage.put(keys.instance_record(study, info.sop_instance_uid), data, fresh=True)


def read_study_records(reader: Reader, keys: StoreKeys, study: str) -> StudyRecords:
    """The study's group file, overlaid with newer per-instance records."""
    result = StudyRecords({}, {})
    for sha in current_groups(reader, keys, study):
        group = _read(reader, keys.group(study, sha))
        result.extracts.update(group["extracts"])
        for record in group["instances"]:
            result.records[record["sop_instance_uid"]] = record
    prefix = keys.instance_records(study)
    for name in reader.children(prefix):
        if name.endswith("/") or not name.endswith(".gz") or _is_sha256(name[:-3]):
            continue  # an extract: read when a record refers to it
        value = _read(reader, prefix + name)
        if value.get("kind") == "instance":
            result.records[value["sop_instance_uid"]] = value
            result.per_instance.add(value["sop_instance_uid"])
            for sha in value["refs"].values():
                if sha not in result.extracts:
                    result.extracts[sha] = _read(reader, keys.extract(study, sha))
    return result


def current_groups(reader: Reader, keys: StoreKeys, study: str) -> list[str]:
    """The study's group files (none before its first group stage); one read, no check
    first (each is a request on object storage)."""
    key = keys.group_index(study)
    try:
        data = reader.get(key)
    except NoSuchObjectError:
        return []
    try:
        groups: list[str] = from_json_gz(data)["groups"]
    except (OSError, ValueError) as exc:
        raise CorruptStoreError(f"{key} is unreadable") from exc
    return groups


def make_record(metadata: JsonObject, info: InfoRecord) -> tuple[JsonObject, dict[str, JsonObject]]:
    """An instance record and its extracts (by SHA-256) from the metadata as received and the
    info record (whose own copy of the metadata the record leaves out: it is the extracts and
    the remainder)."""
    extracts, remainder = split(metadata)
    info_json = info.to_json()
    info_json.pop("metadata", None)
    by_hash = {content_hash(extract): extract for extract in extracts.values()}
    record = {
        "kind": "instance",
        "version": RECORD_VERSION,
        "study_instance_uid": info.study_instance_uid,
        "series_instance_uid": info.series_instance_uid,
        "sop_instance_uid": info.sop_instance_uid,
        "refs": {level: content_hash(extract) for level, extract in extracts.items()},
        "attributes": remainder,
        "info": info_json,
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


def stage_group(txn: Transaction, keys: StoreKeys, study: str, records: StudyRecords) -> None:
    """Make ``records`` the study's group file in ``txn`` (none when empty): the new group file,
    its index, the old group file removed; a group file that would not change is left.
    Extracts no per-instance record refers to any more are removed."""
    used = {
        sha
        for sop in records.per_instance
        if sop in records.records
        for sha in records.records[sop]["refs"].values()
    }
    prefix = keys.instance_records(study)
    for name in txn.children(prefix):
        if name.endswith(".gz") and _is_sha256(name[:-3]) and name[:-3] not in used:
            txn.delete(prefix + name)
    old = current_groups(txn, keys, study)
    if not records.records:
        txn.delete_prefix(keys.groups(study))
        return
    sha, group = group_content(study, records)
    if old == [sha]:
        return
    txn.put(keys.group(study, sha), json_gz(group))
    txn.put(keys.group_index(study), json_gz({"groups": [sha]}))
    for previous in old:
        if previous != sha:
            txn.delete(keys.group(study, previous))


def _is_sha256(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _read(reader: Reader, key: str) -> Any:
    try:
        return from_json_gz(reader.get(key))
    except NoSuchObjectError as exc:
        raise CorruptStoreError(f"{key} is missing") from exc
    except (OSError, ValueError) as exc:
        raise CorruptStoreError(f"{key} is unreadable") from exc
