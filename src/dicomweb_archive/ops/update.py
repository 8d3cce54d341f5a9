"""Metadata-only updates (the seed's ``mkdicomwebupdate``): edit, revert, delete.

Policy (``docs/spec/update.md``): corrections keep every UID and record history; frames and
bulk data are never rewritten. An update:

1. finds the instances of the target (a PatientID, or a Study, Series or SOP Instance UID)
   through the index, and checks every edit (level, VR, VM, value) before anything is written;
2. plans, per instance, the new info record and metadata (the file's head re-encoded,
   :mod:`dicomweb_archive.dicom.rewrite`), and for ``dry_run`` stops there;
3. notifies the group and study stages, stages every new file (instance metadata and info
   record, deduplicated record, history entry) under a temporary name, and commits them in one
   journal (:mod:`dicomweb_archive.store.journal`) with the audit records;
4. runs the group and study stages on the studies changed (query files, series metadata,
   index rows).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicomweb_archive import __version__
from dicomweb_archive.dicom.edit import OriginalAttributes
from dicomweb_archive.dicom.parts import InlineLimits
from dicomweb_archive.dicom.rewrite import rewrite
from dicomweb_archive.errors import (
    CorruptStoreError,
    NoSuchInstanceError,
    NoSuchStudyError,
    StaleVersionError,
)
from dicomweb_archive.index.database import Index
from dicomweb_archive.index.queries import find_instances, studies_of_patient
from dicomweb_archive.model.dedup import canonical_json
from dicomweb_archive.model.edits import LEVELS, EditSpec, parse_edit
from dicomweb_archive.model.uid import check_uid
from dicomweb_archive.ops.stages import build_locked
from dicomweb_archive.store import notify
from dicomweb_archive.store.dedup import (
    current_groups,
    group_content,
    make_record,
    read_study_records,
)
from dicomweb_archive.store.files import gzip_bytes, read_json_gz, to_json_bytes
from dicomweb_archive.store.instance import InstanceKey, read_bulk, read_info
from dicomweb_archive.store.journal import commit, read_audit, stage
from dicomweb_archive.store.layout import StoreLayout, bulkdata_uri, frames_uri
from dicomweb_archive.store.lock import write_lock
from dicomweb_archive.store.recovery import recover

JsonObject = dict[str, Any]


@dataclass(slots=True)
class InstanceChange:
    """The planned change of one instance."""

    key: InstanceKey
    revision: int
    changes: list[tuple[str, Any, Any]]  # (attribute, old JSON, new JSON)
    before: tuple[JsonObject, JsonObject]  # (metadata, info) now
    after: tuple[JsonObject, JsonObject]  # (metadata, info) after
    bulk: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class UpdatePlan:
    operation: str
    level: str
    target: str
    edits: list[str]
    instances: list[InstanceChange] = field(default_factory=list)

    @property
    def studies(self) -> list[str]:
        return sorted({change.key.study for change in self.instances})


@dataclass(slots=True)
class UpdateReport:
    plan: UpdatePlan
    change_id: str = ""
    applied: bool = False
    seconds: float = 0.0


def target_instances(layout: StoreLayout, level: str, identifier: str) -> list[InstanceKey]:
    """The instances a level and identifier (PatientID or UID) name, through the index."""
    with Index(layout.index_path) as index:
        if level == "patient":
            studies = studies_of_patient(index, identifier)
            if not studies:
                raise NoSuchStudyError(f"no study of PatientID {identifier!r} is in the store")
            rows = [row for study in studies for row in find_instances(index, study)]
        else:
            uid = check_uid(identifier, f"{level} UID", source="argument")
            rows = _rows_for(index, level, uid)
    return [
        InstanceKey(row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"])
        for row in rows
    ]


def guess_level(store: str | os.PathLike[str], uid: str) -> str:
    """The level (study, series or instance) of a UID in the store; "study" when unknown."""
    layout = StoreLayout(Path(store))
    for level in ("study", "series", "instance"):
        try:
            target_instances(layout, level, uid)
        except (NoSuchStudyError, NoSuchInstanceError):
            continue
        return level
    return "study"


def _rows_for(index: Index, level: str, uid: str) -> list[dict[str, Any]]:
    column = {
        "study": "study_instance_uid",
        "series": "series_instance_uid",
        "instance": "sop_instance_uid",
    }[level]
    found = list(
        index.db.query(
            f"SELECT study_instance_uid, series_instance_uid FROM instances WHERE {column} = ?"  # noqa: S608 - fixed column names
            " LIMIT 1",
            [uid],
        )
    )
    if not found:
        kind = {"study": NoSuchStudyError}.get(level, NoSuchInstanceError)
        raise kind(f"{level} {uid} is not in the store")
    study, series = found[0]["study_instance_uid"], found[0]["series_instance_uid"]
    if level == "study":
        return find_instances(index, study)
    if level == "series":
        return find_instances(index, study, series)
    return find_instances(index, study, series, [uid])


def plan_update(
    store: str | os.PathLike[str],
    level: str,
    identifier: str,
    edits: list[str],
    *,
    limits: InlineLimits | None = None,
    base: dict[str, InstanceChange] | None = None,
    record_original: bool = False,
) -> UpdatePlan:
    """Check the edits and compute every instance's new metadata; writes nothing.

    ``base`` holds changes planned earlier in the same batch: an instance in it is planned
    from its planned state, and the result combines both (one revision, all changes).
    ``record_original`` also records the previous values in the instance itself, in an
    Original Attributes Sequence (0400,0561) item with reason CORRECT (PS3.3 C.12.1).
    """
    record = (
        OriginalAttributes(
            f"dicomweb-archive {__version__}",
            "CORRECT",
            datetime.now(UTC).strftime("%Y%m%d%H%M%S"),
        )
        if record_original
        else None
    )
    if level not in LEVELS:
        raise ValueError(level)
    specs = [parse_edit(text, level=level) for text in edits]
    layout = StoreLayout(Path(store))
    plan = UpdatePlan("update", level, identifier, edits)
    for key in target_instances(layout, level, identifier):
        earlier = (base or {}).get(key.sop)
        plan.instances.append(
            _plan_instance(
                layout,
                key,
                specs,
                limits=limits or InlineLimits(),
                earlier=earlier,
                record=record,
            )
        )
    return plan


def _plan_instance(
    layout: StoreLayout,
    key: InstanceKey,
    specs: list[EditSpec],
    *,
    limits: InlineLimits,
    earlier: InstanceChange | None = None,
    record: OriginalAttributes | None = None,
) -> InstanceChange:
    if earlier is not None:
        metadata, info = earlier.after
        pending = dict(earlier.bulk)
    else:
        info = read_info(layout, key)
        metadata = read_json_gz(layout.instance_metadata(key.study, key.series, key.sop))[0]
        pending = {}

    def bulk(sha: str) -> bytes | memoryview:
        return pending[sha] if sha in pending else read_bulk(layout, key.study, sha)

    result = rewrite(
        info,
        metadata,
        [spec.edit for spec in specs],
        read_bulk=bulk,
        original_attributes=record,
        limits=limits,
        frames_uri=lambda _meta: frames_uri(key.sop),
        bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
        name=layout.relative(layout.instance(key.study, key.series, key.sop)),
    )
    revision = int(info.get("revision", 0)) + (0 if earlier is not None else 1)
    result.info["revision"] = revision
    changes = [
        (spec.label, metadata.get(f"{spec.tag:08X}"), result.metadata.get(f"{spec.tag:08X}"))
        for spec in specs
    ]
    new_bulk = [(part.sha256, part.data) for part in result.bulk]
    if earlier is not None:
        return InstanceChange(
            key,
            revision,
            [*earlier.changes, *changes],
            earlier.before,
            (result.metadata, result.info),
            [*earlier.bulk, *new_bulk],
        )
    return InstanceChange(
        key, revision, changes, (metadata, info), (result.metadata, result.info), new_bulk
    )


def apply_update(
    store: str | os.PathLike[str], plan: UpdatePlan, *, reason: str = ""
) -> UpdateReport:
    """Commit a plan in one journal, then rebuild the changed studies' derived files."""
    started = time.perf_counter()
    layout = StoreLayout(Path(store))
    report = UpdateReport(plan)
    with write_lock(layout.lock_path):
        recover(layout)
        _check_fresh(layout, plan)
        for study in plan.studies:
            notify.notify(layout, notify.STUDY, study)
        report.change_id = _commit(layout, plan, reason)
        build_locked(layout, plan.studies)
    report.applied = True
    report.seconds = time.perf_counter() - started
    return report


