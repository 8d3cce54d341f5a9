"""Rebuild the SQLite index from the store's files alone (the files are the truth)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dicomweb_archive.index.database import Index
from dicomweb_archive.ops.study import study_rows
from dicomweb_archive.store.instance import study_uids
from dicomweb_archive.store.journal import read_audit
from dicomweb_archive.store.layout import StoreLayout
from dicomweb_archive.store.lock import write_lock


@dataclass(frozen=True, slots=True)
class ReindexReport:
    studies: int
    series: int
    instances: int


def reindex(store: str | os.PathLike[str]) -> ReindexReport:
    """Replace every index row with rows read from the study and instance files."""
    layout = StoreLayout(Path(store))
    with write_lock(layout.lock_path), Index(layout.index_path) as index:
        rows = [study_rows(layout, study, write=False) for study in study_uids(layout)]
        present = [r for r in rows if r.study is not None]
        index.replace_studies(
            ((r.study_instance_uid, r.study, r.series, r.instances) for r in present),
            clear_first=True,
        )
        index.add_audit(read_audit(layout))
        return ReindexReport(
            studies=len(present),
            series=sum(len(r.series) for r in present),
            instances=sum(len(r.instances) for r in present),
        )
