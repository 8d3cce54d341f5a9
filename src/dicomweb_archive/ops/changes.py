"""What every kind of change does to instances, on top of ``store/changes.py``.

Removing an instance (delete, reject, replace, clean, de-identification in place, revert)
always sets its objects aside (frames, info record, its own metadata and deduplicated record
where it has them) and records its revision, metadata hash and edit steps before, so that the
change can be reverted; its entry leaves the study's edit state; bulk data no remaining
instance refers to is set aside too. The studies a change touches are rebuilt by the stages
in the same transaction (:func:`finish_studies`), so that the served files, the index,
history and audit change at once.
"""

from __future__ import annotations

from typing import Any

from dicomweb_archive.archive import Archive
from dicomweb_archive.ops.stages import StageReport, run_stages_in
from dicomweb_archive.ops.state import Instance, States
from dicomweb_archive.ops.study import metadata_hash
from dicomweb_archive.store import notify
from dicomweb_archive.store.changes import ChangeSet, Touched
from dicomweb_archive.store.instance import (
    InstanceKey,
    bulk_in_use,
    bulk_objects,
    instance_objects,
)
from dicomweb_archive.store.storage import from_json_gz

JsonObject = dict[str, Any]


def set_aside_instance(change: ChangeSet, key: InstanceKey) -> None:
    """Remove an instance in ``change``, keeping its objects aside (its deduplicated record
    too, when it is this instance's: a record is named by study and SOP Instance UID); its
    entry leaves the study's edit state (:func:`removed` recorded it)."""
    keys = change.keys
    for name in instance_objects(change.txn, keys, key):
        change.set_aside(name)
    record = keys.instance_record(key.study, key.sop)
    if change.txn.head(record) is not None:
        value = from_json_gz(change.txn.get(record))
        if value.get("series_instance_uid") == key.series:
            change.set_aside(record)
    state = change.edit_state(key.study)
    entry = state.instances.get(key.sop)
    if entry is not None and entry.series == key.series:
        state.pop(key.sop)


def removed(change: ChangeSet, instance: Instance) -> Touched:
    """The record of an instance a change removes (its edit state kept for revert)."""
    key = instance.key
    return Touched(
        key.study,
        key.series,
        key.sop,
        instance.revision,
        None,
        before_sha256=metadata_hash(instance.metadata),
        before=change.state_before(key.study, key.sop),
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
    stages), with the edit states it changed: a study that cannot be rebuilt fails the
    change. Instances whose info record the change wrote get new deduplicated records."""
    change.stage_edit_states()
    keys = archive.keys
    refresh = frozenset(
        t.sop for t in change.touched if keys.info(t.study, t.series, t.sop) in change.txn.staged
    )
    for study in sorted(studies):
        notify.notify_in(change.txn, notify.GROUP, study)
        notify.notify_in(change.txn, notify.STUDY, study)
    return run_stages_in(archive, change.txn, sorted(studies), refresh=refresh)


def clean_study(archive: Archive, study: str, *, reason: str = "") -> str | None:
    """``-c``: set aside everything a study has (served objects, deduplicated data) in one
    ``clean`` change, so that it is rebuilt from this input alone (and can be reverted).
    Returns the change id (None when the study had nothing)."""
    keys = archive.keys
    with archive.changing("clean", level="study", target=study, reason=reason) as change:
        state = States(change.txn, keys).study(study)
        for instance in state.instances.values():
            change.include(removed(change, instance))
        change.edit_state(study).instances.clear()
        for prefix in (keys.study(study), keys.instance_records(study), keys.groups(study)):
            change.set_aside_prefix(prefix)
        if not change.aside:
            change.abort()
            return None
        finish_studies(archive, change, {study})
    return change.id
