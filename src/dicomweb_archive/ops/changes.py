"""What every kind of change does to instances, on top of ``store/changes.py``.

Removing an instance (delete, reject, replace, clean, de-identification in place, revert)
always sets its objects aside (frames, metadata, info record, deduplicated record) and records
its state before, so that the change can be reverted; bulk data no remaining instance refers
to is set aside too. The studies a change touches are rebuilt by the stages in the same
transaction (:func:`finish_studies`), so that the served files, the index, history and audit
change at once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from dicomweb_archive.archive import Archive
from dicomweb_archive.model.dedup import canonical_json
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.ops.stages import StageReport, run_stages_in
from dicomweb_archive.store import notify
from dicomweb_archive.store.changes import ChangeSet, Touched
from dicomweb_archive.store.instance import (
    InstanceKey,
    bulk_in_use,
    bulk_objects,
    instance_keys,
    instance_objects,
    read_info,
    read_instance_metadata,
)
from dicomweb_archive.store.storage import Reader, from_json_gz

JsonObject = dict[str, Any]


def metadata_hash(metadata: JsonObject) -> str:
    return hashlib.sha256(canonical_json(metadata)).hexdigest()


def instance_state(
    reader: Reader, archive: Archive, key: InstanceKey
) -> tuple[JsonObject, InfoRecord]:
    """An instance's metadata and info record now."""
    return read_instance_metadata(reader, archive.keys, key), read_info(reader, archive.keys, key)


def set_aside_instance(change: ChangeSet, key: InstanceKey) -> None:
    """Remove an instance in ``change``, keeping its objects aside (its deduplicated record
    too, when it is this instance's: a record is named by study and SOP Instance UID)."""
    keys = change.keys
    for name in instance_objects(change.txn, keys, key):
        change.set_aside(name)
    record = keys.instance_record(key.study, key.sop)
    if change.txn.head(record) is not None:
        value = from_json_gz(change.txn.get(record))
        if value.get("series_instance_uid") == key.series:
            change.set_aside(record)


def removed(key: InstanceKey, metadata: JsonObject, info: InfoRecord) -> Touched:
    """The record of an instance a change removes (its state kept for revert)."""
    return Touched(
        key.study,
        key.series,
        key.sop,
        info.revision,
        None,
        before_sha256=metadata_hash(metadata),
        before={"metadata": metadata, "info": info.to_json()},
    )


def set_aside_unused_bulk(change: ChangeSet, study: str) -> None:
    """Set aside the study's bulk data no instance committed in ``change`` refers to."""
    keys = change.keys
    objects = bulk_objects(change.txn, keys, study)
    if not objects:
        return
    used = bulk_in_use(change.txn, keys, study)
    for sha, name in sorted(objects.items()):
        if sha not in used:
            change.set_aside(name)


def finish_studies(archive: Archive, change: ChangeSet, studies: set[str]) -> StageReport:
    """Rebuild the studies a change touched, in the change's transaction (group and study
    stages): a study that cannot be rebuilt fails the change."""
    for study in sorted(studies):
        notify.notify_in(change.txn, notify.GROUP, study)
        notify.notify_in(change.txn, notify.STUDY, study)
    return run_stages_in(archive, change.txn, sorted(studies))


def clean_study(archive: Archive, study: str, *, reason: str = "") -> str | None:
    """``-c``: set aside everything a study has (served objects, deduplicated data) in one
    ``clean`` change, so that it is rebuilt from this input alone (and can be reverted).
    Returns the change id (None when the study had nothing)."""
    keys = archive.keys
    with archive.changing("clean", level="study", target=study, reason=reason) as change:
        for key in instance_keys(change.txn, keys, study):
            metadata, info = instance_state(change.txn, archive, key)
            change.include(removed(key, metadata, info))
        for prefix in (keys.study(study), keys.instance_records(study), keys.groups(study)):
            change.set_aside_prefix(prefix)
        if not change.aside:
            change.abort()
            return None
        finish_studies(archive, change, {study})
    return change.id
