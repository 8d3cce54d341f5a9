"""De-identification applies the profile to every element wherever it sits (after Pixel Data,
in the File Meta Information), checked on the exported P10 files; instances that used to
stop it (deflated, a non-ASCII UID) come out de-identified (issue 14, items 2 and 3)."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from dicomweb_archive.cli.main import app
from dicomweb_archive.cli.update import normalise_argv
from tests.deid_helpers import everything, exported, found, read_all
from tests.stores import ingested

runner = CliRunner()
TAIL_NAME = "TAILNAME^SECRETIVE"
SECRETS = [
    "TAILNAME",
    "PRIVATE-AFTER-PIXELS",
    "VENDOR-AFTER",
    "SECRET-META-INFO",
    "1.2.999.777.1",
    "SOURCE-AE-77",
    "SENDING-AE-77",
    "CompressedSamples",
]


def _testdata(name: str) -> str:
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str)
    return path


def _element(group: int, element: int, vr: str, value: bytes) -> bytes:
    """An explicit VR little endian element with a short header (PS3.5 7.1.2)."""
    if len(value) % 2:
        value += b" "
    return struct.pack("<HH2sH", group, element, vr.encode(), len(value)) + value


def _after_pixel_data(path: Path) -> Path:
    """pydicom's CT_small with private File Meta elements and AE titles, a private group 7FE1
    after Pixel Data, and Patient's Name written after everything (out of order)."""
    ds = pydicom.dcmread(_testdata("CT_small.dcm"))
    del ds.PatientName
    ds.file_meta.SourceApplicationEntityTitle = "SOURCE-AE-77"
    ds.file_meta.SendingApplicationEntityTitle = "SENDING-AE-77"
    ds.file_meta.PrivateInformationCreatorUID = pydicom.uid.UID("1.2.999.777.1")
    ds.file_meta.PrivateInformation = b"SECRET-META-INFO"
    ds.add_new(0x7FE10010, "LO", "VENDOR-AFTER")
    ds.add_new(0x7FE11001, "LO", "PRIVATE-AFTER-PIXELS")
    ds.save_as(path, enforce_file_format=True)
    with path.open("ab") as file:
        file.write(_element(0x0010, 0x0010, "PN", TAIL_NAME.encode()))
    return path


def _non_ascii_uid(path: Path) -> Path:
    """pydicom's MR_small with a Frame of Reference UID holding a non-ASCII byte."""
    shutil.copy(_testdata("MR_small.dcm"), path)
    raw = path.read_bytes()
    old = str(pydicom.dcmread(path).FrameOfReferenceUID).encode()
    new = old[:-2] + "é".encode("latin-1") + old[-1:]
    path.write_bytes(raw.replace(old, new))
    return path


def test_every_place_deidentified_in_exported_files(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Patient's Name after Pixel Data, a 7FE1 private group and File Meta private/AE
    elements leave no trace in the store, its index or its exported P10 files; the exported
    files parse and say Patient Identity Removed."""
    source, out = new_store("source"), new_store("out")
    (tmp_path / "in").mkdir()
    file = _after_pixel_data(tmp_path / "in" / "tail.dcm")
    assert TAIL_NAME in str(pydicom.dcmread(file).PatientName)  # pydicom reads it
    assert ingested(source, [file]).ok
    code, output = _cli("update", "-o", source, "-anonymize", "--all", "--out", out)
    assert code == 0, output
    assert found(SECRETS, everything(out, tmp_path / "export")) == []
    (ds,) = read_all(exported(out, tmp_path / "again"))
    assert ds.PatientIdentityRemoved == "YES"
    assert str(ds.PatientName).startswith("DEID^")
    assert not [e for e in ds if e.tag.group == 0x7FE1]
    meta = {int(e.tag) for e in ds.file_meta}
    assert not meta & {0x00020016, 0x00020017, 0x00020100, 0x00020102}
    assert meta >= {0x00020002, 0x00020003, 0x00020010}
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    original = pydicom.dcmread(_testdata("CT_small.dcm"))
    assert (ds.pixel_array == original.pixel_array).all()  # the pixels came through


def test_deflated_and_non_ascii_uid_come_out_deidentified(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """pydicom's deflated image_dfl.dcm and an instance whose Frame of Reference UID is not
    ASCII are de-identified (no traceback, exit 0): the deflated one inflated, Explicit VR
    Little Endian; the UID replaced."""
    source, out = new_store("source"), new_store("out")
    (tmp_path / "in").mkdir()
    deflated = shutil.copy(_testdata("image_dfl.dcm"), tmp_path / "in" / "dfl.dcm")
    odd = _non_ascii_uid(tmp_path / "in" / "odd.dcm")
    assert ingested(source, [deflated, odd]).ok
    code, output = _cli("update", "-o", source, "-anonymize", "--all", "--out", out)
    assert code == 0, output
    assert "2 instances de-identified" in output
    datasets = read_all(exported(out, tmp_path / "export"))
    assert len(datasets) == 2
    original = pydicom.dcmread(_testdata("image_dfl.dcm"))
    flat = next(
        ds for ds in datasets if ds.Rows == original.Rows and "FrameOfReferenceUID" not in ds
    )
    assert flat.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert flat.PixelData == original.PixelData
    assert all(ds.PatientIdentityRemoved == "YES" for ds in datasets)
    frame_of_reference = next(ds for ds in datasets if "FrameOfReferenceUID" in ds)
    assert str(frame_of_reference.FrameOfReferenceUID).startswith("2.25.")


#: (file, struct format of an element header with a 2-byte length, or None for implicit VR)
LAYOUTS = [
    ("SC_rgb_rle_2frame.dcm", "<HH2sH"),  # encapsulated Pixel Data, then the tail
    ("MR_small_bigendian.dcm", ">HH2sH"),
    ("MR_small_implicit.dcm", None),
]


@pytest.mark.parametrize(("name", "header"), LAYOUTS, ids=[n for n, _ in LAYOUTS])
def test_tail_after_pixel_data_in_every_encoding(
    name: str, header: str | None, tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """After encapsulated, big endian and implicit VR Pixel Data, a private group and an
    out-of-order Patient's Name are de-identified; the pixel data comes through unchanged."""
    source, out = new_store("source"), new_store("out")
    original = pydicom.dcmread(_testdata(name))
    secret = str(original.PatientName).split("^")[0]
    del original.PatientName
    original.add_new(0x7FE10010, "LO", "VENDOR-AFTER")
    original.add_new(0x7FE11001, "LO", "PRIVATE-AFTER-PIXELS")
    file = tmp_path / name
    original.save_as(file, enforce_file_format=True)
    value = TAIL_NAME.encode()
    if header is None:
        tail = struct.pack("<HHI", 0x0010, 0x0010, len(value)) + value
    else:
        tail = struct.pack(header, 0x0010, 0x0010, b"PN", len(value)) + value
    with file.open("ab") as stream:
        stream.write(tail)
    assert str(pydicom.dcmread(file).PatientName) == TAIL_NAME
    assert ingested(source, [file]).ok
    code, output = _cli("update", "-o", source, "-anonymize", "--all", "--out", out)
    assert code == 0, output
    assert found([*SECRETS, secret], everything(out, tmp_path / "export")) == []
    (ds,) = read_all(exported(out, tmp_path / "again"))
    assert str(ds.PatientName).startswith("DEID^")
    assert not [e for e in ds if e.tag.group == 0x7FE1]
    assert ds.PixelData == original.PixelData


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, normalise_argv(list(args)))
    return result.exit_code, result.output


