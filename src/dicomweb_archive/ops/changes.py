"""What every kind of change does to instances, on top of ``store/changes.py``.

Removing an instance (delete, reject, replace, clean, de-identification in place, revert)
always sets its objects aside (frames, info record, its own metadata and deduplicated record
where it has them), keeps a copy of the bulk data it refers to (which other instances may
still use, and a later change may set aside or purge: a revert must not depend on another
change's objects), and records its revision, metadata hash and edit steps before, so that the
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
    read_info,
)
from dicomweb_archive.store.storage import from_json_gz

JsonObject = dict[str, Any]


def set_aside_instance(change: ChangeSet, key: InstanceKey) -> None:
    """Remove an instance in ``change``, keeping its objects aside (its deduplicated record
    too, when it is this instance's: a record is named by study and SOP Instance UID); its
    entry leaves the study's edit state (:func:`removed` recorded it)."""
    keys = change.keys
    txn = change.txn
    info_key = keys.info(key.study, key.series, key.sop)
    used: set[str] = set()
    if txn.head(info_key) is not None:
        info = read_info(txn, keys, key)
        used = info.bulk_hashes() | info.kept_originals()
    for name in instance_objects(txn, keys, key):
        change.set_aside(name)
    record = keys.instance_record(key.study, key.sop)
    if txn.head(record) is not None:
        value = from_json_gz(txn.get(record))
        if value.get("series_instance_uid") == key.series:
            change.set_aside(record)
    state = change.edit_state(key.study)
    entry = state.instances.get(key.sop)
    if entry is not None and entry.series == key.series:
        used |= {
            segment["bulk"]
            for sid in entry.steps
            for segment in state.steps[sid].get("snapshot", {}).get("head", [])
            if "bulk" in segment
        }
        state.pop(key.sop)
    for sha in sorted(used):  # kept with the instance: another instance may still use it
        change.keep_copy(keys.bulkdata(key.study, sha))


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
    change. Instances whose info record the change wrote get new deduplicated records, and
    their series' and study's thumbnails are dropped (copies of a representative instance's,
    whose pixels may be new even where the metadata is not: ``ops/render.py``)."""
    change.stage_edit_states()
    keys = archive.keys
    written = [
        t for t in change.touched if keys.info(t.study, t.series, t.sop) in change.txn.staged
    ]
    for t in written:
        for name in (keys.study_thumbnail(t.study), keys.series_thumbnail(t.study, t.series)):
            if change.txn.head(name) is not None:
                change.txn.delete(name)
    refresh = frozenset(t.sop for t in written)
    for study in sorted(studies):
        notify.notify_in(change.txn, notify.GROUP, study)
        notify.notify_in(change.txn, notify.STUDY, study)
    return run_stages_in(archive, change.txn, sorted(studies), refresh=refresh)


def set_aside_study(change: ChangeSet, study: str) -> bool:
    """``-c``: set aside everything a study has (served objects, deduplicated data) in
    ``change``, each instance recorded as removed, so that the study is rebuilt from the new
    input alone, in the same change (and the change can be reverted). Returns whether the
    study had anything."""
    keys = change.keys
    state = States(change.txn, keys).study(study)
    for instance in state.instances.values():
        change.include(removed(change, instance))
    change.edit_state(study).instances.clear()
    before = len(change.aside)
    for prefix in (keys.study(study), keys.instance_records(study), keys.groups(study)):
        change.set_aside_prefix(prefix)
    return len(change.aside) > before
