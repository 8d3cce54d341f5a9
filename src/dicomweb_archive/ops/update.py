"""Metadata-only updates (the seed's ``mkdicomwebupdate``): edit, with history.

Policy (``docs/spec/update.md``): corrections keep every UID and record history; frames, bulk
data and info records are never rewritten. An update:

1. finds the instances of the target (a PatientID, or a Study, Series or SOP Instance UID)
   through the index, and checks every edit (level, VR, VM, value; attributes that describe
   the pixel data are refused) before anything is written;
2. plans, per instance, the edit step (``dicom/steps.py``) and its metadata after, by applying
   the step to its metadata now: no file is read, unless a text value does not fit the
   instance's character set (its head then decides whether (0008,0005) may become
   ``ISO_IR 192``) or the edit sets the character set itself (the step then holds the edited
   head and metadata); for ``dry_run`` it stops there;
3. applies the plan as one ``edit`` change: each study's edit state (one object per study,
   whatever the number of instances), its derived files and index rows rebuilt from the new
   metadata, the change record (history and audit), all in one journal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dicomweb_archive import __version__
from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.edit import OriginalAttributes
from dicomweb_archive.dicom.parts_model import BulkPart
from dicomweb_archive.dicom.steps import (
    Step,
    apply_to_head,
    apply_to_json,
    edits_step,
    head_bytes,
    sets_character_set,
    snapshot_step,
    split_head,
)
from dicomweb_archive.errors import (
    EditRefusedError,
    NoSuchInstanceError,
    NoSuchStudyError,
    StaleVersionError,
    UsageError,
)
from dicomweb_archive.model.edits import LEVELS, EditSpec, parse_edit
from dicomweb_archive.model.query import instance_query
from dicomweb_archive.model.syntax import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
from dicomweb_archive.model.uid import check_uid
from dicomweb_archive.ops.ingest_types import inline_limits
from dicomweb_archive.ops.reindex import ensure_index
from dicomweb_archive.ops.served import ServedStudy, read_served_study
from dicomweb_archive.ops.stages import complete_pending, stage_study_list
from dicomweb_archive.ops.study import (
    Member,
    group_by_series,
    metadata_hash,
    put_if_changed,
    stage_files,
    study_rows,
)
from dicomweb_archive.store.changes import ChangeSet, Touched
from dicomweb_archive.store.instance import InstanceKey, has_metadata_file, read_bulk, read_info
from dicomweb_archive.store.journal import generation, new_id
from dicomweb_archive.store.keys import bulkdata_uri, frames_uri
from dicomweb_archive.store.storage import json_gz, to_json_bytes

JsonObject = dict[str, Any]


@dataclass(slots=True)
class InstanceChange:
    """The planned change of one instance: its revision and steps before and after, its
    metadata before and after (with their JSON texts where known), the attributes changed,
    and bulk data a step made."""

    key: InstanceKey
    revision_before: int
    revision: int
    changes: list[tuple[str, Any, Any]]  # (attribute, old JSON, new JSON)
    steps_before: list[Step]
    steps: list[Step]
    before: JsonObject
    after: JsonObject
    bulk: list[BulkPart] = field(default_factory=list)
    before_text: bytes | None = None

    @property
    def after_text(self) -> bytes:
        return to_json_bytes(self.after)


@dataclass(slots=True)
class UpdatePlan:
    operation: str
    level: str
    target: str
    edits: list[str]
    instances: list[InstanceChange] = field(default_factory=list)
    #: instances a change touches that have no planned state here (revert of a change)
    others: list[InstanceKey] = field(default_factory=list)
    #: the id the change will have (its steps carry it)
    change_id: str = field(default_factory=new_id)
    #: the store's generation the plan was made on, and the studies as they were then
    generation: int = -1
    views: dict[str, ServedStudy] = field(default_factory=dict)

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
            raise NoSuchStudyError(
                "no study of the PatientID given is in the store (-v shows the PatientID)",
                phi=f"PatientID {identifier!r}",
            )
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
    change_id: str | None = None,
) -> UpdatePlan:
    """Check the edits and compute every instance's edit step and new metadata; writes
    nothing.

    ``base`` holds changes planned earlier in the same batch: an instance in it is planned
    from its planned state, and the result combines both (one revision, all changes).
    ``record_original`` also records the previous values in the instance itself, in an
    Original Attributes Sequence (0400,0561) item with reason CORRECT (PS3.3 C.12.1).
    ``change_id``: the change the plan is part of (default: a new one).
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
    paths = [spec.edit.path for spec in specs]
    for spec, path in zip(specs, paths, strict=True):
        if paths.count(path) > 1:  # the order of two edits of one attribute would decide
            raise UsageError(f"{spec.label} is edited more than once in one command")
    complete_pending(archive)

    def plan() -> UpdatePlan:
        result = UpdatePlan("edit", level, identifier, edits)
        if change_id is not None:
            result.change_id = change_id
        result.generation = generation(archive.storage)
        for key in target_instances(archive, level, identifier):
            if key.study not in result.views:
                result.views[key.study] = read_served_study(archive, archive.storage, key.study)
            earlier = (base or {}).get(key.sop)
            result.instances.append(
                _plan_instance(
                    archive, result.views[key.study], key, specs, earlier, record, result.change_id
                )
            )
        return result

    return archive.read_to_write(plan)


