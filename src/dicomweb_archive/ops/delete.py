"""Delete and revert (``mkdicomwebupdate -delete``, ``dicomweb-archive revert``).

Delete removes, in one journal, the instances' directories (metadata, info record, frames)
and deduplicated records, then the group and study stages rebuild the studies (counts,
ModalitiesInStudy, query files, index rows) and bulk data no instance refers to any more is
removed. History and the audit log keep what was deleted.

Revert restores an instance's metadata and info record from an earlier revision, as a new
revision (nothing is lost: the state reverted from is kept in history too).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicomweb_archive.errors import NoSuchInstanceError, UsageError
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
from dicomweb_archive.store.dedup import make_record
from dicomweb_archive.store.files import gzip_bytes, read_json_gz, remove_file, to_json_bytes
from dicomweb_archive.store.instance import InstanceKey, instance_keys, read_info
from dicomweb_archive.store.journal import commit, stage
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


#: IOCM rejection reasons (PS3.16 CID 7011): code -> meaning
REJECTION_CODES = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}


def rejected_dir(layout: StoreLayout, change_id: str | None = None) -> Path:
    root = layout.private / "rejected"
    return root / change_id if change_id else root


def apply_delete(
    store: str | os.PathLike[str],
    plan: UpdatePlan,
    *,
    reason: str = "",
    reject: str | None = None,
) -> UpdateReport:
    """Remove the planned instances in one journal; rebuild their studies.

    With ``reject`` (an IOCM code of :data:`REJECTION_CODES`) the instances are moved aside
    instead, hidden from every served file and the index, and ``restore`` brings them back.
    """
    if reject is not None and reject not in REJECTION_CODES:
        codes = ", ".join(f"{c} ({m})" for c, m in REJECTION_CODES.items())
        raise UsageError(f"--reject {reject}: use one of {codes}")
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
        renames: list[tuple[Path, Path]] = []
        audit: list[dict[str, Any]] = []
        change_id = uuid.uuid4().hex
        aside = rejected_dir(layout, change_id)
        for change in plan.instances:
            key = change.key
            if reject is None:
                removals.append(layout.instance(key.study, key.series, key.sop))
            else:
                place = aside / key.study / key.series / key.sop
                renames.append((layout.instance(key.study, key.series, key.sop), place))
                record, extracts = make_record(*change.before)
                content = {"record": record, "extracts": extracts}
                final = place.with_name(f"{key.sop}.record.json.gz")
                renames.append((stage(final, gzip_bytes(to_json_bytes(content)), change_id), final))
            removals.append(layout.instance_record(key.study, key.sop))
            audit.append(
                {
                    "time": when,
                    "user": user_name(),
                    "operation": "delete" if reject is None else "reject",
                    "level": plan.level,
                    "target": plan.target,
                    "reason": reason if reject is None else f"{reject} {REJECTION_CODES[reject]}",
                    "study": key.study,
                    "series": key.series,
                    "sop": key.sop,
                    "revision": change.revision,
                    "changes": [],
                    "before_sha256": metadata_hash(change.before[0]),
                    "after_sha256": "",
                }
            )
        if reject is not None:
            manifest = {
                "change_id": change_id,
                "code": reject,
                "meaning": REJECTION_CODES[reject],
                "reason": reason,
                "time": when,
                "user": user_name(),
                "instances": [list(_parts(change.key)) for change in plan.instances],
            }
            final = aside / "manifest.json"
            data = json.dumps(manifest, indent=1).encode()
            renames.append((stage(final, data, change_id), final))
        report.change_id = change_id
        commit(layout, change_id, renames, removals, audit)
        group_locked(layout, plan.studies, remove_instance_files=False)
        build_locked(layout, plan.studies)
        if reject is None:
            for study in plan.studies:
                prune_bulkdata(layout, study)
    report.applied = True
    report.seconds = time.perf_counter() - started
    return report


def _parts(key: InstanceKey) -> tuple[str, str, str]:
    return key.study, key.series, key.sop


def rejected_bulk(layout: StoreLayout, study: str) -> set[str]:
    """Bulk data that rejected (restorable) instances of a study still refer to."""
    used: set[str] = set()
    for path in rejected_dir(layout).glob(f"*/{study}/*/*/info.json.gz"):
        used.update(item["sha256"] for item in read_json_gz(path)["bulkdata"])
    return used


def restore(store: str | os.PathLike[str], change_id: str) -> UpdateReport:
    """Bring back the instances a rejection moved aside, in one journal."""
    started = time.perf_counter()
    layout = StoreLayout(Path(store))
    aside = rejected_dir(layout, change_id)
    if not re.fullmatch(r"[0-9a-f]{32}", change_id) or not (aside / "manifest.json").exists():
        raise NoSuchInstanceError(
            f"no rejection {change_id} to restore (see dicomweb-archive audit)"
        )
    manifest = json.loads((aside / "manifest.json").read_text())
    plan = UpdatePlan("restore", "rejection", change_id, [])
    when = datetime.now(UTC).isoformat(timespec="seconds")
    with write_lock(layout.lock_path):
        recover(layout)
        renames: list[tuple[Path, Path]] = []
        audit: list[dict[str, Any]] = []
        restore_id = uuid.uuid4().hex
        for study, series, sop in manifest["instances"]:
            key = InstanceKey(study, series, sop)
            if layout.instance(study, series, sop).exists():
                raise UsageError(f"{sop} is in the store again: it cannot be restored over")
            renames.append((aside / study / series / sop, layout.instance(study, series, sop)))
            saved = read_json_gz(aside / study / series / f"{sop}.record.json.gz")
            data = gzip_bytes(to_json_bytes(saved["record"]))
            final = layout.instance_record(study, sop)
            renames.append((stage(final, data, restore_id), final))
            for sha, extract in saved["extracts"].items():
                path = layout.extract(study, sha)
                if not path.exists():
                    renames.append(
                        (stage(path, gzip_bytes(to_json_bytes(extract)), restore_id), path)
                    )
            plan.instances.append(InstanceChange(key, 0, [], ({}, {}), ({}, {})))
            audit.append(
                {
                    "time": when,
                    "user": user_name(),
                    "operation": "restore",
                    "level": "rejection",
                    "target": change_id,
                    "reason": f"{manifest['code']} {manifest['meaning']}",
                    "study": study,
                    "series": series,
                    "sop": sop,
                    "revision": 0,
                    "changes": [],
                    "before_sha256": "",
                    "after_sha256": "",
                }
            )
        for study in plan.studies:
            notify.notify(layout, notify.GROUP, study)
            notify.notify(layout, notify.STUDY, study)
        commit(layout, restore_id, renames, [aside], audit)
        group_locked(layout, plan.studies, remove_instance_files=False)
        build_locked(layout, plan.studies)
    report = UpdateReport(plan, restore_id, True, time.perf_counter() - started)
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
    } | rejected_bulk(layout, study)
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
