"""Export never interprets values: a value that does not fit its VR is given back as received,
and an instance that cannot be exported never stops the others."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels.utils import pack_bits
from pydicom.uid import ImplicitVRLittleEndian
from typer.testing import CliRunner

from dicomweb_archive.cli.main import app
from tests.factory import make_ct, uid, write_ct
from tests.stores import ingested

runner = CliRunner()
STATION_NAME = 0x00081010  # SH, 10 bytes in pydicom's MR_small files: not a multiple of 4


def _sh_to_sl(source: str, path: Path, *, tag: int = STATION_NAME) -> Path:
    """pydicom's test file ``source`` with the VR of an SH element changed to SL (explicit VR,
    either byte order), as some writers do: pydicom cannot read its value as SL."""
    data = bytearray(Path(_testdata(source)).read_bytes())
    big = (
        pydicom.dcmread(_testdata(source), stop_before_pixels=True)
        .file_meta["TransferSyntaxUID"]
        .value.endswith(".2.2")
    )
    header = struct.pack(">HH" if big else "<HH", tag >> 16, tag & 0xFFFF) + b"SH"
    at = data.index(header, 132 + 12)
    data[at + 4 : at + 6] = b"SL"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def _testdata(name: str) -> str:
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str)
    return path


def _study(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def _value(data: bytes, tag: int = STATION_NAME) -> tuple[str | None, bytes]:
    """The VR and bytes of an element as pydicom finds them, without reading the value."""
    element = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).get_item(tag)
    assert element is not None
    return element.VR, bytes(element.value)


@pytest.mark.parametrize("how", ["directory", "zip"])
def test_recompressed_instance_with_misfit_value(tmp_path: Path, store: str, how: str) -> None:
    """A JPEG 2000 original recompressed at ingest with an SL value of 10 bytes is exported
    pixel-identical with that element's bytes as received (it stopped the export before)."""
    odd = _sh_to_sl("MR_small_jp2klossless.dcm", tmp_path / "in" / "odd.dcm")
    assert ingested(store, [odd]).ok
    target = ["--out", str(tmp_path / "out")] if how == "directory" else []
    target = target or ["--zip", str(tmp_path / "out.zip")]
    result = runner.invoke(app, ["export", "-o", store, *target, _study(odd)])
    assert result.exit_code == 0, result.output
    if how == "directory":
        (written,) = (tmp_path / "out").rglob("*.dcm")
        data = written.read_bytes()
    else:
        with zipfile.ZipFile(tmp_path / "out.zip") as zipped:
            (name,) = zipped.namelist()
            data = zipped.read(name)
    assert _value(data) == ("SL", b"000000000 ")
    original = pydicom.dcmread(odd)
    assert (
        pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).pixel_array == original.pixel_array
    ).all()


def test_transcoding_keeps_misfit_value_bytes(tmp_path: Path, store: str) -> None:
    """--transfer-syntax to Implicit VR Little Endian keeps such a value's bytes."""
    odd = _sh_to_sl("MR_small_jp2klossless.dcm", tmp_path / "in" / "odd.dcm")
    assert ingested(store, [odd]).ok
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "export",
            "-o",
            store,
            "--out",
            str(out),
            "--transfer-syntax",
            ImplicitVRLittleEndian,
            _study(odd),
        ],
    )
    assert result.exit_code == 0, result.output
    (written,) = out.rglob("*.dcm")
    exported = pydicom.dcmread(written)
    assert exported.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert exported.get_item(STATION_NAME).value == b"000000000 "
    assert (exported.pixel_array == pydicom.dcmread(odd).pixel_array).all()


