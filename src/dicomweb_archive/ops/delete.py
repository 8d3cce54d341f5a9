"""Delete and revert (``mkdicomwebupdate -delete``, ``dicomweb-archive revert``).

Delete removes, in one journal, the instances' directories (metadata, info record, frames)
and deduplicated records, then the group and study stages rebuild the studies (counts,
ModalitiesInStudy, query files, index rows) and bulk data no instance refers to any more is
removed. History and the audit log keep what was deleted.

Revert restores an instance's metadata and info record from an earlier revision, as a new
revision (nothing is lost: the state reverted from is kept in history too).
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicomweb_archive.errors import NoSuchInstanceError
from dicomweb_archive.model.uid import check_uid
from dicomweb_archive.ops.reconstruct import find_instance_key
from dicomweb_archive.ops.stages import build_locked, group_locked
from dicomweb_archive.ops.update import (
    InstanceChange,
    UpdatePlan,
    UpdateReport,
    apply_update,
    history_entries,
    metadata_hash,
    target_instances,
    user_name,
)
from dicomweb_archive.store import notify
from dicomweb_archive.store.files import read_json_gz, remove_file
from dicomweb_archive.store.instance import instance_keys, read_info
from dicomweb_archive.store.journal import commit
from dicomweb_archive.store.layout import StoreLayout
from dicomweb_archive.store.lock import write_lock
from dicomweb_archive.store.recovery import recover

JsonObject = dict[str, Any]


def plan_delete(store: str | os.PathLike[str], level: str, identifier: str) -> UpdatePlan:
    """The instances a delete would remove (nothing is written)."""
    layout = StoreLayout(Path(store))
    plan = UpdatePlan("delete", level, identifier, [])
    for key in target_instances(layout, level, identifier):
        info = read_info(layout, key)
        metadata = read_json_gz(layout.instance_metadata(key.study, key.series, key.sop))[0]
        revision = int(info.get("revision", 0))
        plan.instances.append(InstanceChange(key, revision, [], (metadata, info), ({}, {})))
    return plan


def apply_delete(
    store: str | os.PathLike[str], plan: UpdatePlan, *, reason: str = ""
) -> UpdateReport:
    """Remove the planned instances in one journal; rebuild their studies."""
    started = time.perf_counter()
    layout = StoreLayout(Path(store))
    report = UpdateReport(plan)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    with write_lock(layout.lock_path):
        recover(layout)
        for study in plan.studies:
            notify.notify(layout, notify.GROUP, study)
            notify.notify(layout, notify.STUDY, study)
        removals: list[Path] = []
        audit = []
        for change in plan.instances:
            key = change.key
            removals.append(layout.instance(key.study, key.series, key.sop))
            removals.append(layout.instance_record(key.study, key.sop))
            audit.append(
                {
                    "time": when,
                    "user": user_name(),
                    "operation": "delete",
                    "level": plan.level,
                    "target": plan.target,
                    "reason": reason,
                    "study": key.study,
                    "series": key.series,
                    "sop": key.sop,
                    "revision": change.revision,
                    "changes": [],
                    "before_sha256": metadata_hash(change.before[0]),
                    "after_sha256": "",
                }
            )
        report.change_id = uuid.uuid4().hex
        commit(layout, report.change_id, [], removals, audit)
        group_locked(layout, plan.studies, remove_instance_files=False)
        build_locked(layout, plan.studies)
        for study in plan.studies:
            prune_bulkdata(layout, study)
    report.applied = True
    report.seconds = time.perf_counter() - started
    return report


def prune_bulkdata(layout: StoreLayout, study: str) -> None:
    """Remove the study's bulk-data files no remaining instance refers to."""
    root = layout.bulkdata_dir(study)
    if not root.is_dir():
        return
    used = {
        item["sha256"]
        for key in instance_keys(layout, study)
        for item in read_info(layout, key)["bulkdata"]
    }
    for path in sorted(root.rglob("*")):
        if path.is_file() and "".join(path.relative_to(root).parts) not in used:
            remove_file(path)


def plan_revert(store: str | os.PathLike[str], sop: str, revision: int) -> UpdatePlan:
    """Restoring an instance's metadata and info record as they were at ``revision``."""
    layout = StoreLayout(Path(store))
    sop = check_uid(sop, "SOPInstanceUID", source="argument")
    key = find_instance_key(layout, sop)
    info = read_info(layout, key)
    metadata = read_json_gz(layout.instance_metadata(key.study, key.series, key.sop))[0]
    current = int(info.get("revision", 0))
    found = [e for e in history_entries(layout, sop) if int(e["revision"]) == revision]
    if revision >= current or not found:
        raise NoSuchInstanceError(
            f"SOPInstanceUID {sop} has no revision {revision} to revert to "
            f"(current revision {current}; see dicomweb-archive history)"
        )
    entry = found[0]
    old_metadata, old_info = entry["metadata"], dict(entry["info"])
    old_info["revision"] = current + 1
    changed = sorted(
        k for k in set(metadata) | set(old_metadata) if metadata.get(k) != old_metadata.get(k)
    )
    plan = UpdatePlan("revert", "instance", sop, [f"revert to revision {revision}"])
    plan.instances.append(
        InstanceChange(
            key,
            current + 1,
            [(k, metadata.get(k), old_metadata.get(k)) for k in changed],
            (metadata, info),
            (old_metadata, old_info),
        )
    )
    return plan


def apply_revert(store: str | os.PathLike[str], plan: UpdatePlan) -> UpdateReport:
    return apply_update(store, plan, reason=plan.edits[0])