def _plan_instance(  # noqa: PLR0917 - one internal call shape
    archive: Archive,
    view: ServedStudy,
    key: InstanceKey,
    specs: list[EditSpec],
    earlier: InstanceChange | None,
    record: OriginalAttributes | None,
    change_id: str,
) -> InstanceChange:
    member = view.members.get(key.sop)
    if member is None or member.facts.series != key.series:
        raise NoSuchInstanceError(f"SOPInstanceUID {key.sop} is not in the store")
    entry = view.edits.instances.get(key.sop)
    revision = entry.revision if entry is not None and entry.series == key.series else 0
    if member.facts.original_transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        raise EditRefusedError(
            f"SOPInstanceUID {key.sop}: a deflated data set (PS3.5 A.5) cannot be edited in "
            "place (export it, edit the file, and ingest it with --replace)"
        )
    if earlier is not None:
        before, steps = earlier.after, earlier.steps
        pending = {part.sha256: part.data for part in earlier.bulk}
    else:
        before, steps, pending = member.metadata, view.edits.steps_of(key.sop), {}
    storage, keys = archive.storage, archive.keys

    def bulk(sha: str) -> bytes | memoryview:
        return pending[sha] if sha in pending else read_bulk(storage, keys, key.study, sha)

    def head() -> bytes:
        """The instance's head now: as received, with its steps applied (its info record is
        read only here: when a value needs the bytes to decide)."""
        segments, _rest = split_head(read_info(storage, keys, key).skeleton)
        return apply_to_head(head_bytes(segments, bulk), steps, bulk, name=key.sop)

    edits = [spec.edit for spec in specs]
    new_bulk: list[BulkPart] = []
    if sets_character_set(edits):
        step, new_bulk = snapshot_step(
            change_id,
            head(),
            before,
            edits,
            original_attributes=record,
            limits=inline_limits(archive),
            frames_uri=lambda _meta: frames_uri(key.sop),
            bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
            name=key.sop,
        )
    else:
        step = edits_step(
            change_id, edits, before, original_attributes=record, head=head, name=key.sop
        )
    after = apply_to_json(before, [step])
    changes = [
        (spec.label, before.get(f"{spec.tag:08X}"), after.get(f"{spec.tag:08X}")) for spec in specs
    ]
    if earlier is not None:
        return InstanceChange(
            key,
            earlier.revision_before,
            earlier.revision,
            [*earlier.changes, *changes],
            earlier.steps_before,
            [*steps, step],
            earlier.before,
            after,
            [*earlier.bulk, *new_bulk],
        )
    return InstanceChange(
        key,
        revision,
        revision + 1,
        changes,
        steps,
        [*steps, step],
        before,
        after,
        new_bulk,
        member.text,
    )


def apply_update(archive: Archive, plan: UpdatePlan, *, reason: str = "") -> UpdateReport:
    """Commit a plan as one change (see the module docstring)."""
    started = time.perf_counter()
    report = UpdateReport(plan)
    with archive.writing(plan.operation):
        views = _views_now(archive, plan)
        with archive.changing(
            plan.operation,
            level=plan.level,
            target=plan.target,
            reason=reason,
            edits=plan.edits,
            change_id=plan.change_id,
        ) as change:
            stage_edits(archive, change, plan.instances, views)
        report.change_id = change.id
    report.seconds = time.perf_counter() - started
    return report


