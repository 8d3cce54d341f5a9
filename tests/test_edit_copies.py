"""An edit applies to every copy of an attribute: one held again after Pixel Data (out of tag
order) is changed with the head's, in export and revert, and verify --deep compares it."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomweb_archive import Archive, reconstruct_p10
from dicomweb_archive.ops import verify_instance
from dicomweb_archive.ops.revert import revert_change
from dicomweb_archive.ops.update import apply_update, plan_update
from dicomweb_archive.ops.verify import verify
from tests.stores import ingested

TAIL_NAME = b"TAIL^COPY "
#: (file, element header format with a 2-byte length, None for implicit VR)
LAYOUTS = [
    ("CT_small.dcm", "<HH2sH"),  # native, explicit VR little endian
    ("SC_rgb_rle_2frame.dcm", "<HH2sH"),  # encapsulated Pixel Data
    ("MR_small_bigendian.dcm", ">HH2sH"),
    ("MR_small_implicit.dcm", None),
]


def _with_tail_copy(name: str, header: str | None, path: Path) -> pydicom.Dataset:
    """The pydicom test file with Patient's Name kept in the head and a second copy, with
    another value, after Pixel Data."""
    source = get_testdata_file(name, download=False)
    assert isinstance(source, str)
    ds = pydicom.dcmread(source)
    ds.save_as(path, enforce_file_format=True)
    if header is None:
        tail = struct.pack("<HHI", 0x0010, 0x0010, len(TAIL_NAME)) + TAIL_NAME
    else:
        tail = struct.pack(header, 0x0010, 0x0010, b"PN", len(TAIL_NAME)) + TAIL_NAME
    with path.open("ab") as stream:
        stream.write(tail)
    assert str(pydicom.dcmread(path).PatientName) == "TAIL^COPY"
    return ds


@pytest.mark.parametrize(("name", "header"), LAYOUTS, ids=[n for n, _ in LAYOUTS])
def test_edit_changes_the_copy_after_pixel_data(
    name: str, header: str | None, tmp_path: Path, store: str
) -> None:
    """Export carries the new name in both copies (pydicom sees it), the pixel data is
    unchanged, verify --deep passes; revert gives the received file back byte for byte."""
    path = tmp_path / name
    ds = _with_tail_copy(name, header, path)
    assert ingested(store, [path]).ok
    sop, patient = str(ds.SOPInstanceUID), str(ds.PatientID)
    with Archive.open(store) as archive:
        apply_update(archive, plan_update(archive, "patient", patient, ["PatientName=NEW^NAME"]))
        data = reconstruct_p10(archive, sop)
        report = verify(archive, deep=True)
        assert report.ok, report.findings
        assert b"TAIL^COPY" not in data and data.count(b"NEW^NAME") == 2
        edited = pydicom.dcmread(io.BytesIO(data))
        assert str(edited.PatientName) == "NEW^NAME"
        assert edited.PixelData == pydicom.dcmread(path).PixelData
        apply_update(archive, plan_update(archive, "patient", patient, ["-PatientName"]))
        removed = reconstruct_p10(archive, sop)
        assert b"NEW^NAME" not in removed and "PatientName" not in pydicom.dcmread(
            io.BytesIO(removed)
        )
        assert verify(archive, deep=True).ok
        for change in archive.index.audit(sop)[::-1]:
            revert_change(archive, change["change_id"])
        assert reconstruct_p10(archive, sop) == path.read_bytes()


def test_deep_verify_compares_the_copy_after_pixel_data(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy after Pixel Data that disagrees with the metadata is a metadata finding."""
    path = tmp_path / "ct.dcm"
    ds = _with_tail_copy("CT_small.dcm", "<HH2sH", path)
    assert ingested(store, [path]).ok
    patient = str(ds.PatientID)
    with Archive.open(store) as archive:
        apply_update(archive, plan_update(archive, "patient", patient, ["PatientName=NEW^NAME"]))
        assert verify(archive, deep=True).ok
        monkeypatch.setattr(verify_instance, "changed_copies", lambda tail, **_kw: tail)
        report = verify(archive, deep=True)
    assert not report.ok
    assert any("after Pixel Data" in f.message for f in report.findings), report.findings
