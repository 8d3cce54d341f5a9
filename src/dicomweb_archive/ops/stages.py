"""The group and study stages of the pipeline (``docs/spec/pipeline.md``).

- group stage (``mkdicomwebdeduplicatedgroup``): combine the deduplicated records of a study's
  instances (its group file, per-instance records, and for instances neither holds their info
  records) into one group file, then notify the study stage;
- study stage (``mkdicomwebstudy``): from the study's instances as they are now
  (``ops/state.py``: metadata as received, edit steps applied), write the series metadata and
  query files, the ``metadata.gz`` of instances that have one, the study's index rows and
  ``studies/index.json.gz``.

Without explicit studies, each stage processes the studies named in its notifications. The
study stage also groups a study whose group notification is pending (both are needed for the
study to be complete). Studies are processed in chunks, each chunk one transaction
(``store/journal.py``): the served files, the index and the notifications change together.
A study that cannot be built is left out of its chunk, reported and left pending; the other
studies go on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import ArchiveError, NoSuchObjectError
from dicomweb_archive.model.tags import STUDY_INSTANCE_UID_KEY
from dicomweb_archive.model.uid import check_uid
from dicomweb_archive.ops.reindex import ensure_index
from dicomweb_archive.ops.state import StudyState, read_study_state
from dicomweb_archive.ops.study import (
    group_by_series,
    put_if_changed,
    stage_study,
    study_rows,
)
from dicomweb_archive.store import notify
from dicomweb_archive.store.dedup import StudyRecords, make_record, stage_group
from dicomweb_archive.store.instance import (
    bulk_in_use,
    bulk_objects,
    instance_objects,
    uncommitted_instances,
)
from dicomweb_archive.store.journal import Transaction
from dicomweb_archive.store.keys import STUDIES_INDEX
from dicomweb_archive.store.storage import from_json_gz, json_gz

JsonObject = dict[str, Any]
#: Studies per transaction: bounds a journal's size (and the index rows it carries).
CHUNK = 100


@dataclass(slots=True)
class StageReport:
    """The studies a stage processed, and those it could not (study -> why)."""

    studies: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    exceptions: dict[str, BaseException] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def merge(self, other: StageReport) -> None:
        self.studies += [s for s in other.studies if s not in self.studies]
        self.failures.update(other.failures)
        self.exceptions.update(other.exceptions)


def group_studies(
    archive: Archive,
    studies: Iterable[str] | None = None,
    *,
    remove_instance_files: bool = False,
) -> StageReport:
    """Run the group stage on ``studies`` (default: those notified)."""
    with archive.writing("group stage"):
        return run_stages(
            archive, studies, group=True, study=False, remove_instance_files=remove_instance_files
        )


def build_studies(archive: Archive, studies: Iterable[str] | None = None) -> StageReport:
    """Run the study stage on ``studies`` (default: those notified)."""
    with archive.writing("study stage"):
        return run_stages(archive, studies, group=False, study=True)


def complete_pending(archive: Archive) -> StageReport | None:
    """Finish the group and study stages an interrupted or split run left pending (every
    command that changes instances does this first, so that it sees every instance)."""
    ensure_index(archive)
    storage = archive.storage
    if not any(notify.pending(storage, stage) for stage in notify.STAGES):
        return None
    with archive.writing("pending stages"):
        return run_stages(archive, None, group=True, study=True)


def run_stages(
    archive: Archive,
    studies: Iterable[str] | None,
    *,
    group: bool,
    study: bool,
    remove_instance_files: bool = False,
) -> StageReport:
    """The group and/or study stages under the lease, chunk by chunk (see the docstring).
    An index cache another machine's writes made stale while this writer waited for the
    lease is rebuilt first (``ensure_index``): the study list is made from the index."""
    ensure_index(archive)
    if studies is None:
        stages = ([notify.GROUP] if group else []) + ([notify.STUDY] if study else [])
        todo = sorted({s for stage in stages for s in notify.pending(archive.storage, stage)})
    else:
        todo = sorted({check_uid(s, "StudyInstanceUID", source="argument") for s in studies})
    report = StageReport()
    for start in range(0, len(todo), CHUNK):
        txn = archive.transaction()
        report.merge(
            _stage_chunk(
                archive, txn, todo[start : start + CHUNK], group, study, remove_instance_files
            )
        )
        archive.commit(txn)
    return report


def run_stages_in(
    archive: Archive,
    txn: Transaction,
    studies: list[str],
    *,
    refresh: frozenset[str] = frozenset(),
) -> StageReport:
    """Both stages on ``studies`` inside a change's transaction; a study that cannot be built
    raises (the change fails whole). ``refresh``: instances whose info record the change
    replaced or restored (their deduplicated records are made again)."""
    return _stage_chunk(archive, txn, studies, True, True, False, strict=True, refresh=refresh)


def _stage_chunk(  # noqa: PLR0917 - one internal call shape
    archive: Archive,
    txn: Transaction,
    chunk: list[str],
    group: bool,
    study: bool,
    remove: bool,
    *,
    strict: bool = False,
    refresh: frozenset[str] = frozenset(),
) -> StageReport:
    report = StageReport()
    built: dict[str, JsonObject | None] = {}
    for uid in chunk:
        point = txn.savepoint()
        try:
            query = _one_study(
                archive, txn, uid, group=group, study=study, remove=remove, refresh=refresh
            )
        except Exception as exc:  # one study must not stop the others
            if strict:
                raise
            txn.rollback(point)
            report.failures[uid] = _reason(exc)
            report.exceptions[uid] = exc
            continue
        report.studies.append(uid)
        if study:
            built[uid] = query
    if built:
        stage_study_list(archive, txn, built)
    return report


def _one_study(
    archive: Archive,
    txn: Transaction,
    uid: str,
    *,
    group: bool,
    study: bool,
    remove: bool,
    refresh: frozenset[str],
) -> JsonObject | None:
    """Stage one study's group and/or study stage; returns its study query object (None: the
    study is empty)."""
    keys = archive.keys
    leftovers = uncommitted_instances(txn, keys, uid)  # no stage 1 runs beside a stage
    for leftover in leftovers:
        for name in instance_objects(txn, keys, leftover):
            txn.delete(name)
    if leftovers:  # and the bulk data only they had written
        used = bulk_in_use(txn, keys, uid)
        for sha, name in bulk_objects(txn, keys, uid).items():
            if sha not in used:
                txn.delete(name)
    grouping = group or uid in notify.pending(txn, notify.GROUP)
    state = read_study_state(txn, keys, uid, refresh=refresh)
    if grouping:
        records = _records_of(state, refresh)
        stage_group(txn, keys, uid, records)
        if remove:
            for name in txn.children(keys.instance_records(uid)):
                txn.delete(keys.instance_records(uid) + name)
        if txn.head(keys.notification(notify.GROUP, uid)) is not None:
            notify.done(txn, notify.GROUP, uid)
        if not study:
            notify.notify_in(txn, notify.STUDY, uid)
    if not study:
        return None
    query = build_study(archive, txn, state)
    if txn.head(keys.notification(notify.STUDY, uid)) is not None:
        notify.done(txn, notify.STUDY, uid)
    return query


def _records_of(state: StudyState, refresh: frozenset[str]) -> StudyRecords:
    """The study's deduplicated records for its committed instances: those it has, and new
    ones made from the info records of the others."""
    records = state.records
    for sop in list(records.records):
        instance = state.instances.get(sop)
        if instance is None or records.records[sop]["series_instance_uid"] != instance.key.series:
            del records.records[sop]  # deleted, moved by a replace, or never committed
    for sop, instance in state.instances.items():
        if sop not in records.records or sop in refresh:
            record, extracts = make_record(instance.received, instance.info)
            records.records[sop] = record
            records.extracts.update(extracts)
    return records


def build_study(archive: Archive, txn: Transaction, state: StudyState) -> JsonObject | None:
    """A study's derived files and index rows from its instances' metadata now, into
    ``txn`` (only what changes is written); each instance's own ``metadata.gz``, where it has
    one, kept current. Returns the study's query object (None: the study is empty)."""
    keys = archive.keys
    for instance in state.instances.values():
        if instance.metadata_file:
            key = instance.key
            put_if_changed(
                txn,
                keys.instance_metadata(key.study, key.series, key.sop),
                json_gz([instance.metadata]),
            )
    rows = study_rows(keys, state.study, group_by_series(state.members()))
    stage_study(txn, keys, state.study, rows)
    return rows.study["query_json"] if rows.study is not None else None


