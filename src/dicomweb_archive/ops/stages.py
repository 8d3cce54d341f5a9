"""The group and study stages of the pipeline (``docs/spec/pipeline.md``).

- group stage (``mkdicomwebdeduplicatedgroup``): combine a study's per-instance records into
  one group file, then notify the study stage;
- study stage (``mkdicomwebstudy``): from the study's records (group file, newer per-instance
  records, and instance directories written with ``-i`` only), write each instance's
  ``metadata.gz`` and ``info.json.gz``, the series metadata and query files, and the study's
  index rows; then rewrite ``studies/index.json.gz``.

Without explicit studies, each stage processes the studies named in its notifications.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomweb_archive.index.database import Index
from dicomweb_archive.model.uid import check_uid
from dicomweb_archive.ops.study import group_by_series, study_rows
from dicomweb_archive.store import notify
from dicomweb_archive.store.dedup import (
    StudyRecords,
    read_study_records,
    remove_instance_records,
    write_group,
)
from dicomweb_archive.store.files import gzip_bytes, to_json_bytes, write_bytes, write_json_gz
from dicomweb_archive.store.instance import instance_keys, read_info, read_instance_metadata
from dicomweb_archive.store.journal import read_audit
from dicomweb_archive.store.layout import StoreLayout
from dicomweb_archive.store.lock import write_lock
from dicomweb_archive.store.recovery import recover

JsonObject = dict[str, Any]


@dataclass(slots=True)
class StageReport:
    """The studies a stage processed."""

    studies: list[str] = field(default_factory=list)


def group_studies(
    store: str | os.PathLike[str] | StoreLayout,
    studies: Iterable[str] | None = None,
    *,
    remove_instance_files: bool = False,
) -> StageReport:
    """Run the group stage on ``studies`` (default: those notified)."""
    layout = _layout(store)
    with write_lock(layout.lock_path):
        recover(layout)
        return group_locked(layout, studies, remove_instance_files=remove_instance_files)


def group_locked(
    layout: StoreLayout,
    studies: Iterable[str] | None,
    *,
    remove_instance_files: bool,
    read: dict[str, StudyRecords] | None = None,
) -> StageReport:
    """The group stage under the store lock; records read are left in ``read`` for reuse."""
    todo = _studies(layout, studies, notify.GROUP)
    for study in todo:
        records = read_study_records(layout, study)
        for sop, record in list(records.records.items()):
            if not layout.instance(study, record["series_instance_uid"], sop).is_dir():
                del records.records[sop]  # deleted, or moved by a replace: not in the study
        if read is not None:
            read[study] = records
        write_group(layout, study, records)
        if remove_instance_files:
            remove_instance_records(layout, study)
        notify.notify(layout, notify.STUDY, study)
        notify.done(layout, notify.GROUP, study)
    return StageReport(todo)


def build_studies(
    store: str | os.PathLike[str] | StoreLayout, studies: Iterable[str] | None = None
) -> StageReport:
    """Run the study stage on ``studies`` (default: those notified)."""
    layout = _layout(store)
    with write_lock(layout.lock_path):
        recover(layout)
        return build_locked(layout, studies)


def build_locked(
    layout: StoreLayout,
    studies: Iterable[str] | None,
    *,
    known: dict[str, StudyRecords] | None = None,
) -> StageReport:
    """The study stage under the store lock; ``known`` holds records the group stage just
    read (they are the same as on disk)."""
    todo = _studies(layout, studies, notify.STUDY)
    known = known or {}
    with Index(layout.index_path) as index:
        rows = []
        for study in todo:
            records = known.get(study) or read_study_records(layout, study)
            grouped = group_by_series(_materialize(layout, study, records))
            rows.append(study_rows(layout, study, write=True, grouped=grouped))
        index.replace_studies((r.study_instance_uid, r.study, r.series, r.instances) for r in rows)
        index.add_audit(read_audit(layout))  # the SQLite copy of the append-only audit log
        if todo or not layout.studies_index.exists():
            write_json_gz(layout.studies_index, index.study_query_objects())
    for study in todo:
        notify.done(layout, notify.STUDY, study)
    return StageReport(todo)


def _materialize(
    layout: StoreLayout, study: str, records: StudyRecords
) -> list[tuple[JsonObject, JsonObject]]:
    """Every instance of the study as (metadata, info), written to its instance directory.

    The deduplicated records are the truth where they exist; instance directories written by
    the instances stage alone fill in the rest. Files whose bytes would not change are left
    untouched.
    """
    pairs: dict[str, tuple[JsonObject, JsonObject]] = {}
    for key in instance_keys(layout, study):
        if key.sop not in records.records:
            pairs[key.sop] = (read_instance_metadata(layout, key), read_info(layout, key))
    for sop in records.records:
        metadata, info = records.instance(sop)
        pairs[sop] = (metadata, info)
        directory = layout.instance(study, info["series_instance_uid"], sop)
        if not directory.is_dir():
            continue  # frames not written yet (an interrupted instances stage): skip
        _write_if_changed(directory / "metadata.gz", gzip_bytes(to_json_bytes([metadata])))
        _write_if_changed(directory / "info.json.gz", gzip_bytes(to_json_bytes(info)))
    return [
        pair
        for pair in pairs.values()
        if layout.instance(study, pair[1]["series_instance_uid"], pair[1]["sop_instance_uid"])
        .joinpath("info.json.gz")
        .exists()
    ]


def _write_if_changed(path: Path, data: bytes) -> None:
    try:
        if path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    write_bytes(path, data)


def _studies(layout: StoreLayout, studies: Iterable[str] | None, stage: str) -> list[str]:
    if studies is None:
        return notify.pending(layout, stage)
    return sorted({check_uid(s, "StudyInstanceUID", source="argument") for s in studies})


def _layout(store: str | os.PathLike[str] | StoreLayout) -> StoreLayout:
    return store if isinstance(store, StoreLayout) else StoreLayout(Path(store))
