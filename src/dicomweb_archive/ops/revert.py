"""Revert: undo a change, or bring one instance back to an earlier revision (a new change).

Reverting change C (``dicomweb-archive revert CHANGE``; ``restore`` for a rejection) gives
every instance C touched its state before C, in one ``revert`` change (``restore`` for a
rejection) that is itself recorded and revertible:

- an instance C removed (delete, reject, replace, clean, de-identification in place) comes
  back from the objects C set aside, as it was (same revision); an instance that has taken
  its place since is set aside;
- an instance C edited gets its metadata and info record before C back, as a new revision;
- an instance C added (the replacement, a de-identified copy) is set aside.

An instance changed again after C (its metadata is not what C made it, or it was removed) is
not reverted over: the revert is refused, naming it, so that the later change is reverted
first. A change whose
set-aside objects were purged cannot be reverted.

``revert UID --to N`` restores one instance's metadata and info record as they were at
revision N, as a new revision.
"""

from __future__ import annotations

import re
import time
from dataclasses import astuple, replace
from typing import Any

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import NoSuchInstanceError, StoreError, UsageError
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.ops.changes import (
    finish_studies,
    instance_state,
    metadata_hash,
    removed,
    set_aside_instance,
)
from dicomweb_archive.ops.history import instance_history
from dicomweb_archive.ops.stages import complete_pending
from dicomweb_archive.ops.update import (
    InstanceChange,
    UpdatePlan,
    UpdateReport,
    apply_update,
    stage_instances,
    target_instances,
)
from dicomweb_archive.store.changes import ChangeSet, Touched, read_change
from dicomweb_archive.store.dedup import make_record
from dicomweb_archive.store.instance import InstanceKey
from dicomweb_archive.store.storage import json_gz

JsonObject = dict[str, Any]


def revert_change(archive: Archive, change_id: str, *, reason: str = "") -> UpdateReport:
    """Undo change ``change_id`` (see the module docstring)."""
    if not re.fullmatch(r"[0-9a-f]{32}", change_id):
        raise UsageError(f"{change_id!r} is not a change id (see dicomweb-archive audit)")
    started = time.perf_counter()
    complete_pending(archive)
    with archive.writing("revert"):
        try:
            record = read_change(archive.storage, archive.keys, change_id)
        except StoreError as exc:
            raise NoSuchInstanceError(
                f"no change {change_id} in the store (see dicomweb-archive audit)"
            ) from exc
        if record["details"].get("purged_by"):
            raise UsageError(
                f"change {change_id} was purged ({record['details']['purged_by']}): what it "
                "removed is gone, it cannot be reverted"
            )
        kind = "restore" if record["kind"] == "reject" else "revert"
        plan = UpdatePlan(kind, "change", change_id, [])
        with archive.changing(
            kind,
            level="change",
            target=change_id,
            reason=reason or f"revert of {record['kind']} {change_id}",
            reverts=change_id,
        ) as change:
            studies = _undo(archive, change, record, plan)
            finish_studies(archive, change, studies)
    return UpdateReport(plan, change.id, time.perf_counter() - started)