def stage_study_list(
    archive: Archive, txn: Transaction, built: dict[str, JsonObject | None]
) -> None:
    """``studies/index.json.gz``: the list as it is, with these studies' objects applied (the
    index's study objects when there is no list yet, or it is unreadable). Reading the list
    rather than the index keeps a run over many studies linear: each chunk of studies
    patches it."""
    objects = {_study_uid(obj): obj for obj in _study_list(archive, txn)}
    for uid, obj in built.items():
        if obj is None:
            objects.pop(uid, None)
        else:
            objects[uid] = obj
    listing = [objects[uid] for uid in sorted(objects)]
    if listing or txn.head(STUDIES_INDEX) is not None:
        put_if_changed(txn, STUDIES_INDEX, json_gz(listing))


def _study_list(archive: Archive, txn: Transaction) -> list[JsonObject]:
    try:
        listing = from_json_gz(txn.get(STUDIES_INDEX))
    except NoSuchObjectError:
        listing = None
    except (OSError, ValueError):  # damaged: made again from the index
        listing = None
    if (
        isinstance(listing, list)
        and all(isinstance(obj, dict) for obj in listing)
        and (  # the index holds the committed state: a list of another size is made again
            STUDIES_INDEX in txn.staged or len(listing) == archive.index.counts()["studies"]
        )
    ):
        return listing
    return list(archive.index.study_query_objects())


def _study_uid(obj: JsonObject) -> str:
    return str(obj[STUDY_INSTANCE_UID_KEY]["Value"][0])


def _reason(exc: Exception) -> str:
    if isinstance(exc, ArchiveError):
        return str(exc)
    return "an unexpected error stopped it (run with --verbose for the details)"
