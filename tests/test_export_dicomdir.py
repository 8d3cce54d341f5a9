"""export --dicomdir: every instance on the media, byte for byte, with records the Standard
allows (PS3.10 8, PS3.3 F.5) even when the instance lacks some of their keys."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet
from typer.testing import CliRunner

from dicomweb_archive.cli.main import app
from dicomweb_archive.dicom.media import patient_id_placeholder
from tests.malformed import pydicom_file
from tests.stores import ingested

runner = CliRunner()


def _export(store: str, out: Path) -> tuple[int, str, list[warnings.WarningMessage]]:
    """Run ``export --all --dicomdir`` with every warning recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(
            app, ["export", "-o", store, "--all", "--out", str(out), "--dicomdir"]
        )
    shown = [w for w in caught if issubclass(w.category, UserWarning)]
    return result.exit_code, result.stderr, shown


def _on_media(out: Path) -> dict[str, bytes]:
    """The files of the media, by SOP Instance UID, as its DICOMDIR references them."""
    return {str(i.SOPInstanceUID): Path(i.path).read_bytes() for i in FileSet(out / "DICOMDIR")}


@pytest.mark.parametrize("tail", [b"\0" * 16, b"\x01GARBAGE"], ids=["zeros", "garbage"])
def test_trailing_bytes_are_on_the_media(tmp_path: Path, store: str, tail: bytes) -> None:
    """An instance with bytes after its last data element is on the media byte-identical to
    the received file, its record made from its data set, without a traceback."""
    received = pydicom_file("CT_small.dcm").read_bytes() + tail
    (tmp_path / "f.dcm").write_bytes(received)
    assert ingested(store, [tmp_path / "f.dcm"]).ok
    code, stderr, shown = _export(store, tmp_path / "dd")
    assert (code, stderr, shown) == (0, "", [])
    (data,) = _on_media(tmp_path / "dd").values()
    assert data == received
    assert (tmp_path / "dd/PT000000/ST000000/SE000000/IM000000").read_bytes() == received


def test_instances_lacking_record_keys_are_on_the_media(tmp_path: Path, store: str) -> None:
    """An incomplete instance, one without Patient ID and rtdose.dcm (empty Instance Number)
    are all on the media, byte-identical to plain export, with placeholders in their records
    only, no pydicom warning and no error."""
    mr = pydicom_file("MR_small.dcm").read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.dcm").write_bytes(mr[:-1000])  # ends inside Pixel Data
    for name in ("image_dfl.dcm", "rtdose.dcm"):
        (tmp_path / "in" / name).write_bytes(pydicom_file(name).read_bytes())
    assert ingested(store, [tmp_path / "in"]).ok
    code, stderr, shown = _export(store, tmp_path / "dd")
    assert (code, stderr, shown) == (0, "", [])
    plain = runner.invoke(app, ["export", "-o", store, "--all", "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    exported = {p.stem: p.read_bytes() for p in (tmp_path / "plain").rglob("*.dcm")}
    assert _on_media(tmp_path / "dd") == exported and len(exported) == 3
    no_id = pydicom.dcmread(pydicom_file("image_dfl.dcm"))
    records = pydicom.dcmread(tmp_path / "dd" / "DICOMDIR").DirectoryRecordSequence
    patients = [r.PatientID for r in records if r.DirectoryRecordType == "PATIENT"]
    assert patient_id_placeholder(str(no_id.StudyInstanceUID)) in patients
    leaves = [r for r in records if r.DirectoryRecordType in ("IMAGE", "RT DOSE")]
    assert all(str(r.InstanceNumber) for r in leaves) and len(leaves) == 3


def test_instance_whose_record_cannot_be_made(tmp_path: Path, store: str) -> None:
    """An RT Dose without Dose Summation Type (a Type 1 key of its record, with no value to
    stand in for it) is left off the media in one worded line; the others are on it."""
    ds = pydicom.dcmread(pydicom_file("rtdose.dcm"))
    del ds.DoseSummationType
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "dose.dcm")
    (tmp_path / "in" / "ct.dcm").write_bytes(pydicom_file("CT_small.dcm").read_bytes())
    assert ingested(store, [tmp_path / "in"]).ok
    code, stderr, shown = _export(store, tmp_path / "dd")
    assert code == 1 and shown == []
    assert stderr.splitlines() == [
        f"error: SOPInstanceUID {ds.SOPInstanceUID}: not added to the DICOMDIR: its directory "
        "record needs (3004,000A) DoseSummationType, which is missing (PS3.3 F.5; export it "
        "without --dicomdir)"
    ]
    ct = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    assert list(_on_media(tmp_path / "dd")) == [str(ct.SOPInstanceUID)]
