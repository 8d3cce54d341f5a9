"""Edits that would break an instance are refused; text is encoded in a character set the
instance declares (issue 11, defects 5 and 6)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive, reconstruct_p10
from dicomweb_archive.cli.main import app
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.dicom.parse import parse_p10
from dicomweb_archive.errors import EditRefusedError
from dicomweb_archive.model.edits import PIXEL_DESCRIPTION, parse_edit
from dicomweb_archive.ops.update import update
from dicomweb_archive.ops.verify import verify
from tests.factory import make_ct, uid, write_ct
from tests.stores import ingested

runner = CliRunner()


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, normalise_argv(list(args)))
    return result.exit_code, result.output


@pytest.mark.parametrize("tag", sorted(PIXEL_DESCRIPTION), ids=lambda t: f"{t:08X}")
def test_pixel_description_is_never_edited(tag: int) -> None:
    """Every attribute that says how the pixel data is encoded is refused, with why."""
    with pytest.raises(EditRefusedError, match="describes how the stored pixel data"):
        parse_edit(f"{tag:08X}=1", level="instance")


def test_rows_edit_refused_from_the_command_line(tmp_path: Path, store: str) -> None:
    """Defect 5: `-instance UID Rows=5` is refused (exit 1, one line) and nothing changes."""
    path = write_ct(tmp_path / "a.dcm", study=uid(1), series=uid(2), sop=uid(3))
    assert ingested(store, [path]).ok
    code, output = _cli("update", "-o", store, "-instance", uid(3), "Rows=5")
    assert code == 1 and output.count("error:") == 1, output
    assert "(0028,0010) Rows describes how the stored pixel data is encoded" in output
    with Archive.open(store) as archive:
        assert reconstruct_p10(archive, uid(3)) == path.read_bytes()


def test_deep_verify_finds_frames_that_disagree_with_the_metadata(
    tmp_path: Path, store: str
) -> None:
    """Defect 5: verify --deep checks each instance's frames against its Image Pixel Module
    (here a file whose Number of Frames says 3 for two stored frames)."""
    ds = make_ct(study=uid(4), series=uid(5), sop=uid(6), frames=2)
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData + b""  # two frames of data, three announced
    path = tmp_path / "short.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert ingested(store, [path]).ok
    with Archive.open(store) as archive:
        assert verify(archive).ok  # as received: the file itself says so
        report = verify(archive, deep=True)
    kinds = {f.kind for f in report.findings}
    assert "frames" in kinds, report.findings
    message = next(f.message for f in report.findings if f.kind == "frames")
    assert "Number of Frames is 3" in message
    code, output = _cli("verify", "--deep", "-o", store)
    assert code == 3, output


def _without_charset(path: Path, *, name: bytes = b"DOE^JOHN") -> Path:
    ds = make_ct(study=uid(7), series=uid(8), sop=uid(9))
    del ds.SpecificCharacterSet
    ds.PatientName = name.decode("latin-1")
    ds.save_as(path, enforce_file_format=True)
    if name.isascii():
        return path
    data = path.read_bytes().replace(name.decode("latin-1").encode("utf-8"), name)
    path.write_bytes(data)
    return path


def _elements(data: bytes) -> dict[int, bytes]:
    parsed = parse_p10(data)
    return {e.tag: data[e.offset : e.end] for e in parsed.dataset}


def test_non_ascii_edit_declares_utf8(tmp_path: Path, store: str) -> None:
    """Defect 6: a non-ASCII value in an instance without Specific Character Set (ASCII only)
    is encoded in UTF-8 with (0008,0005) ISO_IR 192 added; every other element keeps its
    bytes."""
    path = _without_charset(tmp_path / "plain.dcm")
    assert ingested(store, [path]).ok
    with Archive.open(store) as archive:
        update(archive, "study", uid(7), ["StudyDescription=Gehirn Übersicht"])
        data = reconstruct_p10(archive, uid(9))
        assert verify(archive).ok
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.StudyDescription == "Gehirn Übersicht"
    before, after = _elements(path.read_bytes()), _elements(data)
    assert after[0x00081030].endswith("Gehirn Übersicht ".encode())  # padded to even length
    assert set(after) == set(before) | {0x00080005}
    for tag in before:
        if tag not in (0x00081030, 0x00020000):
            assert before[tag] == after[tag], f"({tag:08X}) changed"


def test_non_ascii_edit_refused_where_utf8_would_change_other_text(
    tmp_path: Path, store: str
) -> None:
    """Defect 6: an instance that holds non-ASCII text in an undeclared character set cannot
    be switched to UTF-8 silently: the edit is refused, saying what to do."""
    path = _without_charset(tmp_path / "latin.dcm", name=b"M\xdcLLER^HANS")
    assert ingested(store, [path]).ok
    code, output = _cli(
        "update", "-o", store, "-study", uid(7), "StudyDescription=Gehirn Übersicht"
    )
    assert code == 1 and "set SpecificCharacterSet first" in output, output
    with Archive.open(store) as archive:
        assert reconstruct_p10(archive, uid(9)) == path.read_bytes()


def test_value_outside_the_declared_charset_switches_only_ascii_instances(
    tmp_path: Path, store: str
) -> None:
    """A value the declared character set cannot hold (here Greek in ISO_IR 100) is written
    in UTF-8 when the instance's text is all ASCII."""
    path = write_ct(tmp_path / "a.dcm", study=uid(11), series=uid(12), sop=uid(13))
    assert ingested(store, [path]).ok
    with Archive.open(store) as archive:
        update(archive, "study", uid(11), ["StudyDescription=Εγκέφαλος"])
        ds = pydicom.dcmread(io.BytesIO(reconstruct_p10(archive, uid(13))))
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.StudyDescription == "Εγκέφαλος"