def _undo(archive: Archive, change: ChangeSet, record: JsonObject, plan: UpdatePlan) -> set[str]:
    keys = archive.keys
    txn = change.txn
    aside = set(record["aside"])
    studies: set[str] = set()
    touched = [Touched.from_json(t) for t in record["instances"]]
    # instances the change added go first: one it removed may come back under the same keys
    touched.sort(key=lambda t: t.revision_before is not None)
    for item in touched:
        key = InstanceKey(item.study, item.series, item.sop)
        studies.add(key.study)
        current = _current(archive, change, key)
        if item.revision_after is not None and (
            current is None or metadata_hash(current[0]) != item.after_sha256
        ):
            now = "removed" if current is None else f"at revision {current[1].revision}"
            raise UsageError(
                f"SOPInstanceUID {key.sop} changed after change {record['change_id']} (it is "
                f"{now}): revert the later change first (see dicomweb-archive history)"
            )
        prefix = keys.instance(key.study, key.series, key.sop)
        kept = sorted(k for k in aside if k.startswith(prefix))
        if kept or item.revision_before is None:
            if current is not None:  # the instance in its place now goes aside
                set_aside_instance(change, key)
            if item.revision_before is None:
                if current is not None:
                    change.include(removed(key, *current))
                continue
            other = _elsewhere(archive, change, key)
            if other is not None:  # the same SOP Instance UID stored elsewhere since
                change.include(removed(other, *instance_state(change.txn, archive, other)))
                set_aside_instance(change, other)
                studies.add(other.study)
            for name in kept:
                txn.copy(keys.aside(record["change_id"], name), name)
            _restore_record(archive, change, key, item)
            back = (
                removed(key, *current)
                if current is not None
                else Touched(key.study, key.series, key.sop, None, None)
            )
            back.revision_after = item.revision_before
            back.after_sha256 = item.before_sha256
            change.include(back)
        else:  # edited in place: the state before, as a new revision
            assert current is not None and item.before is not None
            info = replace(
                InfoRecord.from_json(item.before["info"]), revision=current[1].revision + 1
            )
            planned = InstanceChange(
                key,
                info.revision,
                _changes(current[0], item.before["metadata"]),
                current,
                (item.before["metadata"], info),
            )
            stage_instances(archive, change, [planned])
        plan.others.append(key)
    for name in sorted(aside):
        if name.startswith("studies/") and "/bulkdata/" in name and txn.head(name) is None:
            txn.copy(keys.aside(record["change_id"], name), name)
    return studies


def _current(
    archive: Archive, change: ChangeSet, key: InstanceKey
) -> tuple[JsonObject, InfoRecord] | None:
    if change.txn.head(archive.keys.info(key.study, key.series, key.sop)) is None:
        return None
    return instance_state(change.txn, archive, key)


def _elsewhere(archive: Archive, change: ChangeSet, key: InstanceKey) -> InstanceKey | None:
    """The instance with ``key``'s SOP Instance UID stored at another place now (it took the
    place of the one being restored), if any."""
    row = archive.index.find_instance(key.sop)
    if row is None:
        return None
    where = InstanceKey(row["study_instance_uid"], row["series_instance_uid"], key.sop)
    if where == key or change.txn.head(archive.keys.info(*astuple(where))) is None:
        return None
    return where


def _restore_record(archive: Archive, change: ChangeSet, key: InstanceKey, item: Touched) -> None:
    """The deduplicated record of a restored instance, from its state before."""
    if item.before is None:
        return
    record, extracts = make_record(
        item.before["metadata"], InfoRecord.from_json(item.before["info"])
    )
    for sha, extract in extracts.items():
        name = archive.keys.extract(key.study, sha)
        if change.txn.head(name) is None:
            change.txn.put(name, json_gz(extract))
    change.txn.put(archive.keys.instance_record(key.study, key.sop), json_gz(record))


def _changes(now: JsonObject, then: JsonObject) -> list[tuple[str, Any, Any]]:
    changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    return [(k, now.get(k), then.get(k)) for k in changed]


def plan_revert(archive: Archive, sop: str, revision: int) -> UpdatePlan:
    """Restoring an instance's metadata and info record as they were at ``revision``."""
    (key,) = target_instances(archive, "instance", sop)
    metadata, info = instance_state(archive.storage, archive, key)
    found = [
        e.touched.before
        for e in instance_history(archive, sop)
        if e.touched.revision_before == revision and e.touched.before is not None
    ]
    if revision >= info.revision or not found:
        raise NoSuchInstanceError(
            f"SOPInstanceUID {sop} has no revision {revision} to revert to "
            f"(current revision {info.revision}; see dicomweb-archive history)"
        )
    old_metadata = found[0]["metadata"]
    old_info = replace(InfoRecord.from_json(found[0]["info"]), revision=info.revision + 1)
    plan = UpdatePlan("revert", "instance", sop, [f"revert to revision {revision}"])
    plan.instances.append(
        InstanceChange(
            key,
            info.revision + 1,
            _changes(metadata, old_metadata),
            (metadata, info),
            (old_metadata, old_info),
        )
    )
    return plan


def apply_revert(archive: Archive, plan: UpdatePlan) -> UpdateReport:
    return apply_update(archive, plan, reason=plan.edits[0])
