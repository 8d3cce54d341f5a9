"""Verify a store: integrity, index agreement, orphans, and each instance's equivalence class.

Checks (``docs/spec/export-verify.md``), per study:

- every committed instance's objects, its rebuild from the store alone against the SHA-256
  of the ingested file, recompressed frames against the pixels recorded at ingest, and with
  ``deep`` its metadata derived again and its frames against its Image Pixel Module
  (``ops/verify_instance.py``);
- no stray object, no bulk data no instance refers to;
- the series metadata, query files and index rows equal what the instances give, and the
  deduplicated records recombine to them.

A study waiting for a stage is reported ``pending`` (its derived files are not compared), an
instance being written or left by an interrupted writer ``interrupted``, and a study a change
was applied to while it was checked (checked twice) ``busy``: those say work is not done,
not that anything differs. Store-wide: the study list against the index, orphans, and every
change record's set-aside objects (what a revert needs) are there.

``against`` compares the store with a directory of original P10 files by SOP Instance UID.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import ArchiveError, StoreError
from dicomweb_archive.index.rows import Facts
from dicomweb_archive.model.tags import SOP_INSTANCE_UID_KEY
from dicomweb_archive.model.uid import check_uid, is_conformant_uid, is_safe_uid
from dicomweb_archive.ops.against import verify_against
from dicomweb_archive.ops.study import Member, group_by_series, study_rows
from dicomweb_archive.ops.verify_instance import (
    INCOMPLETE,
    INCOMPLETE_CLASS,
    Finding,
    InstanceResult,
    Verdict,
    verify_instance,
)
from dicomweb_archive.store import notify
from dicomweb_archive.store.changes import change_ids, read_change
from dicomweb_archive.store.dedup import read_study_records
from dicomweb_archive.store.edit_state import read_edit_state
from dicomweb_archive.store.instance import (
    InstanceKey,
    bulk_objects,
    instance_keys,
    series_uids,
    study_uids,
    uncommitted_instances,
)
from dicomweb_archive.store.journal import change_in_progress, generation_marker
from dicomweb_archive.store.keys import JOURNAL, STUDIES, STUDIES_INDEX, THUMBNAIL
from dicomweb_archive.store.recovery import uncommitted_aside
from dicomweb_archive.store.storage import from_json_gz

JsonObject = dict[str, Any]
#: Instances checked at once (two cores, as ingest plans for).
VERIFY_THREADS = 2
#: with the thumbnails, derived files (``ops/render.py``) known here and not compared
SERIES_FILES = {"metadata.gz", "series-singleton.json.gz", "instances/", THUMBNAIL}
STUDY_FILES = {"index.json.gz", "series/", "bulkdata/", THUMBNAIL}
#: the flag of an instance whose Study, Series or SOP Instance UID is stored although it is not
#: conformant (PS3.5 9.1; ``docs/spec/store-layout.md``)
NONCONFORMANT_UID = "nonconformant-uid"

__all__ = ["Finding", "Verdict", "VerifyReport", "verify"]


@dataclass(slots=True)
class VerifyReport:
    findings: list[Finding] = field(default_factory=list)
    instances: list[Verdict] = field(default_factory=list)
    against: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def differences(self) -> list[Finding]:
        return [f for f in self.findings if f.kind not in INCOMPLETE]

    @property
    def incomplete(self) -> list[Finding]:
        return [f for f in self.findings if f.kind in INCOMPLETE]

    @property
    def ok(self) -> bool:
        """Nothing differs (work may still be pending: see :attr:`complete`)."""
        return not self.differences

    @property
    def complete(self) -> bool:
        return not self.incomplete

    @property
    def incomplete_instances(self) -> list[Verdict]:
        """Instances whose received file ends inside Pixel Data (stored as received)."""
        return [v for v in self.instances if v.equivalence == INCOMPLETE_CLASS]

    def add(self, kind: str, where: str, message: str) -> None:
        self.findings.append(Finding(kind, where, message))

    @property
    def flags(self) -> dict[str, int]:
        """How many instances carry each flag (a flag is not a difference)."""
        counts: dict[str, int] = {}
        for verdict in self.instances:
            for flag in verdict.flags:
                counts[flag] = counts.get(flag, 0) + 1
        return counts

    def to_json(self) -> JsonObject:
        classes: dict[str, int] = {}
        for verdict in self.instances:
            classes[verdict.equivalence] = classes.get(verdict.equivalence, 0) + 1
        return {
            "ok": self.ok,
            "complete": self.complete,
            "instances": len(self.instances),
            "classes": classes,
            "flags": self.flags,
            "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 3),
            "against": self.against,
            "findings": [
                {"kind": f.kind, "where": f.where, "message": f.message} for f in self.findings
            ],
            "verdicts": [
                {
                    "study": v.study,
                    "series": v.series,
                    "sop": v.sop,
                    "equivalence": v.equivalence,
                    **({"reason": v.reason} if v.reason else {}),
                    **({"flags": list(v.flags)} if v.flags else {}),
                }
                for v in self.instances
            ],
        }


ProgressHook = Callable[[Verdict], None]


def verify(
    archive: Archive,
    *,
    studies: list[str] | None = None,
    deep: bool = False,
    against: Path | None = None,
    progress: ProgressHook | None = None,
) -> VerifyReport:
    """Check the store (or some studies of it); never changes anything."""
    started = time.perf_counter()
    report = VerifyReport()
    on_disk = study_uids(archive.storage)
    chosen = (
        [check_uid(s, "StudyInstanceUID", source="argument") for s in studies]
        if studies
        else on_disk
    )
    for study in chosen:
        _verify_study_twice(archive, study, report, deep=deep, progress=progress)
    if not studies:
        _verify_store(archive, on_disk, report)
    if against is not None:
        verify_against(archive, against, report)
    report.seconds = time.perf_counter() - started
    return report


def _verify_study_twice(
    archive: Archive, study: str, report: VerifyReport, *, deep: bool, progress: ProgressHook | None
) -> None:
    """Check a study on a state no change was applied to meanwhile: again when one was, and
    say so when one was applied during the second check too."""
    for attempt in range(2):
        before = generation_marker(archive.storage)
        part = VerifyReport()
        _verify_study(archive, study, part, deep=deep)
        if generation_marker(archive.storage) == before and before[0] is None:
            break
        if attempt == 1:
            change = change_in_progress(archive.storage)
            part = VerifyReport()
            if change is not None and archive.storage.lease_holder() is None:
                part.add(
                    "pending",
                    study,
                    f"committed change {change} is not applied yet (its writer was "
                    "interrupted): the next command that writes applies it",
                )
            else:
                what = change or "changes"
                part.add("busy", study, f"changed while it was verified ({what}): verify it again")
    report.findings += part.findings
    report.instances += part.instances
    report.bytes_read += part.bytes_read
    if progress is not None:
        for verdict in part.instances:
            progress(verdict)


def _verify_store(archive: Archive, on_disk: list[str], report: VerifyReport) -> None:
    """Store-wide: the study list, index studies without files, stray objects, pending work,
    and the objects change records keep for revert."""
    storage, index = archive.storage, archive.index
    holder = storage.lease_holder()
    change = change_in_progress(storage)
    if change is not None:  # the study list and the index are compared once it is applied
        what = (
            f"being applied by {holder}"
            if holder
            else "its writer was interrupted: the next command that writes applies it"
        )
        report.add("pending", JOURNAL, f"committed change {change} is not applied yet ({what})")
        _verify_changes(archive, report)
        return
    indexed = {row["study_instance_uid"] for row in index.studies()}
    for study in sorted(indexed - set(on_disk)):
        report.add("index", study, f"study {study} is in the index but not in the store")
    if storage.head(STUDIES_INDEX) is not None:
        if from_json_gz(storage.get(STUDIES_INDEX)) != index.study_query_objects():
            report.add("query", STUDIES_INDEX, "differs from the index")
    elif indexed:
        report.add("missing", STUDIES_INDEX, "the study list is missing")
    for name in storage.children(STUDIES):
        if name != "index.json.gz" and not (name.endswith("/") and is_safe_uid(name[:-1])):
            report.add("orphan", STUDIES + name, "not part of the store layout")
    for stage in notify.STAGES:
        for study in notify.pending(storage, stage):
            what = f"; a write is in progress: {holder}" if holder else ""
            report.add("pending", study, f"the {stage} stage has not processed it yet{what}")
    _verify_changes(archive, report)


def _verify_changes(archive: Archive, report: VerifyReport) -> None:
    """Every change record is readable and the objects it set aside are there; objects set
    aside by a change never committed are reported (the next writer removes them)."""
    storage, keys = archive.storage, archive.keys
    for change_id in uncommitted_aside(storage, keys):
        what = "being made" if storage.lease_holder() else "interrupted"
        report.add(
            "interrupted",
            keys.aside(change_id).rstrip("/"),
            f"set aside by a change {what} before it was committed (no change record); "
            "the next command that writes removes it",
        )
    for change_id in change_ids(storage):
        try:
            record = read_change(storage, keys, change_id)
        except StoreError as exc:
            report.add("corrupt", keys.change(change_id), str(exc))
            continue
        for name in record["aside"]:
            if storage.head(keys.aside(change_id, name)) is None:
                report.add(
                    "missing",
                    keys.aside(change_id, name),
                    f"kept by change {change_id} for revert, but missing",
                )


def _verify_study(archive: Archive, study: str, report: VerifyReport, *, deep: bool) -> None:
    storage, keys = archive.storage, archive.keys
    if not storage.children(keys.study(study)):
        report.add("missing", keys.study(study), "the study is not in the store")
        return
    pending = any(study in notify.pending(storage, stage) for stage in notify.STAGES)
    for name in storage.children(keys.study(study)):
        if name not in STUDY_FILES:
            report.add("orphan", keys.study(study) + name, "not part of the store layout")
    for series in series_uids(storage, study):
        prefix = keys.series(study, series)
        if not is_safe_uid(series):
            report.add("orphan", prefix, "not a series folder")
            continue
        for name in storage.children(prefix):
            if name not in SERIES_FILES:
                report.add("orphan", prefix + name, "not part of the store layout")
    for key in uncommitted_instances(storage, keys, study):
        where = keys.instance(key.study, key.series, key.sop).rstrip("/")
        if pending:  # stage 1 notifies a study before it writes anything of it
            what = "being written" if storage.lease_holder() else "left by an interrupted writer"
            report.add(
                "interrupted",
                where,
                f"{what} (no info record yet); the next command that writes removes it",
            )
        else:  # no write can be under way here: the commit marker was lost
            report.add("missing", where + "/info.json.gz", "the info record is missing")
    keys_now = instance_keys(storage, keys, study)
    try:
        edits = read_edit_state(storage, keys, study)
        steps = {sop: edits.steps_of(sop) for sop in edits.instances}
    except ArchiveError as exc:
        report.add("corrupt", keys.edits(study), str(exc))
        return
    committed = {(key.series, key.sop) for key in keys_now}
    for sop, entry in edits.instances.items():
        if (entry.series, sop) not in committed:
            report.add("orphan", keys.edits(study), f"edits of {sop}, which is not in the study")
    served = {} if pending else _served(archive, study, {key.series for key in keys_now}, report)

    def check(key: InstanceKey) -> InstanceResult:
        entry = edits.instances.get(key.sop)
        own = steps.get(key.sop, []) if entry is not None and entry.series == key.series else []
        return verify_instance(
            archive, key, deep=deep, steps=own, served=None if pending else served.get(key.sop)
        )

    # Instances are checked in parallel (decoding recompressed frames and hashing release the
    # GIL), each into its own result; the results are merged in order.
    with ThreadPoolExecutor(max_workers=VERIFY_THREADS) as pool:
        results: list[InstanceResult] = list(pool.map(check, keys_now))
    pairs = []
    bulk_used: set[str] = set()
    for result in results:
        report.findings += result.findings
        if result.verdict is not None:
            if not all(map(is_conformant_uid, (study, result.verdict.series, result.verdict.sop))):
                result.verdict.flags += (NONCONFORMANT_UID,)
            report.instances.append(result.verdict)
        report.bytes_read += result.bytes_read
        bulk_used |= result.bulk
        if result.pair is not None:
            pairs.append(result.pair)
    for sha, name in bulk_objects(storage, keys, study).items():
        if sha not in bulk_used and pending:  # stage 1 writes bulk data before the info record
            what = "being written" if storage.lease_holder() else "left by an interrupted writer"
            report.add(
                "interrupted",
                name,
                f"bulk data no instance refers to yet, {what}; the next command that writes "
                "removes it",
            )
        elif sha not in bulk_used:
            report.add("orphan", name, "bulk data no instance refers to")
    if pending:
        report.add(
            "pending", study, "waits for the group or study stage: derived files not compared"
        )
        return
    if len(pairs) == len(keys_now):
        _check_derived(archive, study, pairs, report)
        _check_records(archive, study, pairs, report)


def _served(
    archive: Archive, study: str, series: set[str], report: VerifyReport
) -> dict[str, JsonObject]:
    """Every instance's object in its series metadata, by SOP Instance UID (the series
    metadata themselves are compared as a whole by :func:`_check_derived`)."""
    found: dict[str, JsonObject] = {}
    for uid in sorted(series):
        name = archive.keys.series_metadata(study, uid)
        try:
            value = from_json_gz(archive.storage.get(name))
        except ArchiveError:
            continue  # reported missing by _check_derived
        except (OSError, ValueError):
            report.add("corrupt", name, "series metadata is unreadable")
            continue
        for instance in value if isinstance(value, list) else []:
            sop = (instance.get(SOP_INSTANCE_UID_KEY, {}).get("Value") or [None])[0]
            if isinstance(sop, str):
                found[sop] = instance
    return found


def _check_derived(archive: Archive, study: str, pairs: list[Any], report: VerifyReport) -> None:
    """Series metadata, query files and index rows against the instances' metadata."""
    storage = archive.storage
    members = [Member(metadata, Facts.from_info(info)) for metadata, info in pairs]
    expected = study_rows(archive.keys, study, group_by_series(members))
    for key, value in expected.files.items():
        try:
            data = gzip.decompress(storage.get(key))
            actual = data if isinstance(value, bytes) else orjson.loads(data)
        except ArchiveError:
            report.add("missing", key, "derived file is missing")
            continue
        except (OSError, ValueError):
            report.add("corrupt", key, "derived file is unreadable")
            continue
        if actual != value:
            report.add("query", key, "does not agree with the instances")
    stored_rows = archive.index.study_dump(study)
    rows = {
        "studies": [expected.study] if expected.study else [],
        "series": expected.series,
        "instances": expected.instances,
    }
    for table, computed in rows.items():
        normalised = [_normalise(row) for row in computed]
        if sorted(repr(sorted(r.items())) for r in stored_rows[table]) != sorted(
            repr(sorted(r.items())) for r in normalised
        ):
            report.add("index", study, f"the index's {table} rows do not match the files")


def _check_records(archive: Archive, study: str, pairs: list[Any], report: VerifyReport) -> None:
    """The deduplicated records (the pipeline's truth) recombine to the instance files."""
    try:
        records = read_study_records(archive.storage, archive.keys, study)
    except ArchiveError as exc:
        report.add("corrupt", study, f"deduplicated data: {exc}")
        return
    if not records.records:
        return  # written by the instances stage alone, or -C without grouping: nothing to check
    by_sop = {info.sop_instance_uid: info for _metadata, info in pairs}
    for sop in sorted(set(records.records) | set(by_sop)):
        if sop not in records.records or sop not in by_sop:
            report.add("records", sop, "deduplicated records and instance files disagree")
        elif records.instance(sop)[1] != by_sop[sop]:
            report.add("records", sop, "deduplicated record differs from the info record")


def _normalise(row: dict[str, Any]) -> dict[str, Any]:
    """A row as SQLite returns it (JSON columns as text)."""
    return {
        key: orjson.dumps(value).decode() if isinstance(value, dict | list) else value
        for key, value in row.items()
    }