def _check_fresh(layout: StoreLayout, plan: UpdatePlan) -> None:
    """Optimistic concurrency: every instance is still at the revision the plan started from."""
    for change in plan.instances:
        try:
            current = int(read_info(layout, change.key).get("revision", 0))
        except CorruptStoreError as exc:
            raise StaleVersionError(
                f"SOPInstanceUID {change.key.sop} changed since the update was planned "
                "(deleted?); run it again"
            ) from exc
        if current != int(change.before[1].get("revision", 0)):
            raise StaleVersionError(
                f"SOPInstanceUID {change.key.sop} was changed by another update (revision "
                f"{current}) since this one was planned; run it again"
            )


def update(
    store: str | os.PathLike[str],
    level: str,
    identifier: str,
    edits: list[str],
    *,
    reason: str = "",
    attempts: int = 3,
    record_original: bool = False,
) -> UpdateReport:
    """Plan and apply an update; replans when another update got there first."""
    for attempt in range(attempts):
        plan = plan_update(store, level, identifier, edits, record_original=record_original)
        try:
            return apply_update(store, plan, reason=reason)
        except StaleVersionError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _commit(layout: StoreLayout, plan: UpdatePlan, reason: str) -> str:
    """Stage every file of the change and commit them in one journal.

    Per instance: its info record and metadata. Per study: a new group file holding the
    changed records (per-instance records of changed instances are removed, so the group is
    their truth). Per change: one history file with every instance's previous state.
    """
    change_id = uuid.uuid4().hex
    when = datetime.now(UTC).isoformat(timespec="seconds")
    user = user_name()
    renames: list[tuple[Path, Path]] = []
    removals: list[Path] = []
    audit: list[dict[str, Any]] = []
    staged: set[Path] = set()

    def put(final: Path, data: bytes) -> None:
        if final not in staged:
            staged.add(final)
            renames.append((stage(final, data, change_id), final))

    previous: dict[str, JsonObject] = {}
    for change in plan.instances:
        key = change.key
        metadata, info = change.after
        for sha, data in change.bulk:
            path = layout.bulkdata(key.study, sha)
            if not path.exists():
                put(path, data)
        put(layout.info(key.study, key.series, key.sop), gzip_bytes(to_json_bytes(info)))
        put(
            layout.instance_metadata(key.study, key.series, key.sop),
            gzip_bytes(to_json_bytes([metadata])),
        )
        previous[key.sop] = {
            "revision": change.revision - 1,
            "changes": [{"attribute": a, "old": o, "new": n} for a, o, n in change.changes],
            "metadata": change.before[0],
            "info": change.before[1],
        }
        audit.append(
            {
                "time": when,
                "user": user,
                "operation": plan.operation,
                "level": plan.level,
                "target": plan.target,
                "reason": reason,
                "study": key.study,
                "series": key.series,
                "sop": key.sop,
                "revision": change.revision,
                "changes": [a for a, _, _ in change.changes],
                "before_sha256": metadata_hash(change.before[0]),
                "after_sha256": metadata_hash(metadata),
            }
        )
    for study in plan.studies:
        _stage_group(layout, study, plan, put, removals)
    entry = {
        "change_id": change_id,
        "time": when,
        "user": user,
        "operation": plan.operation,
        "reason": reason,
        "instances": previous,
    }
    put(history_path(layout, change_id), gzip_bytes(to_json_bytes(entry)))
    commit(layout, change_id, renames, removals, audit)
    return change_id


