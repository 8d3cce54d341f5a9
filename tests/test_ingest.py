"""Ingest behaviour on generated data: growth, re-ingest, replace, determinism, reindex."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from dicomweb_archive import Archive, ingest, reconstruct_p10, reindex
from dicomweb_archive.ops.ingest_types import PipelineOptions
from dicomweb_archive.store.keys import STUDIES_INDEX, StoreKeys
from tests.factory import uid, write_ct, write_series
from tests.stores import (
    etags,
    index_dump,
    ingested,
    keys_under,
    read_json,
    size,
    tree_hashes,
)

KEYS = StoreKeys()


@pytest.fixture
def two_studies(tmp_path: Path) -> list[Path]:
    first = write_series(tmp_path / "in" / "a", count=3, patient_id="P1")
    second = write_series(tmp_path / "in" / "b", count=2, patient_id="P2")
    multi = write_ct(
        tmp_path / "in" / "b" / "multi.dcm",
        study=uid("9.1"),
        series=uid("9.2"),
        sop=uid("9.3"),
        frames=4,
        rows=17,
        columns=9,
    )
    return [*first, *second, multi]


def test_store_files_and_counts(two_studies: list[Path], tmp_path: Path, store: str) -> None:
    """Query files carry the QIDO-RS counts and ModalitiesInStudy."""
    with Archive.open_or_create(store) as archive:
        report = ingest(archive, [tmp_path / "in"])
    assert report.ok and report.instances == 6 and len(report.studies) == 3
    studies = read_json(store, STUDIES_INDEX)
    assert len(studies) == 3
    by_uid = {s["0020000D"]["Value"][0]: s for s in studies}
    multi = by_uid[uid("9.1")]
    assert multi["00201206"]["Value"] == [1]
    assert multi["00201208"]["Value"] == [1]
    assert multi["00080061"] == {"vr": "CS", "Value": ["CT"]}
    frames = keys_under(store, KEYS.frames_dir(uid("9.1"), uid("9.2"), uid("9.3")))
    assert [k.rsplit("/", 1)[1] for k in frames] == ["1.mht", "2.mht", "3.mht", "4.mht"]
    series = read_json(store, KEYS.series_index(uid("9.1")))
    assert series[0]["00201209"]["Value"] == [1]


def test_reingest_changes_nothing(two_studies: list[Path], tmp_path: Path, store: str) -> None:
    """Ingesting the same files again leaves every byte and row as it was."""
    ingested(store, [tmp_path / "in"])
    before, rows = tree_hashes(store, private=False), index_dump(store)
    with Archive.open(store) as archive:
        report = ingest(archive, [tmp_path / "in"])
    assert {r.status for r in report.results} == {"unchanged"}
    assert tree_hashes(store) == before
    assert index_dump(store) == rows


def test_new_instance_updates_only_its_study(tmp_path: Path, store: str) -> None:
    """A new instance of a study rewrites that study's files, not the other studies'."""
    a = write_series(tmp_path / "a", count=2, patient_id="P1")
    b = write_series(tmp_path / "b", count=2, patient_id="P2")
    ingested(store, [*a, *b])
    study_b = _study_of(b[0])
    b_files = etags(store, KEYS.study(study_b))
    extra = write_series(tmp_path / "a", count=3, patient_id="P1", prefix="XX")[2]
    with Archive.open(store) as archive:
        report = ingest(archive, [extra])
        assert archive.index.counts()["instances"] == 5
    assert report.instances == 1
    study_a = _study_of(a[0])
    assert read_json(store, KEYS.study_index(study_a))[0]["00201208"]["Value"] == [3]
    assert len(read_json(store, KEYS.series_metadata(study_a, _series_of(a[0])))) == 3
    assert etags(store, KEYS.study(study_b)) == b_files


def _study_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def _series_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def test_duplicate_sop_is_reported_then_replaced(tmp_path: Path, store: str) -> None:
    """A different file with a stored SOP Instance UID fails unless --replace is given."""
    keys = {"study": uid("1.1"), "series": uid("1.2"), "sop": uid("1.3")}
    first = write_ct(tmp_path / "one.dcm", seed=1, **keys)
    second = write_ct(tmp_path / "two.dcm", seed=2, **keys)
    with Archive.open_or_create(store) as archive:
        ingest(archive, [first])
        report = ingest(archive, [second])
        (result,) = report.failures
        assert "already stored" in (result.error or "") and str(second) in (result.error or "")
        assert reconstruct_p10(archive, uid("1.3")) == first.read_bytes()
        report = ingest(archive, [second], replace=True)
        assert report.results[0].status == "replaced"
        assert reconstruct_p10(archive, uid("1.3")) == second.read_bytes()


def test_replace_moves_instance_between_studies(tmp_path: Path, store: str) -> None:
    """Replacing with a file of another study removes the old study when it empties."""
    old = write_ct(tmp_path / "old.dcm", study=uid("2.1"), series=uid("2.2"), sop=uid("2.3"))
    new = write_ct(tmp_path / "new.dcm", study=uid("3.1"), series=uid("3.2"), sop=uid("2.3"))
    with Archive.open_or_create(store) as archive:
        ingest(archive, [old])
        ingest(archive, [new], replace=True)
        assert archive.index.counts() == {
            "patients": 1,
            "studies": 1,
            "series": 1,
            "instances": 1,
        }
    assert not keys_under(store, KEYS.study(uid("2.1")))
    assert [s["0020000D"]["Value"][0] for s in read_json(store, STUDIES_INDEX)] == [uid("3.1")]


def test_deterministic_whatever_the_order(
    two_studies: list[Path], new_store: Callable[[str], str]
) -> None:
    """Two ingests of the same files in different orders and batches give identical stores."""
    one, two = new_store("one"), new_store("two")
    ingested(one, two_studies)
    reversed_files = list(reversed(two_studies))
    ingested(two, reversed_files[:2])
    ingested(two, reversed_files[2:])
    assert tree_hashes(one) == tree_hashes(two)
    assert index_dump(one) == index_dump(two)


def test_reindex_rebuilds_the_same_index(
    two_studies: list[Path], tmp_path: Path, store: str
) -> None:
    """An index rebuilt from the files alone equals the one ingest wrote."""
    ingested(store, [tmp_path / "in"])
    written = index_dump(store)
    with Archive.open(store) as archive:
        archive.index.replace_studies([], clear_first=True)
        archive.index.replace_audit([])
        assert archive.index.counts()["instances"] == 0
        report = reindex(archive)
    assert (report.studies, report.instances) == (3, 6)
    assert index_dump(store) == written


def test_store_size_close_to_input(tmp_path: Path, store: str) -> None:
    """Without recompression the store adds little to the input (no frame copies in info)."""
    files = write_series(tmp_path / "in", count=10, rows=256, columns=256)
    ingested(store, files, options=PipelineOptions(recompression=None))
    size_in = sum(p.stat().st_size for p in files)
    assert size(store) <= 1.10 * size_in


@pytest.mark.local
def test_input_directory_inside_store_is_skipped(tmp_path: Path) -> None:
    """Ingesting a directory that contains the store never reads the store itself."""
    write_series(tmp_path / "data", count=1)
    store = tmp_path / "data" / "store"
    ingested(str(store), [tmp_path / "data"])
    with Archive.open(store) as archive:
        report = ingest(archive, [tmp_path / "data"])
    assert report.ok and [r.status for r in report.results] == ["unchanged"]
    shutil.rmtree(store)


def test_write_p10_streams_the_original(tmp_path: Path, store: str) -> None:
    """write_p10 streams the rebuilt file; an unknown SOP Instance UID is a clear error."""
    import io

    from dicomweb_archive import write_p10
    from dicomweb_archive.errors import NoSuchInstanceError

    path = write_ct(tmp_path / "one.dcm", study=uid(1), series=uid(2), sop=uid(3), frames=3)
    with Archive.open_or_create(store) as archive:
        ingest(archive, [path])
        out = io.BytesIO()
        assert write_p10(archive, uid(3), out) == path.stat().st_size
        assert out.getvalue() == path.read_bytes()
        with pytest.raises(NoSuchInstanceError, match=uid(99)):
            reconstruct_p10(archive, uid(99))
