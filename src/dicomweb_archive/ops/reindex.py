"""Rebuild the index from the store's objects alone (the files are the truth).

Every committed instance (its info record and edit steps, ``ops/state.py``) gives the study,
series and instance rows, and every change record the audit rows. A study waiting for the
study stage is left to that stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import ArchiveError
from dicomweb_archive.ops.state import read_study_state
from dicomweb_archive.ops.study import group_by_series, study_rows
from dicomweb_archive.store import notify
from dicomweb_archive.store.instance import study_uids


@dataclass(frozen=True, slots=True)
class ReindexReport:
    studies: int
    series: int
    instances: int


def ensure_index(archive: Archive) -> ReindexReport | None:
    """Rebuild the index when it lost its rows (an upgraded store, a deleted index file)."""
    if not archive.index_needs_rebuild:
        return None
    return reindex(archive)


def reindex(archive: Archive) -> ReindexReport:
    """Replace every index row with rows read from the store."""
    with archive.writing("reindex"):
        storage, keys = archive.storage, archive.keys
        pending = {s for stage in notify.STAGES for s in notify.pending(storage, stage)}
        rows = []
        for study in study_uids(storage):
            try:
                members = read_study_state(storage, keys, study).members()
                rows.append(study_rows(keys, study, group_by_series(members)))
            except ArchiveError:
                if study not in pending:
                    raise
                # instances not yet materialized by the study stage: it indexes them
        present = [r for r in rows if r.study is not None]
        index = archive.index
        index.replace_studies((r.update() for r in present), clear_first=True)
        index.replace_audit(archive.audit_rows())
        archive.index_rebuilt()
        return ReindexReport(
            studies=len(present),
            series=sum(len(r.series) for r in present),
            instances=sum(len(r.instances) for r in present),
        )
