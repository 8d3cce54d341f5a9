"""Delete and reject (``mkdicomwebupdate -delete [--reject CODE]``), and restore.

A delete removes the instances from the store in one ``delete`` change: their objects
(frames, metadata, info record, deduplicated record) and the bulk data no remaining instance
refers to are set aside (``store/changes.py``), the stages rebuild their studies (counts,
ModalitiesInStudy, query files, index rows; an emptied study disappears), history and audit
record it. Nothing is lost: ``dicomweb-archive revert CHANGE`` brings them back, and only
``dicomweb-archive purge CHANGE`` frees the space for good.

A rejection is the same with an IOCM rejection reason (PS3.16 CID 7011) recorded; ``restore
CHANGE`` (a revert of the rejection) brings the instances back as they were.
"""

from __future__ import annotations

import time

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import UsageError
from dicomweb_archive.ops.changes import (
    finish_studies,
    removed,
    set_aside_instance,
    set_aside_unused_bulk,
)
from dicomweb_archive.ops.stages import complete_pending
from dicomweb_archive.ops.state import States
from dicomweb_archive.ops.update import (
    InstanceChange,
    UpdatePlan,
    UpdateReport,
    target_changed,
    target_instances,
)

#: IOCM rejection reasons (PS3.16 CID 7011): code -> meaning
REJECTION_CODES = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}


def plan_delete(archive: Archive, level: str, identifier: str) -> UpdatePlan:
    """The instances a delete would remove (nothing is written but pending stages)."""
    complete_pending(archive)

    def plan() -> UpdatePlan:
        result = UpdatePlan("delete", level, identifier, [])
        states = States(archive.storage, archive.keys)
        for key in target_instances(archive, level, identifier):
            instance = states.instance(key)
            metadata = instance.metadata
            result.instances.append(
                InstanceChange(
                    key,
                    instance.revision,
                    instance.revision,
                    [],
                    instance.steps,
                    instance.steps,
                    metadata,
                    metadata,
                )
            )
        return result

    return archive.read_to_write(plan)


def apply_delete(
    archive: Archive,
    plan: UpdatePlan,
    *,
    reason: str = "",
    reject: str | None = None,
) -> UpdateReport:
    """Remove the planned instances in one change (see the module docstring); with ``reject``
    (a code of :data:`REJECTION_CODES`) the change is a rejection."""
    if reject is not None and reject not in REJECTION_CODES:
        codes = ", ".join(f"{c} ({m})" for c, m in REJECTION_CODES.items())
        raise UsageError(f"--reject {reject}: use one of {codes}")
    started = time.perf_counter()
    report = UpdateReport(plan)
    details = {"rejection": {"code": reject, "meaning": REJECTION_CODES[reject]}} if reject else {}
    kind = "reject" if reject else "delete"
    with archive.writing(kind):
        if target_changed(archive, plan):  # another writer added or removed some: as it is now
            plan = plan_delete(archive, plan.level, plan.target)
            report = UpdateReport(plan)
        with archive.changing(
            kind, level=plan.level, target=plan.target, reason=reason, details=details
        ) as change:
            states = States(change.txn, archive.keys)
            for item in plan.instances:
                change.include(removed(change, states.instance(item.key)))
                set_aside_instance(change, item.key)
            for study in plan.studies:
                set_aside_unused_bulk(change, study)
            finish_studies(archive, change, set(plan.studies))
        report.change_id = change.id
    report.seconds = time.perf_counter() - started
    return report
