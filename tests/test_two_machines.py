"""Two writers of one store, each with its own view of the index: on object storage without a
shared index each machine keeps an SQLite cache of it (``archive.py``). A writer that waited
for the lease while another committed must act on the store as it is when it gets the lease
(found by an outside tester: an edit of a study left out the instances an ingest had just
added to it, a delete too, and a second machine's ingest rewrote the study list without the
first machine's studies). "Machine B" runs in a subprocess with a cache of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from dicomweb_archive import Archive
from dicomweb_archive.archive import CACHE_ENV
from dicomweb_archive.errors import StaleVersionError
from dicomweb_archive.ops.delete import apply_delete, plan_delete
from dicomweb_archive.ops.reindex import ensure_index
from dicomweb_archive.ops.update import apply_update, plan_update, update
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.keys import STUDIES_INDEX
from dicomweb_archive.store.storage import from_json_gz
from tests.factory import write_ct, write_series
from tests.stores import ingested

pytestmark = pytest.mark.shared  # another process opens the store

MACHINE_B = """
import sys
from dicomweb_archive import Archive
from dicomweb_archive.ops.ingest import ingest
with Archive.open(sys.argv[1]) as archive:
    report = ingest(archive, sys.argv[2:])
print(*(r.error for r in report.results if r.error), file=sys.stderr)
sys.exit(0 if report.ok else 1)
"""


def _machine_b(tmp_path: Path, store: str, *files: Path) -> None:
    env = {**os.environ, CACHE_ENV: str(tmp_path / "machine-b")}
    done = subprocess.run(
        [sys.executable, "-c", MACHINE_B, store, *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _study_series(path: Path) -> tuple[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def _more_of(tmp_path: Path, first: Path, count: int) -> list[Path]:
    """``count`` more instances of ``first``'s series (other SOP Instance UIDs)."""
    study, series = _study_series(first)
    return [
        write_ct(
            tmp_path / "more" / f"MO{number}.dcm",
            study=study,
            series=series,
            sop=f"1.2.3.{9000 + number}",
            instance_number=100 + number,
        )
        for number in range(count)
    ]


def test_an_edit_covers_instances_added_after_it_was_planned(tmp_path: Path, store: str) -> None:
    """Planned on 3 instances of a study, an edit finds 2 more added by machine B before it
    got the lease: applying the old plan is refused (it would leave them out), planning again
    edits all 5."""
    files = write_series(tmp_path / "in", count=3)
    assert ingested(store, files).ok
    study, _ = _study_series(files[0])
    with Archive.open(store) as archive:
        plan = plan_update(archive, "study", study, ["StudyDescription=EDITED"])
        assert len(plan.instances) == 3
        _machine_b(tmp_path, store, *_more_of(tmp_path, files[0], 2))
        with pytest.raises(StaleVersionError, match="other instances"):
            apply_update(archive, plan)
        report = update(archive, "study", study, ["StudyDescription=EDITED"])
        assert report.plan.size == 5
        assert verify(archive).ok


def test_a_delete_covers_instances_added_after_it_was_planned(tmp_path: Path, store: str) -> None:
    """A study delete planned on 3 instances removes the 2 machine B added meanwhile too: the
    study is gone, not left with B's instances."""
    files = write_series(tmp_path / "in", count=3)
    assert ingested(store, files).ok
    study, _ = _study_series(files[0])
    with Archive.open(store) as archive:
        plan = plan_delete(archive, "study", study)
        _machine_b(tmp_path, store, *_more_of(tmp_path, files[0], 2))
        report = apply_delete(archive, plan)
        assert report.plan.size == 5
        assert archive.index.locate("study", study) == []
        assert verify(archive).ok


def test_a_stale_machine_keeps_the_other_machines_studies_in_the_study_list(
    tmp_path: Path, store: str
) -> None:
    """Machine B's cache was current, then this machine added a study: B's next ingest
    (another study) rewrites the study list with every study, and verify finds it agrees."""
    first = write_series(tmp_path / "a", count=1, study="1.2.3.101", series="1.2.3.101.1")
    assert ingested(store, first).ok
    _machine_b(tmp_path, store, *first)  # B's cache made (the file is stored already)
    second = write_series(tmp_path / "b", count=1, study="1.2.3.102", series="1.2.3.102.1")
    assert ingested(store, second).ok
    third = write_series(tmp_path / "c", count=1, study="1.2.3.103", series="1.2.3.103.1")
    _machine_b(tmp_path, store, *third)
    with Archive.open(store) as archive:
        listed = from_json_gz(archive.storage.get(STUDIES_INDEX))
        uids = sorted(s["0020000D"]["Value"][0] for s in listed)
        assert uids == ["1.2.3.101", "1.2.3.102", "1.2.3.103"]
        ensure_index(archive)  # as every command does first: this machine's cache is stale now
        assert verify(archive).ok
