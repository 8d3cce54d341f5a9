"""Metadata-only updates (the seed's ``mkdicomwebupdate``): edit, with history.

Policy (``docs/spec/update.md``): corrections keep every UID and record history; frames and
bulk data are never rewritten. An update:

1. finds the instances of the target (a PatientID, or a Study, Series or SOP Instance UID)
   through the index, and checks every edit (level, VR, VM, value; attributes that describe
   the pixel data are refused) before anything is written;
2. plans, per instance, the new info record and metadata (the file's head re-encoded,
   :mod:`dicomweb_archive.dicom.rewrite`), and for ``dry_run`` stops there;
3. applies the plan as one ``edit`` change (``store/changes.py``): each instance's new info
   record and metadata, the studies' deduplicated records, the derived files and index rows
   rebuilt by the stages, the change record (history and audit), all in one journal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dicomweb_archive import __version__
from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.edit import OriginalAttributes
from dicomweb_archive.dicom.rewrite import rewrite
from dicomweb_archive.errors import (
    ArchiveError,
    NoSuchInstanceError,
    NoSuchStudyError,
    StaleVersionError,
)
from dicomweb_archive.model.edits import LEVELS, EditSpec, parse_edit
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.uid import check_uid
from dicomweb_archive.ops.changes import finish_studies, metadata_hash
from dicomweb_archive.ops.ingest_types import inline_limits
from dicomweb_archive.ops.stages import complete_pending
from dicomweb_archive.store.changes import ChangeSet, Touched
from dicomweb_archive.store.dedup import make_record, read_study_records, stage_group
from dicomweb_archive.store.instance import (
    InstanceKey,
    read_bulk,
    read_info,
    read_instance_metadata,
)
from dicomweb_archive.store.keys import bulkdata_uri, frames_uri
from dicomweb_archive.store.storage import JSON_GZ_HEADERS, json_gz

JsonObject = dict[str, Any]


@dataclass(slots=True)
class InstanceChange:
    """The planned change of one instance."""

    key: InstanceKey
    revision: int
    changes: list[tuple[str, Any, Any]]  # (attribute, old JSON, new JSON)
    before: tuple[JsonObject, InfoRecord]  # (metadata, info) now
    after: tuple[JsonObject, InfoRecord]  # (metadata, info) after
    bulk: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class UpdatePlan:
    operation: str
    level: str
    target: str
    edits: list[str]
    instances: list[InstanceChange] = field(default_factory=list)
    #: instances a change touches that have no planned state here (revert of a change)
    others: list[InstanceKey] = field(default_factory=list)

    @property
    def keys(self) -> list[InstanceKey]:
        return [change.key for change in self.instances] + self.others

    @property
    def size(self) -> int:
        return len(self.keys)

    @property
    def studies(self) -> list[str]:
        return sorted({key.study for key in self.keys})


@dataclass(slots=True)
class UpdateReport:
    plan: UpdatePlan
    change_id: str = ""
    seconds: float = 0.0


def target_instances(archive: Archive, level: str, identifier: str) -> list[InstanceKey]:
    """The instances a level and identifier (PatientID or UID) name, through the index."""
    index = archive.index
    if level == "patient":
        studies = index.studies_of_patient(identifier)
        if not studies:
            raise NoSuchStudyError(f"no study of PatientID {identifier!r} is in the store")
        rows = [row for study in studies for row in index.find_instances(study)]
    else:
        uid = check_uid(identifier, f"{level} UID", source="argument")
        rows = index.locate(level, uid)
        if not rows:
            kind = {"study": NoSuchStudyError}.get(level, NoSuchInstanceError)
            raise kind(f"{level} {uid} is not in the store")
    return [
        InstanceKey(row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"])
        for row in rows
    ]


def guess_level(archive: Archive, uid: str) -> str:
    """The level (study, series or instance) of a UID in the store; "study" when unknown."""
    for level in ("study", "series", "instance"):
        try:
            target_instances(archive, level, uid)
        except (NoSuchStudyError, NoSuchInstanceError):
            continue
        return level
    return "study"


def plan_update(
    archive: Archive,
    level: str,
    identifier: str,
    edits: list[str],
    *,
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
    complete_pending(archive)

    def plan() -> UpdatePlan:
        result = UpdatePlan("edit", level, identifier, edits)
        for key in target_instances(archive, level, identifier):
            earlier = (base or {}).get(key.sop)
            result.instances.append(_plan_instance(archive, key, specs, earlier, record))
        return result

    return archive.read(plan)


def _plan_instance(
    archive: Archive,
    key: InstanceKey,
    specs: list[EditSpec],
    earlier: InstanceChange | None,
    record: OriginalAttributes | None,
) -> InstanceChange:
    storage, keys = archive.storage, archive.keys
    if earlier is not None:
        metadata, info = earlier.after
        pending = dict(earlier.bulk)
    else:
        info = read_info(storage, keys, key)
        metadata = read_instance_metadata(storage, keys, key)
        pending = {}

    def bulk(sha: str) -> bytes | memoryview:
        return pending[sha] if sha in pending else read_bulk(storage, keys, key.study, sha)

    result = rewrite(
        info,
        metadata,
        [spec.edit for spec in specs],
        read_bulk=bulk,
        original_attributes=record,
        limits=inline_limits(archive),
        frames_uri=lambda _meta: frames_uri(key.sop),
        bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
        name=keys.instance(key.study, key.series, key.sop).rstrip("/"),
    )
    revision = info.revision + (0 if earlier is not None else 1)
    result.info.revision = revision
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


def apply_update(archive: Archive, plan: UpdatePlan, *, reason: str = "") -> UpdateReport:
    """Commit a plan as one change (see the module docstring)."""
    started = time.perf_counter()
    report = UpdateReport(plan)
    with archive.writing(plan.operation):
        _check_fresh(archive, plan)
        with archive.changing(
            plan.operation, level=plan.level, target=plan.target, reason=reason, edits=plan.edits
        ) as change:
            stage_instances(archive, change, plan.instances)
            finish_studies(archive, change, set(plan.studies))
        report.change_id = change.id
    report.seconds = time.perf_counter() - started
    return report


def stage_instances(archive: Archive, change: ChangeSet, planned: list[InstanceChange]) -> None:
    """Stage each instance's new state: info record, metadata, new bulk data, and the study's
    deduplicated records (the group file holds the new records; per-instance records of
    changed instances are removed); record each in the change."""
    keys = archive.keys
    txn = change.txn
    by_study: dict[str, list[InstanceChange]] = {}
    for item in planned:
        key = item.key
        metadata, info = item.after
        for sha, data in item.bulk:
            name = keys.bulkdata(key.study, sha)
            if txn.head(name) is None:
                txn.put(name, data)
        txn.put(keys.info(key.study, key.series, key.sop), json_gz(info.to_json()))
        txn.put(
            keys.instance_metadata(key.study, key.series, key.sop),
            json_gz([metadata]),
            **JSON_GZ_HEADERS,
        )
        before_metadata, before_info = item.before
        change.include(
            Touched(
                key.study,
                key.series,
                key.sop,
                before_info.revision,
                item.revision,
                [{"attribute": a, "old": o, "new": n} for a, o, n in item.changes],
                metadata_hash(before_metadata),
                metadata_hash(metadata),
                {"metadata": before_metadata, "info": before_info.to_json()},
            )
        )
        by_study.setdefault(key.study, []).append(item)
    for study, items in by_study.items():
        records = read_study_records(txn, keys, study)
        if not records.records:
            continue  # written by the instances stage alone: no deduplicated data
        for item in items:
            record, extracts = make_record(*item.after)
            records.records[item.key.sop] = record
            records.extracts.update(extracts)
            per_instance = keys.instance_record(study, item.key.sop)
            if txn.head(per_instance) is not None:
                txn.delete(per_instance)
        stage_group(txn, keys, study, records)


def _check_fresh(archive: Archive, plan: UpdatePlan) -> None:
    """Optimistic concurrency: every instance is still at the revision the plan started from."""
    for item in plan.instances:
        try:
            current = read_info(archive.storage, archive.keys, item.key).revision
        except ArchiveError as exc:
            raise StaleVersionError(
                f"SOPInstanceUID {item.key.sop} changed since the update was planned "
                "(deleted?); run it again"
            ) from exc
        if current != item.before[1].revision:
            raise StaleVersionError(
                f"SOPInstanceUID {item.key.sop} was changed by another update (revision "
                f"{current}) since this one was planned; run it again"
            )


def update(
    archive: Archive,
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
        plan = plan_update(archive, level, identifier, edits, record_original=record_original)
        try:
            return apply_update(archive, plan, reason=reason)
        except StaleVersionError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