def _stage_group(
    layout: StoreLayout, study: str, plan: UpdatePlan, put: Any, removals: list[Path]
) -> None:
    """The study's group file with the changed instances' new records."""
    records = read_study_records(layout, study)
    for change in plan.instances:
        if change.key.study != study:
            continue
        record, extracts = make_record(*change.after)
        records.records[change.key.sop] = record
        records.extracts.update(extracts)
        per_instance = layout.instance_record(study, change.key.sop)
        if per_instance.exists():
            removals.append(per_instance)
    sha, group = group_content(study, records)
    old = current_groups(layout, study)
    if old != [sha]:
        put(layout.group(study, sha), gzip_bytes(to_json_bytes(group)))
        put(layout.group_index(study), gzip_bytes(to_json_bytes({"groups": [sha]})))
        removals.extend(layout.group(study, previous) for previous in old if previous != sha)


def history_path(layout: StoreLayout, change_id: str) -> Path:
    return layout.private / "history" / f"{change_id}.json.gz"


def history_entries(layout: StoreLayout, sop: str) -> list[JsonObject]:
    """An instance's earlier states, oldest first: for each change that touched it, the
    revision it had before, with the change's time, user, operation, reason and changes."""
    entries = []
    seen: set[str] = set()
    for row in read_audit(layout):
        if row["sop"] != sop or row["change_id"] in seen:
            continue
        seen.add(row["change_id"])
        path = history_path(layout, row["change_id"])
        if not path.exists():
            continue  # a delete keeps no metadata history (the audit log records it)
        change = read_json_gz(path)
        state = change["instances"].get(sop)
        if state is not None:
            entries.append(
                {
                    **{k: change[k] for k in ("time", "user", "operation", "reason")},
                    "change_id": change["change_id"],
                    **state,
                }
            )
    return sorted(entries, key=lambda entry: int(entry["revision"]))


def history(store: str | os.PathLike[str], sop: str) -> list[JsonObject]:
    """Every earlier revision of an instance, oldest first (without the stored records)."""
    layout = StoreLayout(Path(store))
    check_uid(sop, "SOPInstanceUID", source="argument")
    return [
        {k: v for k, v in entry.items() if k not in ("metadata", "info")}
        for entry in history_entries(layout, sop)
    ]


def audit_log(store: str | os.PathLike[str], sop: str | None = None) -> list[JsonObject]:
    """The audit log from the index's audit table (a copy of ``audit.jsonl``), oldest first."""
    layout = StoreLayout(Path(store))
    with Index(layout.index_path) as index:
        index.add_audit(read_audit(layout))
        rows = index.audit(sop)
    for row in rows:
        row["changes"] = json.loads(row["changes"] or "[]")
    return rows


def user_name() -> str:
    try:
        return getpass.getuser()
    except OSError:
        return "unknown"


def metadata_hash(metadata: JsonObject) -> str:
    return hashlib.sha256(canonical_json(metadata)).hexdigest()
