"""Revert: undo a change, or bring one instance back to an earlier revision (a new change).

Reverting change C (``dicomweb-archive revert CHANGE``; ``restore`` for a rejection) gives
every instance C touched its state before C, in one ``revert`` change (``restore`` for a
rejection) that is itself recorded and revertible:

- an instance C removed (delete, reject, replace, clean, de-identification in place) comes
  back from the objects C set aside, as it was (same revision); an instance that has taken
  its place since is set aside;
- an instance C edited gets its edit steps before C back, as a new revision;
- an instance C added (the replacement, a de-identified copy) is set aside.

An instance C edited and a later change edited again keeps the later changes: C's own edit
steps are taken out of its steps (C undone, what came after applied on top), as a new
revision, with a warning for each attribute a later change changed too (its later value
stays). An instance changed after C in a way that cannot be unpicked step by step (removed,
replaced, or a later snapshot step, which holds C's result) is not reverted over: the revert
is refused, naming it, so that the later change is reverted first. A change whose set-aside
objects were purged cannot be reverted.

``revert UID --to N`` gives one instance the edit steps it had at revision N, as a new
revision. Info records are never rewritten: what a revert restores is which steps apply.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.steps import Step, apply_to_json
from dicomweb_archive.errors import (
    CorruptStoreError,
    NoSuchInstanceError,
    StoreError,
    UsageError,
)
from dicomweb_archive.ops.changes import (
    finish_studies,
    removed,
    set_aside_instance,
    set_aside_unused_bulk,
)
from dicomweb_archive.ops.history import instance_history
from dicomweb_archive.ops.stages import complete_pending
from dicomweb_archive.ops.state import Instance, States
from dicomweb_archive.ops.study import metadata_hash
from dicomweb_archive.ops.update import (
    InstanceChange,
    UpdatePlan,
    UpdateReport,
    apply_update,
    target_instances,
)
from dicomweb_archive.store.changes import ChangeSet, Touched, change_ids, read_change
from dicomweb_archive.store.instance import InstanceKey, read_info
from dicomweb_archive.store.journal import Transaction

JsonObject = dict[str, Any]


def revert_change(
    archive: Archive,
    change_id: str,
    *,
    reason: str = "",
    warn: Callable[[str], None] | None = None,
) -> UpdateReport:
    """Undo change ``change_id`` (see the module docstring); ``warn`` is told of each
    attribute a later change changed too."""
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
        target = record.get("reverts")
        if target and _purged(archive, target):
            raise UsageError(
                f"change {change_id} reverted change {target}, which was purged since: "
                "reverting it would bring back what the purge removed"
            )
        if record["kind"] == "purge":
            raise UsageError(
                f"change {change_id} is a purge: what it deleted is gone for good, it cannot "
                "be reverted"
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
            studies = _undo(archive, change, record, plan, warn or (lambda _message: None))
            change.stage_edit_states()  # (the bulk data the restored steps use counts)
            for study in sorted(studies):  # what the instances it removed used alone
                set_aside_unused_bulk(change, study)
            finish_studies(archive, change, studies)
    return UpdateReport(plan, change.id, time.perf_counter() - started)


def _undo(
    archive: Archive,
    change: ChangeSet,
    record: JsonObject,
    plan: UpdatePlan,
    warn: Callable[[str], None],
) -> set[str]:
    keys = archive.keys
    txn = change.txn
    aside = set(record["aside"])
    states = States(txn, keys)
    studies: set[str] = set()
    touched = [Touched.from_json(t) for t in record["instances"]]
    # instances the change added go first: one it removed may come back under the same keys
    touched.sort(key=lambda t: t.revision_before is not None)
    for item in touched:
        key = InstanceKey(item.study, item.series, item.sop)
        studies.add(key.study)
        current = _current(states, key)
        steps = _steps(record.get("steps", {}), item.before)
        prefix = keys.instance(key.study, key.series, key.sop)
        kept = sorted(k for k in aside if k.startswith(prefix))
        if item.revision_after is not None and (
            current is None or metadata_hash(current.metadata) != item.after_sha256
        ):
            later = _without(archive, record, item, current, kept, warn)
            if later is None:
                now = "removed" if current is None else f"at revision {current.revision}"
                raise UsageError(
                    f"SOPInstanceUID {key.sop} changed after change {record['change_id']} (it "
                    f"is {now}): revert the later change first (see dicomweb-archive history)"
                )
            steps = later
        if kept or item.revision_before is None:
            back = removed(change, current) if current is not None else None
            if current is not None:  # the instance in its place now goes aside
                set_aside_instance(change, key)
            if item.revision_before is None:  # the change added it: it goes
                if back is not None:
                    change.include(back)
                plan.others.append(key)  # reverted too (counted)
                continue
            other = _elsewhere(archive, states, key)
            if other is not None:  # the same SOP Instance UID stored elsewhere since
                change.include(removed(change, other))
                set_aside_instance(change, other.key)
                studies.add(other.key.study)
            record_key = keys.instance_record(key.study, key.sop)
            for name in [*kept, *([record_key] if record_key in aside else [])]:
                txn.copy(keys.aside(record["change_id"], name), name)
            change.edit_state(key.study).set(key.sop, key.series, item.revision_before, steps)
            if back is None:
                back = Touched(key.study, key.series, key.sop, None, None)
            back.revision_after = item.revision_before
            back.after_sha256 = item.before_sha256
            change.include(back)
        else:  # edited in place: the steps before, as a new revision
            assert current is not None
            revision = current.revision + 1
            then = apply_to_json(current.received, steps)
            change.include(
                Touched(
                    key.study,
                    key.series,
                    key.sop,
                    current.revision,
                    revision,
                    [
                        {"attribute": a, "old": o, "new": n}
                        for a, o, n in _changes(current.metadata, then)
                    ],
                    metadata_hash(current.metadata),
                    metadata_hash(then),
                    change.state_before(key.study, key.sop),
                )
            )
            change.edit_state(key.study).set(key.sop, key.series, revision, steps)
        plan.others.append(key)
    for name in sorted(aside):
        kept_at = keys.aside(record["change_id"], name)
        if (
            name.startswith("studies/")
            and "/bulkdata/" in name
            and txn.head(name) is None
            and txn.head(kept_at) is not None
        ):
            txn.copy(kept_at, name)
    for item in touched:
        if item.revision_before is not None and item.revision_after is None:
            _bring_back_bulk(archive, txn, InstanceKey(item.study, item.series, item.sop))
    return studies


def _without(  # noqa: PLR0917 - internal
    archive: Archive,
    record: JsonObject,
    item: Touched,
    current: Instance | None,
    kept: list[str],
    warn: Callable[[str], None],
) -> list[Step] | None:
    """The steps of an instance that change ``record`` edited in place and a later change
    changed again: its steps now without the change's own (None: that cannot be done, see the
    module docstring). Warns of each attribute a later change changed too."""
    change_id = record["change_id"]
    if current is None or kept or item.revision_before is None:
        return None
    own = [i for i, step in enumerate(current.steps) if step.change == change_id]
    if not own or any(step.snapshot is not None for step in current.steps[own[0] :]):
        return None
    mine = {c["attribute"] for c in item.changes}
    seen = False
    for entry in instance_history(archive, item.sop):
        if entry.change_id == change_id:
            seen = True
        elif seen:
            for attribute in sorted(mine & {c["attribute"] for c in entry.touched.changes}):
                warn(
                    f"SOPInstanceUID {item.sop}: {attribute} was changed again by change "
                    f"{entry.change_id}: its value from that change stays"
                )
    return [step for step in current.steps if step.change != change_id]


def _bring_back_bulk(archive: Archive, txn: Transaction, key: InstanceKey) -> None:
    """Every bulk-data object a restored instance refers to is there after the revert: from
    the reverted change's copies, else (a change recorded before changes kept copies of the
    bulk data of what they removed) from another change's set-aside objects; the revert is
    refused when one is nowhere."""
    keys = archive.keys
    info = read_info(txn, keys, key)
    for sha in sorted(info.bulk_hashes() | info.kept_originals()):
        name = keys.bulkdata(key.study, sha)
        if txn.head(name) is not None:
            continue
        found = next(
            (
                keys.aside(cid, name)
                for cid in change_ids(archive.storage)
                if archive.storage.head(keys.aside(cid, name)) is not None
            ),
            None,
        )
        if found is None:
            raise CorruptStoreError(
                f"SOPInstanceUID {key.sop} cannot be restored: its bulk data {sha} is "
                "nowhere in the store (purged with a later change)"
            )
        txn.copy(found, name)


def _purged(archive: Archive, change_id: str) -> bool:
    try:
        target = read_change(archive.storage, archive.keys, change_id)
    except StoreError:
        return True  # its record is gone: purged with a de-identification
    return bool(target["details"].get("purged_by"))


def _steps(table: JsonObject, before: JsonObject | None) -> list[Step]:
    """The steps of an instance's edit state before a change (none: as ingested), from the
    change record's steps table."""
    if before is None:
        return []
    return [Step.from_json(table[sid]) for sid in before["steps"]]


