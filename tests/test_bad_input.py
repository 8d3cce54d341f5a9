"""Bad input: one clear line naming the file, the batch goes on, nothing escapes the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import config
from pydicom.uid import UID

from dicomweb_archive.dicom.parse import parse_p10
from dicomweb_archive.errors import (
    MissingUidError,
    NotDicomError,
    TruncatedError,
    UnsafeUidError,
)
from dicomweb_archive.model.uid import is_safe_uid
from tests.factory import make_ct, uid, write_ct
from tests.stores import ingested


def _write_raw_ct(path: Path, **uids: str) -> Path:
    """A CT file with whatever UIDs are given, valid or not."""
    ds = make_ct(study=uid(1), series=uid(2), sop=uid(3))
    previous = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        for keyword, value in uids.items():
            setattr(ds, keyword, value)
            if keyword == "SOPInstanceUID":
                ds.file_meta.MediaStorageSOPInstanceUID = UID(value)
        ds.save_as(path, enforce_file_format=True)
    finally:
        config.settings.writing_validation_mode = previous
    return path


def _files_outside(root: Path, store: str) -> set[Path]:
    """Files under ``root`` but outside the store (every file, for a store in memory)."""
    where = Path(store)
    return {p for p in root.rglob("*") if where not in p.parents and p != where}


HOSTILE = {
    "dotdot": "../../etc",
    "absolute": "/etc/passwd",
    "too_long": "1." + "2" * 70,
    "empty_component": "1..2",
    "control": "1.2\x013",
    "hidden": ".1.2",
    "option": "-1.2",
    "layout_name": "index.json.gz",
}


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_uid_is_refused(keyword: str, case: str, tmp_path: Path, store: str) -> None:
    """A UID that could escape the store or is not a UID is refused, naming file and attribute."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    bad = _write_raw_ct(inputs / "bad.dcm", **{keyword: HOSTILE[case]})
    good = write_ct(inputs / "good.dcm", study=uid(10), series=uid(11), sop=uid(12))
    before = _files_outside(tmp_path, store)
    report = ingested(store, [inputs])
    assert [r.status for r in report.results] == ["failed", "stored"]
    failure = report.results[0]
    assert isinstance(failure.exception, UnsafeUidError)
    assert failure.error is not None
    assert str(bad) in failure.error and keyword in failure.error
    assert "\n" not in failure.error
    assert _files_outside(tmp_path, store) == before
    assert good.exists()


def test_missing_study_uid(tmp_path: Path, store: str) -> None:
    """A file without StudyInstanceUID is refused by name."""
    ds = make_ct(study=uid(1), series=uid(2), sop=uid(3))
    del ds.StudyInstanceUID
    path = tmp_path / "nostudy.dcm"
    ds.save_as(path, enforce_file_format=True)
    (result,) = ingested(store, [path]).results
    assert isinstance(result.exception, MissingUidError)
    assert "StudyInstanceUID" in (result.error or "")


def test_not_dicom_and_truncated(tmp_path: Path, store: str) -> None:
    """Text files and files cut short are reported; the good file between them is stored."""
    text = tmp_path / "a_notes.txt"
    text.write_text("not an image\n" * 20)
    write_ct(tmp_path / "b_good.dcm", study=uid(1), series=uid(2), sop=uid(3))
    whole = write_ct(tmp_path / "whole.tmp", study=uid(1), series=uid(2), sop=uid(4))
    cut = tmp_path / "c_cut.dcm"
    cut.write_bytes(whole.read_bytes()[:300])  # inside the data set (cut inside Pixel Data
    # it is stored: tests/test_incomplete.py)
    whole.unlink()
    empty = tmp_path / "d_empty.dcm"
    empty.write_bytes(b"")
    report = ingested(
        store, [tmp_path / name for name in sorted(p.name for p in tmp_path.iterdir())]
    )
    statuses = {r.path.name: (r.status, type(r.exception)) for r in report.results}
    assert statuses["a_notes.txt"] == ("failed", NotDicomError)
    assert statuses["b_good.dcm"][0] == "stored"
    assert statuses["c_cut.dcm"] == ("failed", TruncatedError)
    assert statuses["d_empty.dcm"] == ("failed", NotDicomError)
    assert not report.ok


@pytest.mark.parametrize("where", ["value", "header"])
def test_a_header_cut_before_its_uids_is_truncation(tmp_path: Path, store: str, where: str) -> None:
    """A file that ends inside the data set before its UIDs (inside an element's value, or
    inside the next element's header) is reported cut short, not as a file missing its
    StudyInstanceUID."""
    whole = write_ct(tmp_path / "whole.tmp", study=uid(1), series=uid(2), sop=uid(4))
    data = whole.read_bytes()
    elements = parse_p10(data).dataset
    study = next(i for i, e in enumerate(elements) if e.tag == 0x0020000D)
    before = next(e for e in reversed(elements[:study]) if e.length > 2)
    end = before.value_offset + 1 if where == "value" else elements[study].offset + 3
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:end])
    (result,) = ingested(store, [cut]).results
    assert isinstance(result.exception, TruncatedError), result.error
    assert (result.error or "").startswith(
        f"{cut}: the file ends inside its header, before its StudyInstanceUID (file is "
        "truncated inside the element at byte "
    )


def test_unreadable_path_is_reported(tmp_path: Path, store: str) -> None:
    """A path that does not exist is one failure, not a crash."""
    (result,) = ingested(store, [tmp_path / "missing.dcm"]).results
    assert result.status == "failed"
    assert "missing.dcm" in (result.error or "")


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("1.2.3", True),
        ("0.1", True),
        ("1.2.03", True),  # leading zero: invalid per PS3.5 9.1 but seen in the field; path-safe
        ("1." + "2" * 62, True),
        ("1." + "2" * 63, False),
        ("../1", False),
        ("1.2.", False),
        ("", False),
        ("1 .2", False),
        ("1.2.abc", True),  # not a UID, but a safe key step: stored with a warning
        ("a" * 64, True),
        ("1.2.3.gz", False),
        ("1.2/3", False),
        ("1.2\\3", False),
    ],
)
def test_uid_safety(value: str, safe: bool) -> None:
    """At most 64 letters, digits, '.', '-', '_', ends alphanumeric, no '..' nor '.gz' end."""
    assert is_safe_uid(value) is safe