def stage_edits(
    archive: Archive,
    change: ChangeSet,
    planned: list[InstanceChange],
    views: dict[str, ServedStudy],
) -> None:
    """Put planned edits into ``change``: each study's edit state, new bulk data, its derived
    files from the instances' new metadata, its rows (study and series rows, and the instance
    rows whose query object changed); record each instance."""
    keys = archive.keys
    txn = change.txn
    by_study: dict[str, list[InstanceChange]] = {}
    for item in planned:
        by_study.setdefault(item.key.study, []).append(item)
    built: dict[str, JsonObject | None] = {}
    updates = []
    for study, items in sorted(by_study.items()):
        view = views[study]
        change.edit_states[study] = view.edits
        for item in items:
            key = item.key
            after_text = item.after_text
            change.include(
                Touched(
                    key.study,
                    key.series,
                    key.sop,
                    item.revision_before,
                    item.revision,
                    [{"attribute": a, "old": o, "new": n} for a, o, n in item.changes],
                    metadata_hash(item.before, item.before_text),
                    metadata_hash(item.after, after_text),
                    change.state_before(key.study, key.sop),
                )
            )
            view.edits.set(key.sop, key.series, item.revision, item.steps)
            member = view.members[key.sop]
            view.members[key.sop] = Member(item.after, member.facts, after_text)
            for part in item.bulk:
                name = keys.bulkdata(study, part.sha256)
                if txn.head(name) is None:
                    txn.put(name, part.data)
            if has_metadata_file(txn, keys, key):
                name = keys.instance_metadata(key.study, key.series, key.sop)
                put_if_changed(txn, name, json_gz([item.after]))
        rows = study_rows(keys, study, group_by_series(view.members.values()))
        stage_files(txn, rows)
        before = {item.key.sop: item.before for item in items}
        changed = [
            row
            for row in rows.instances
            if row["sop_instance_uid"] in before
            and row["query_json"] != instance_query(before[row["sop_instance_uid"]])
        ]
        updates.append((study, rows.study, rows.series, changed))
        built[study] = rows.study["query_json"] if rows.study is not None else None
    change.stage_edit_states()
    txn.index({"op": "patch", "updates": updates})
    stage_study_list(archive, txn, built)


def target_changed(archive: Archive, plan: UpdatePlan) -> bool:
    """Under the lease: whether the plan's target (a patient, study, series or instance) names
    other instances now than when it was planned, another writer having added (or removed)
    some since: an edit of a study must not leave out the instances an ingest added to it
    meanwhile. An index cache another machine's writes made stale is rebuilt first
    (``ensure_index``): the target is looked up in the index."""
    if plan.level not in LEVELS or generation(archive.storage) == plan.generation:
        return False
    ensure_index(archive)
    try:
        now = set(target_instances(archive, plan.level, plan.target))
    except (NoSuchStudyError, NoSuchInstanceError):
        now = set()
    return now != {item.key for item in plan.instances}


def _views_now(archive: Archive, plan: UpdatePlan) -> dict[str, ServedStudy]:
    """The planned studies as they are now (under the lease): as planned when nothing was
    committed since, else read again; the target must name the instances it named when
    planned (:func:`target_changed`), each still at the revision it was planned from
    (optimistic concurrency)."""
    if target_changed(archive, plan):
        raise StaleVersionError(
            f"the {plan.level} has other instances than when the update was planned (another "
            "writer added or removed some); run it again"
        )
    if generation(archive.storage) == plan.generation and set(plan.studies) <= set(plan.views):
        views = plan.views
    else:
        views = {s: read_served_study(archive, archive.storage, s) for s in plan.studies}
    for item in plan.instances:
        view = views[item.key.study]
        member = view.members.get(item.key.sop)
        entry = view.edits.instances.get(item.key.sop)
        if member is None or member.facts.series != item.key.series:
            raise StaleVersionError(
                f"SOPInstanceUID {item.key.sop} changed since the update was planned "
                "(deleted?); run it again"
            )
        revision = entry.revision if entry is not None else 0
        if revision != item.revision_before:
            raise StaleVersionError(
                f"SOPInstanceUID {item.key.sop} was changed by another update (revision "
                f"{revision}) since this one was planned; run it again"
            )
    return views


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
