"""Edits at the speed of metadata (issue 12): an edit writes a number of objects that grows with
the series and studies it touches, never with their instances; info records stay as received;
the study's edit state validates; the stages after an edit change nothing; a store made with
``-i`` keeps each instance's own metadata.gz current."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dicomweb_archive import Archive, PipelineOptions, reconstruct_p10
from dicomweb_archive.ops.stages import run_stages
from dicomweb_archive.ops.update import update
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.storage import PRIVATE, from_json_gz
from tests.factory import uid, write_series
from tests.stores import etags, ingested, read, served_metadata, tree_hashes
from tests.test_schema import _validator

KEYS = StoreKeys()
INDEX = PRIVATE + "local/"


def _store(
    tmp_path: Path, store: str, count: int, *, options: PipelineOptions | None = None
) -> list[Path]:
    files = write_series(
        tmp_path / f"in{count}", count=count, study=uid("1"), series=uid("1.1"), patient_id="P1"
    )
    files += write_series(
        tmp_path / f"in{count}b", count=count, study=uid("1"), series=uid("1.2"), patient_id="P1"
    )
    assert ingested(store, files, options=options).ok
    return files


def _written(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Keys created or rewritten (the index's own files aside)."""
    return sorted(k for k, v in after.items() if before.get(k) != v and not k.startswith(INDEX))


@pytest.mark.parametrize("level", ["patient", "study"])
def test_objects_written_do_not_grow_with_instances(
    tmp_path: Path, new_store: Callable[[str], str], level: str
) -> None:
    """The same edit on a study of 2 series of 3 instances and of 2 series of 12 writes the
    same number of objects, none of them in an instance's folder."""
    counts: dict[int, int] = {}
    for count in (3, 12):
        store = new_store(f"s{count}")
        _store(tmp_path, store, count)
        before = etags(store)
        with Archive.open(store) as archive:
            if level == "patient":
                update(archive, "patient", "P1", ["PatientName=NEW^NAME"])
            else:
                update(archive, "study", uid("1"), ["StudyDescription=NEW"])
        written = _written(before, etags(store))
        assert not [k for k in written if "/instances/" in k], written
        counts[count] = len(written)
    assert counts[3] == counts[12], counts


def test_info_records_stay_as_received(tmp_path: Path, store: str) -> None:
    """Edits never rewrite an info record; the served metadata has the edit and the export
    the edited value."""
    files = _store(tmp_path, store, 2)
    infos = {k: v for k, v in etags(store).items() if k.endswith("info.json.gz")}
    assert len(infos) == 4
    with Archive.open(store) as archive:
        update(archive, "patient", "P1", ["PatientName=NEW^NAME"])
        update(archive, "study", uid("1"), ["StudyDescription=NEW"])
        sop = str(__import__("pydicom").dcmread(files[0]).SOPInstanceUID)
        exported = reconstruct_p10(archive, sop)
    assert {k: v for k, v in etags(store).items() if k.endswith("info.json.gz")} == infos
    served = served_metadata(store, uid("1"), uid("1.1"), sop)
    assert served["00100010"]["Value"] == [{"Alphabetic": "NEW^NAME"}]
    assert b"NEW^NAME" in exported and b"NEW " in exported


def test_edit_state_validates(tmp_path: Path, store: str) -> None:
    """The study's edit state (``.dicomweb-archive/edits/<study>.json.gz``) validates against
    schema/edit-state.schema.json after edits of several kinds (a value, a removal, several
    values, a change of character set)."""
    files = _store(tmp_path, store, 2)
    sop = str(__import__("pydicom").dcmread(files[0]).SOPInstanceUID)
    with Archive.open(store) as archive:
        update(archive, "patient", "P1", ["PatientName=Müller^Jürgen"])
        update(archive, "instance", sop, ["-ImageComments", "ImageType=ORIGINAL\\PRIMARY"])
        update(archive, "study", uid("1"), ["StudyDescription=NEW"])
    value = from_json_gz(read(store, KEYS.edits(uid("1"))))
    errors = list(_validator("edit-state.schema.json").iter_errors(value))
    assert not errors, errors
    assert len(value["instances"]) == 4


def test_stages_after_an_edit_change_nothing(tmp_path: Path, store: str) -> None:
    """The group and study stages, run again after an edit, give the same served files: the
    edit wrote exactly what they derive."""
    _store(tmp_path, store, 3)
    with Archive.open(store) as archive:
        update(archive, "patient", "P1", ["PatientName=NEW^NAME"])
        update(archive, "study", uid("1"), ["StudyDescription=NEW"])
    edited = tree_hashes(store)
    with Archive.open(store) as archive, archive.writing("test"):
        run_stages(archive, [uid("1")], group=True, study=True)
    assert tree_hashes(store) == edited


def test_instances_option_keeps_instance_metadata_current(tmp_path: Path, store: str) -> None:
    """With ``-i`` each instance has its own metadata.gz (the seed's option); an edit rewrites
    it, equal to the instance's entry in the series metadata, and verify is clean."""
    files = _store(tmp_path, store, 2, options=PipelineOptions(instances=True))
    sop = str(__import__("pydicom").dcmread(files[0]).SOPInstanceUID)
    own = KEYS.instance(uid("1"), uid("1.1"), sop) + "metadata.gz"
    assert from_json_gz(read(store, own))[0]["00100010"]["Value"] == [{"Alphabetic": "DOE^JOHN"}]
    with Archive.open(store) as archive:
        update(archive, "patient", "P1", ["PatientName=NEW^NAME"])
        report = verify(archive)
    assert report.ok and report.complete, report.findings
    (mine,) = from_json_gz(read(store, own))
    assert mine == served_metadata(store, uid("1"), uid("1.1"), sop)
    assert mine["00100010"]["Value"] == [{"Alphabetic": "NEW^NAME"}]