def _current(states: States, key: InstanceKey) -> Instance | None:
    """The instance stored under exactly ``key`` now, if any."""
    found = states.study(key.study).instances.get(key.sop)
    return found if found is not None and found.key == key else None


def _elsewhere(archive: Archive, states: States, key: InstanceKey) -> Instance | None:
    """The instance with ``key``'s SOP Instance UID stored at another place now (it took the
    place of the one being restored), if any."""
    row = archive.index.find_instance(key.sop)
    if row is None:
        return None
    where = InstanceKey(row["study_instance_uid"], row["series_instance_uid"], key.sop)
    return None if where == key else _current(states, where)


def _changes(now: JsonObject, then: JsonObject) -> list[tuple[str, Any, Any]]:
    changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    return [(k, now.get(k), then.get(k)) for k in changed]


def plan_revert(archive: Archive, sop: str, revision: int) -> UpdatePlan:
    """Giving an instance the edit steps it had at ``revision``, as a new revision."""
    (key,) = target_instances(archive, "instance", sop)
    instance = States(archive.storage, archive.keys).instance(key)
    found = [
        _steps(entry.steps, entry.touched.before)
        for entry in instance_history(archive, sop)
        if entry.touched.revision_before == revision
        and (entry.touched.study, entry.touched.series) == (key.study, key.series)
    ]
    if revision >= instance.revision or not found:
        raise NoSuchInstanceError(
            f"SOPInstanceUID {sop} has no revision {revision} to revert to "
            f"(current revision {instance.revision}; see dicomweb-archive history)"
        )
    steps = found[0]
    then = apply_to_json(instance.received, steps)
    plan = UpdatePlan("revert", "instance", sop, [f"revert to revision {revision}"])
    plan.instances.append(
        InstanceChange(
            key,
            instance.revision,
            instance.revision + 1,
            _changes(instance.metadata, then),
            instance.steps,
            steps,
            instance.metadata,
            then,
        )
    )
    return plan


def apply_revert(archive: Archive, plan: UpdatePlan) -> UpdateReport:
    return apply_update(archive, plan, reason=plan.edits[0])
