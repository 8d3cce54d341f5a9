"""What pydicom reads is stored: a binary number value that is no whole number of values (a
US value of 1 byte) and a defined-length encapsulated Pixel Data the file ends inside are
stored byte for byte, verify clean, with a warning under -v."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from dicomweb_archive import Archive, reconstruct_p10
from dicomweb_archive.cli.main import app
from dicomweb_archive.ops.verify import verify
from tests.factory import make_ct, uid

runner = CliRunner()


def _with_short_us(path: Path) -> Path:
    """A CT with Acquisition Matrix (0018,1310), VR US, holding 1 byte."""
    ds = make_ct(study=uid(31), series=uid(32), sop=uid(33), rows=8, columns=8)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    at = data.find(struct.pack("<HH", 0x0020, 0x000D))
    short = struct.pack("<HH2sH", 0x0018, 0x1310, b"US", 1) + b"\x05"
    path.write_bytes(data[:at] + short + data[at:])
    return path


def _defined_length_encapsulated_cut(path: Path) -> Path:
    """RLE Pixel Data given a defined length (not undefined, PS3.5 A.4), the file cut in it."""
    source = get_testdata_file("SC_rgb_rle_2frame.dcm", download=False)
    assert isinstance(source, str)
    data = Path(source).read_bytes()
    at = data.find(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF))
    length = len(data) - (at + 12) - 8  # the items, without the sequence delimiter
    header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, length)
    path.write_bytes((data[:at] + header + data[at + 12 : -8])[:-100])
    return path


def test_stored_byte_for_byte_with_a_warning(tmp_path: Path, store: str) -> None:
    """Both are stored (exit 0), exported byte for byte and verified clean; -v says why the
    US value is partial."""
    short = _with_short_us(tmp_path / "short.dcm")
    cut = _defined_length_encapsulated_cut(tmp_path / "cut.dcm")
    for path in (short, cut):
        pydicom.dcmread(path)  # pydicom reads both
    result = runner.invoke(app, ["create", "-o", store, "-v", str(short), str(cut)])
    assert result.exit_code == 0, result.output
    assert "(0018,1310): its US value has 1 byte, not a whole number of 2-byte values" in (
        result.stderr
    )
    assert "file ends inside Pixel Data" in result.stderr
    with Archive.open(store) as archive:
        assert reconstruct_p10(archive, uid(33)) == short.read_bytes()
        sop = str(pydicom.dcmread(cut, stop_before_pixels=True).SOPInstanceUID)
        assert reconstruct_p10(archive, sop) == cut.read_bytes()
        report = verify(archive, deep=True)
    assert report.ok, report.findings