#: pydicom file -> bytes cut from its end (inside Pixel Data: native, RLE)
CUT = {"rtdose.dcm": 4000, "SC_rgb_rle_2frame.dcm": 300}


@pytest.mark.parametrize("in_place", [False, True], ids=["out", "in-place"])
def test_incomplete_instances_are_deidentified(tmp_path: Path, store: str, in_place: bool) -> None:
    """An instance whose received file ends inside Pixel Data is de-identified (its metadata is
    whole): the output is incomplete too, with the received pixel bytes, and holds no original
    Patient's Name; other instances are not held back by it."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = []
    for name, cut in CUT.items():
        data = Path(_testdata(name)).read_bytes()
        (inputs / name).write_bytes(data[:-cut])
        patient = pydicom.dcmread(_testdata(name), stop_before_pixels=True).PatientName
        names.append(str(patient).encode())
    assert any(names)
    ingested(store, [inputs])
    out = store if in_place else str(tmp_path / "anon")
    args = ["anonymize", "-o", store, "--all"] + (["--in-place"] if in_place else ["--out", out])
    code, output = _cli(*args)
    assert code == 0, output
    verified = runner.invoke(app, ["verify", "-o", out])
    assert verified.exit_code == 5, verified.output  # incomplete, nothing differs
    files = exported(out, tmp_path / "exported")
    assert len(files) == len(CUT)
    for data in (f.read_bytes() for f in files):
        assert not any(name and name in data for name in names)


@pytest.mark.parametrize(("name", "header"), LAYOUTS, ids=[n for n, _ in LAYOUTS])
def test_an_edited_copy_after_pixel_data_is_deidentified_as_edited(
    name: str, header: str | None, tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """A kept attribute held again after Pixel Data (Window Center: not in Table E.1-1, so the
    profile keeps it) and edited before de-identification comes out with its edited value in
    both places, not the received one (the edit may have removed what should not be shared)."""
    source, out = new_store("source"), new_store("out")
    original = pydicom.dcmread(_testdata(name))
    original.WindowCenter = "40"
    file = tmp_path / name
    original.save_as(file, enforce_file_format=True)
    value = b"77777 "
    if header is None:
        tail = struct.pack("<HHI", 0x0028, 0x1050, len(value)) + value
    else:
        tail = struct.pack(header, 0x0028, 0x1050, b"DS", len(value)) + value
    with file.open("ab") as stream:
        stream.write(tail)
    assert ingested(source, [file]).ok
    code, output = _cli(
        "update", "-o", source, "-instance", str(original.SOPInstanceUID), "WindowCenter=55"
    )
    assert code == 0, output
    code, output = _cli("update", "-o", source, "-anonymize", "--all", "--out", out)
    assert code == 0, output
    (exported_file,) = exported(out, tmp_path / "export")
    data = exported_file.read_bytes()
    assert b"77777" not in data
    assert data.count(b"55") >= 2
    assert pydicom.dcmread(exported_file).WindowCenter == 55
