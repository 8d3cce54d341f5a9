"""Ingest behaviour on generated data: growth, re-ingest, replace, determinism, reindex."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from dicomweb_archive import ingest, reconstruct_p10, reindex
from dicomweb_archive.index.database import Index
from dicomweb_archive.ops.ingest import PipelineOptions
from dicomweb_archive.store.files import read_json_gz
from dicomweb_archive.store.layout import PRIVATE_DIR, StoreLayout
from tests.factory import uid, write_ct, write_series


def tree_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every store file except the private directory (index, lock)."""
    out = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not relative.startswith(PRIVATE_DIR):
            out[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def index_dump(root: Path) -> dict[str, list[dict[str, object]]]:
    with Index(StoreLayout(root).index_path) as index:
        return index.dump()


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


def test_store_files_and_counts(two_studies: list[Path], tmp_path: Path) -> None:
    """Query files carry the QIDO-RS counts and ModalitiesInStudy."""
    store = tmp_path / "store"
    report = ingest([tmp_path / "in"], store)
    assert report.ok and report.instances == 6 and len(report.studies) == 3
    studies = read_json_gz(StoreLayout(store).studies_index)
    assert len(studies) == 3
    by_uid = {s["0020000D"]["Value"][0]: s for s in studies}
    multi = by_uid[uid("9.1")]
    assert multi["00201206"]["Value"] == [1]
    assert multi["00201208"]["Value"] == [1]
    assert multi["00080061"] == {"vr": "CS", "Value": ["CT"]}
    layout = StoreLayout(store)
    frames = sorted(p.name for p in layout.frames_dir(uid("9.1"), uid("9.2"), uid("9.3")).iterdir())
    assert frames == ["1.mht", "2.mht", "3.mht", "4.mht"]
    series = read_json_gz(layout.series_index(uid("9.1")))
    assert series[0]["00201209"]["Value"] == [1]


def test_reingest_changes_nothing(two_studies: list[Path], tmp_path: Path) -> None:
    """Ingesting the same files again leaves every byte and row as it was."""
    store = tmp_path / "store"
    ingest([tmp_path / "in"], store)
    before, rows = tree_hashes(store), index_dump(store)
    report = ingest([tmp_path / "in"], store)
    assert {r.status for r in report.results} == {"unchanged"}
    assert tree_hashes(store) == before
    assert index_dump(store) == rows


def test_new_instance_updates_only_its_study(tmp_path: Path) -> None:
    """A new instance of a study rewrites that study's files, not the other studies'."""
    a = write_series(tmp_path / "a", count=2, patient_id="P1")
    b = write_series(tmp_path / "b", count=2, patient_id="P2")
    store = tmp_path / "store"
    ingest([*a, *b], store)
    layout = StoreLayout(store)
    study_b = read_json_gz(layout.study_index(_study_of(b[0])))[0]["0020000D"]["Value"][0]
    b_files = {p: p.stat().st_mtime_ns for p in layout.study(study_b).rglob("*") if p.is_file()}
    extra = write_series(tmp_path / "a", count=3, patient_id="P1", prefix="XX")[2]
    report = ingest([extra], store)
    assert report.instances == 1
    study_a = _study_of(a[0])
    assert read_json_gz(layout.study_index(study_a))[0]["00201208"]["Value"] == [3]
    assert len(read_json_gz(layout.series_metadata(study_a, _series_of(a[0])))) == 3
    assert {p: p.stat().st_mtime_ns for p in b_files} == b_files
    with Index(layout.index_path) as index:
        assert index.counts()["instances"] == 5


def _study_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def _series_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def test_duplicate_sop_is_reported_then_replaced(tmp_path: Path) -> None:
    """A different file with a stored SOP Instance UID fails unless --replace is given."""
    store = tmp_path / "store"
    keys = {"study": uid("1.1"), "series": uid("1.2"), "sop": uid("1.3")}
    first = write_ct(tmp_path / "one.dcm", seed=1, **keys)
    second = write_ct(tmp_path / "two.dcm", seed=2, **keys)
    ingest([first], store)
    report = ingest([second], store)
    (result,) = report.failures
    assert "already stored" in (result.error or "") and str(second) in (result.error or "")
    assert reconstruct_p10(store, uid("1.3")) == first.read_bytes()
    report = ingest([second], store, replace=True)
    assert report.results[0].status == "replaced"
    assert reconstruct_p10(store, uid("1.3")) == second.read_bytes()


def test_replace_moves_instance_between_studies(tmp_path: Path) -> None:
    """Replacing with a file of another study removes the old study when it empties."""
    store = tmp_path / "store"
    old = write_ct(tmp_path / "old.dcm", study=uid("2.1"), series=uid("2.2"), sop=uid("2.3"))
    new = write_ct(tmp_path / "new.dcm", study=uid("3.1"), series=uid("3.2"), sop=uid("2.3"))
    ingest([old], store)
    ingest([new], store, replace=True)
    layout = StoreLayout(store)
    assert not layout.study(uid("2.1")).exists()
    assert [s["0020000D"]["Value"][0] for s in read_json_gz(layout.studies_index)] == [uid("3.1")]
    with Index(layout.index_path) as index:
        assert index.counts() == {"patients": 1, "studies": 1, "series": 1, "instances": 1}


def test_deterministic_whatever_the_order(two_studies: list[Path], tmp_path: Path) -> None:
    """Two ingests of the same files in different orders and batches give identical stores."""
    one, two = tmp_path / "one", tmp_path / "two"
    ingest(two_studies, one)
    reversed_files = list(reversed(two_studies))
    ingest(reversed_files[:2], two)
    ingest(reversed_files[2:], two)
    assert tree_hashes(one) == tree_hashes(two)
    assert index_dump(one) == index_dump(two)


def test_reindex_rebuilds_the_same_index(two_studies: list[Path], tmp_path: Path) -> None:
    """An index rebuilt from the files alone equals the one ingest wrote."""
    store = tmp_path / "store"
    ingest([tmp_path / "in"], store)
    written = index_dump(store)
    layout = StoreLayout(store)
    for path in layout.private.iterdir():
        if path.name.startswith("index.sqlite"):
            path.unlink()
    report = reindex(store)
    assert (report.studies, report.instances) == (3, 6)
    assert index_dump(store) == written


def test_store_size_close_to_input(tmp_path: Path) -> None:
    """Without recompression the store adds little to the input (no frame copies in info)."""
    files = write_series(tmp_path / "in", count=10, rows=256, columns=256)
    store = tmp_path / "store"
    ingest(files, store, options=PipelineOptions(recompression=None))
    size_in = sum(p.stat().st_size for p in files)
    size_store = sum(
        p.stat().st_size for p in store.rglob("*") if p.is_file() and PRIVATE_DIR not in p.parts
    )
    assert size_store <= 1.10 * size_in


def test_input_directory_inside_store_is_skipped(tmp_path: Path) -> None:
    """Ingesting a directory that contains the store never reads the store itself."""
    write_series(tmp_path / "data", count=1)
    store = tmp_path / "data" / "store"
    ingest([tmp_path / "data"], store)
    report = ingest([tmp_path / "data"], store)
    assert report.ok and [r.status for r in report.results] == ["unchanged"]
    shutil.rmtree(store)


def test_write_p10_streams_the_original(tmp_path: Path) -> None:
    """write_p10 streams the rebuilt file; an unknown SOP Instance UID is a clear error."""
    import io

    from dicomweb_archive import write_p10
    from dicomweb_archive.errors import NoSuchInstanceError

    path = write_ct(tmp_path / "one.dcm", study=uid(1), series=uid(2), sop=uid(3), frames=3)
    ingest([path], tmp_path / "store")
    out = io.BytesIO()
    assert write_p10(tmp_path / "store", uid(3), out) == path.stat().st_size
    assert out.getvalue() == path.read_bytes()
    with pytest.raises(NoSuchInstanceError, match=uid(99)):
        reconstruct_p10(tmp_path / "store", uid(99))