@pytest.mark.parametrize("how", ["directory", "zip"])
def test_one_instance_that_cannot_be_exported(tmp_path: Path, store: str, how: str) -> None:
    """A big endian file whose SL value cannot be read fails alone, in one worded line; the
    other instances of the export are written and the exit code is 1."""
    odd = _sh_to_sl("MR_small_bigendian.dcm", tmp_path / "in" / "odd.dcm")
    study = _study(odd)
    good = write_ct(tmp_path / "in" / "good.dcm", study=study, series=uid(2), sop=uid(3))
    assert ingested(store, [odd, good]).ok
    target = ["--out", str(tmp_path / "out")] if how == "directory" else []
    target = target or ["--zip", str(tmp_path / "out.zip")]
    result = runner.invoke(
        app, ["export", "-o", store, *target, "--transfer-syntax", ImplicitVRLittleEndian, study]
    )
    assert result.exit_code == 1, result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "(0008,1010)" in line and "big endian" in line and "Exception" not in line
    if how == "directory":
        written = [p.name for p in (tmp_path / "out").rglob("*.dcm")]
    else:
        with zipfile.ZipFile(tmp_path / "out.zip") as zipped:
            written = [Path(name).name for name in zipped.namelist()]
    assert written == [f"{uid(3)}.dcm"]


def test_dicomdir_record_value_that_does_not_fit(tmp_path: Path, store: str) -> None:
    """--dicomdir: an instance whose Study ID (a DICOMDIR record's key) is an SL of 6 bytes is
    left out of the media in one worded line; the others are written."""
    ds = make_ct(study=uid(1), series=uid(2), sop=uid(3))
    ds.StudyID = "ABCDEF"
    ds.save_as(tmp_path / "plain.dcm", enforce_file_format=True)
    data = bytearray((tmp_path / "plain.dcm").read_bytes())
    at = data.index(struct.pack("<HH", 0x0020, 0x0010) + b"SH")
    data[at + 4 : at + 6] = b"SL"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "odd.dcm").write_bytes(bytes(data))
    write_ct(tmp_path / "in" / "good.dcm", study=uid(1), series=uid(2), sop=uid(4))
    assert ingested(store, [tmp_path / "in"]).ok
    out = tmp_path / "media"
    result = runner.invoke(app, ["export", "-o", store, "--out", str(out), "--dicomdir", uid(1)])
    assert result.exit_code == 1, result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert uid(3) in line and "does not fit its VR" in line
    records = pydicom.dcmread(out / "DICOMDIR").DirectoryRecordSequence
    assert [
        r.ReferencedSOPInstanceUIDInFile for r in records if "ReferencedSOPInstanceUIDInFile" in r
    ] == [uid(4)]


def _one_bit(path: Path, *, frames: int, rows: int, columns: int) -> Path:
    """A 1-bit (Bits Allocated 1) segmentation-like image in Implicit VR Little Endian whose
    frames do not end on a byte boundary (PS3.5 8.1.1: they follow each other unpadded)."""
    ds = make_ct(study=uid(1), series=uid(2), sop=uid(3))
    pixels = (np.arange(frames * rows * columns) % 3 == 0).astype(np.uint8)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.PixelData = pack_bits(pixels, pad=True)
    ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("source", ["generated", "liver_expb_1frame.dcm"])
def test_one_bit_pixels_are_transcoded_packed(tmp_path: Path, store: str, source: str) -> None:
    """Transcoding Bits Allocated 1 pixels (Implicit VR or big endian originals to Explicit VR
    Little Endian) keeps them packed eight to a byte with the same values; a compressed target
    fails that instance in words (no codec takes single bits)."""
    if source == "generated":
        original = _one_bit(tmp_path / "in" / "seg.dcm", frames=3, rows=5, columns=7)
    else:
        original = tmp_path / "in" / source
        original.parent.mkdir(parents=True, exist_ok=True)
        original.write_bytes(Path(_testdata(source)).read_bytes())
    ingested(store, [original])
    study = _study(original)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "export",
            "-o",
            store,
            "--all",
            "--transfer-syntax",
            "1.2.840.10008.1.2.1",
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    (exported,) = out.rglob("*.dcm")
    got, want = pydicom.dcmread(exported), pydicom.dcmread(original)
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert len(got.PixelData) == len(want.PixelData)
    assert np.array_equal(got.pixel_array, want.pixel_array)
    refused = runner.invoke(
        app,
        [
            "export",
            "-o",
            store,
            study,
            "--transfer-syntax",
            "1.2.840.10008.1.2.4.80",
            "--out",
            str(tmp_path / "jls"),
        ],
    )
    assert refused.exit_code == 1
    assert "pixel data of Bits Allocated 1 cannot be written as 1.2.840.10008.1.2.4.80" in (
        refused.stderr
    )
