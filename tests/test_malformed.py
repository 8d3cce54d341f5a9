"""Inputs real archives accept: bytes after the last data element, sequences nested deep, deflate
bombs, DICOMDIRs (issue 13). Inputs are built by ``tests/malformed.py`` from pydicom's files."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from pydicom.sequence import Sequence
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import app
from dicomweb_archive.dicom.elements import MAX_SEQUENCE_DEPTH
from dicomweb_archive.dicom.inflate import INFLATE_FLOOR
from dicomweb_archive.dicom.parse import parse_dataset
from dicomweb_archive.dicom.parts import TRAILING_CHUNK, TRAILING_INLINE, generate_parts
from dicomweb_archive.errors import (
    DicomdirError,
    InflationLimitError,
    MalformedElementError,
    UnreadableInputError,
)
from dicomweb_archive.ops.ingest_types import PipelineOptions
from dicomweb_archive.ops.reconstruct import reconstruct_p10
from dicomweb_archive.ops.update import update
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.instance import read_info
from tests.factory import uid, write_ct
from tests.malformed import (
    pydicom_file,
    write_deflate_bomb,
    write_nested,
    write_trailing,
)
from tests.stores import ingested

runner = CliRunner()
AS_RECEIVED = PipelineOptions(recompression=None)

#: id -> (pydicom file, bytes appended)
TRAILING = {
    "zeros-after-native-pixel-data": ("CT_small.dcm", bytes(1000)),
    "three-odd-bytes": ("MR_small.dcm", b"\x01\x02\x03"),
    "junk-after-implicit-vr": ("rtplan.dcm", b"\xff\xff\xff\xff" + bytes(range(60))),
    "zeros-after-encapsulated-pixel-data": ("JPEG2000.dcm", bytes(4096)),
    "big-endian": ("MR_small_bigendian.dcm", bytes(20)),
    "megabytes-of-zeros": ("SC_rgb_rle.dcm", bytes(3 * TRAILING_CHUNK + 5)),
    "junk-after-the-deflate-stream": ("image_dfl.dcm", b"\x00\x01junk"),
}


@pytest.mark.parametrize("case", sorted(TRAILING))
def test_trailing_bytes_are_kept(case: str, tmp_path: Path, store: str) -> None:
    """A file with bytes after its last data element is stored with a warning; export gives it
    back byte for byte and verify proves it."""
    source, trailer = TRAILING[case]
    path = write_trailing(tmp_path / "in.dcm", source, trailer)
    data = path.read_bytes()
    report = ingested(store, [path], options=AS_RECEIVED)
    (result,) = report.results
    assert result.status == "stored", result.error
    assert any("kept as trailing bytes" in w for w in result.warnings), result.warnings
    assert result.key is not None
    with Archive.open(store) as archive:
        info = read_info(archive.storage, archive.keys, result.key)
        assert info.trailing is not None
        assert info.trailing.offset + info.trailing.size == len(data)
        assert info.trailing.size >= len(trailer)
        assert reconstruct_p10(archive, result.key.sop) == data
        checked = verify(archive, deep=True)
    assert checked.ok, checked.findings
    assert [v.equivalence for v in checked.instances] == ["bytes"]


@pytest.mark.parametrize("source", ["rtplan.dcm", "CT_small.dcm"])
def test_edited_instance_keeps_its_trailing_bytes(source: str, tmp_path: Path, store: str) -> None:
    """An edit changes the head only: the trailing bytes still end the exported file, with or
    without Pixel Data before them."""
    trailer = b"\xff\xff\xff\xff" + bytes(range(40))
    path = write_trailing(tmp_path / "in.dcm", source, trailer)
    (result,) = ingested(store, [path], options=AS_RECEIVED).results
    assert result.key is not None
    with Archive.open(store) as archive:
        update(archive, "study", result.key.study, ["StudyDescription=EDITED"])
        exported = reconstruct_p10(archive, result.key.sop)
        assert verify(archive, deep=True).ok
    assert exported.endswith(trailer)
    assert pydicom.dcmread(io.BytesIO(exported)).StudyDescription == "EDITED"


def test_zero_byte_at_a_read_boundary_is_no_trailer() -> None:
    """Where the bytes read so far end inside the next element (one zero byte into a big
    endian tag; inside an element out of order), reading goes on: they are not taken for
    trailing bytes."""
    element = struct.pack(">HH2sH", 0x0008, 0x0020, b"DA", 8) + b"20240101"
    following = struct.pack(">HH2sH", 0x0008, 0x0030, b"TM", 6) + b"120000"
    buffer = element + following[:1]
    top = parse_dataset(buffer, implicit=False, little=False, partial=True)
    assert top.trailing is None and top.end == len(element) and top.stop_reason is not None
    whole = parse_dataset(element + following, implicit=False, little=False)
    assert [e.tag for e in whole.elements] == [0x00080020, 0x00080030]
    assert whole.trailing is None and whole.stop_reason is None
    backwards = struct.pack(">HH2sH", 0x0008, 0x0010, b"SH", 16) + b"ABCD" * 4  # out of order
    top = parse_dataset(element + backwards[:14], implicit=False, little=False, partial=True)
    assert top.trailing is None and top.stop_reason is not None
    whole = parse_dataset(element + backwards, implicit=False, little=False)
    assert [e.tag for e in whole.elements] == [0x00080020, 0x00080010]


def test_large_trailer_is_bulk_data(tmp_path: Path, store: str) -> None:
    """Trailing bytes beyond the inline limit are stored as bulk data in chunks (zero padding:
    one object), not in the info record."""
    path = write_trailing(tmp_path / "in.dcm", "CT_small.dcm", bytes(2 * TRAILING_CHUNK + 1))
    (result,) = ingested(store, [path], options=AS_RECEIVED).results
    assert result.key is not None
    with Archive.open(store) as archive:
        info = read_info(archive.storage, archive.keys, result.key)
    assert info.trailing is not None
    assert [list(s) for s in info.trailing.segments] == [["bulk"]] * 3
    zero_chunk = hashlib.sha256(bytes(TRAILING_CHUNK)).hexdigest()
    assert info.trailing.segments[0] == info.trailing.segments[1] == {"bulk": zero_chunk}
    assert zero_chunk in info.bulk_hashes()


def test_small_trailer_is_literal(tmp_path: Path, store: str) -> None:
    """Trailing bytes up to the inline limit live in the info record."""
    path = write_trailing(tmp_path / "in.dcm", "CT_small.dcm", bytes(TRAILING_INLINE))
    (result,) = ingested(store, [path], options=AS_RECEIVED).results
    assert result.key is not None
    with Archive.open(store) as archive:
        info = read_info(archive.storage, archive.keys, result.key)
    assert info.trailing is not None
    assert [list(s) for s in info.trailing.segments] == [["literal"]]


def test_trailer_is_streamed(tmp_path: Path) -> None:
    """A small file followed by many megabytes of zeros decomposes in bounded memory."""
    trailer = 24 * TRAILING_CHUNK
    data = pydicom_file("CT_small.dcm").read_bytes() + bytes(trailer)
    tracemalloc.start()
    try:
        for _part in generate_parts(
            io.BytesIO(data), frames_uri=lambda _m: "frames", bulk_uri=lambda _m, sha: sha
        ):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < trailer // 4


def test_trailing_bytes_are_reported_with_verbose(tmp_path: Path, store: str) -> None:
    """-v prints the trailing bytes as a warning on that file."""
    path = write_trailing(tmp_path / "in.dcm", "CT_small.dcm", bytes(100))
    result = runner.invoke(app, ["instances", "-o", store, "-v", str(path)])
    assert result.exit_code == 0, result.stderr
    assert "warning: 100 bytes after the last data element (from byte 39206)" in result.stderr


@pytest.mark.parametrize("depth", [10, MAX_SEQUENCE_DEPTH])
def test_deep_sequences_are_stored(depth: int, tmp_path: Path, store: str) -> None:
    """Sequences nested up to the limit are stored and rebuilt byte for byte."""
    path = write_nested(tmp_path / "deep.dcm", depth)
    (result,) = ingested(store, [path], options=AS_RECEIVED).results
    assert result.status == "stored", result.error
    with Archive.open(store) as archive:
        assert reconstruct_p10(archive, uid(3)) == path.read_bytes()
        assert verify(archive, deep=True).ok


@pytest.mark.parametrize("depth", [MAX_SEQUENCE_DEPTH + 1, 500])
def test_too_deep_sequences_are_refused(depth: int, tmp_path: Path, store: str) -> None:
    """Deeper nesting is one worded error naming the file, the byte and the limit."""
    path = write_nested(tmp_path / "deep.dcm", depth)
    good = write_ct(tmp_path / "good.dcm", study=uid(1), series=uid(2), sop=uid(4))
    report = ingested(store, [path, good])
    bad, fine = report.results
    assert fine.status == "stored"
    assert isinstance(bad.exception, MalformedElementError)
    assert bad.error is not None
    assert re.fullmatch(
        rf"{re.escape(str(path))}: the data element at byte \d+ cannot be read: sequences nest "
        rf"deeper than {MAX_SEQUENCE_DEPTH} levels, the most read",
        bad.error,
    )


def test_deflate_bomb_is_refused(tmp_path: Path, store: str) -> None:
    """A deflated data set that inflates past the limit is refused, in bounded memory."""
    path = write_deflate_bomb(tmp_path / "bomb.dcm", INFLATE_FLOOR + (16 << 20))
    assert path.stat().st_size < INFLATE_FLOOR // 100
    tracemalloc.start()
    try:
        (result,) = ingested(store, [path]).results
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result.exception, InflationLimitError)
    assert result.error is not None
    assert result.error.startswith(f"{path}: the deflated data set inflates to more than 64 MB")
    assert "deflate bomb" in result.error
    assert peak < 2 * INFLATE_FLOOR


def test_deflated_file_within_the_limit_is_stored(tmp_path: Path, store: str) -> None:
    """A deflated data set that inflates a lot but below the limit is stored byte for byte."""
    path = write_deflate_bomb(tmp_path / "big.dcm", 8 << 20)
    (result,) = ingested(store, [path]).results
    assert result.status == "stored", result.error
    with Archive.open(store) as archive:
        assert reconstruct_p10(archive, uid(3)) == path.read_bytes()


def _dicomdir_tree() -> Path:
    return pydicom_file("DICOMDIR").parent


def test_dicomdir_is_named(store: str) -> None:
    """A DICOMDIR input says it is one, and how to follow it."""
    dicomdir = pydicom_file("DICOMDIR")
    (result,) = ingested(store, [dicomdir]).results
    assert isinstance(result.exception, DicomdirError)
    assert result.error == (
        f"{dicomdir}: is a DICOMDIR (a media directory, PS3.10 8.6), not an instance; "
        "--follow-dicomdir ingests the files it references"
    )


def test_follow_dicomdir(store: str) -> None:
    """--follow-dicomdir ingests every file the DICOMDIR references; over the whole tree (eight
    DICOMDIRs and the files they share), each file once."""
    result = runner.invoke(
        app, ["create", "-o", store, "--follow-dicomdir", str(pydicom_file("DICOMDIR"))]
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("31 instances stored, 6 studies built")
    tree = _dicomdir_tree()
    again = runner.invoke(app, ["create", "-o", store, "--follow-dicomdir", str(tree)])
    assert again.stdout.startswith("50 instances stored, 31 unchanged, 1 study built")
    assert again.stderr.splitlines() == [  # the tree's two text files; no DICOMDIR fails
        f"error: {tree / 'README.txt'}: not a DICOM file (no 'DICM' prefix, no DICOM data set)",
        f"error: {tree / 'TINY_ALPHA' / 'README'}: not a DICOM file (no 'DICM' prefix, no "
        "DICOM data set)",
    ]


def test_dicomdir_reference_leaving_its_folder_is_refused(tmp_path: Path, store: str) -> None:
    """A Referenced File ID that leaves the DICOMDIR's folder is refused by name; the others
    are read."""
    media = tmp_path / "media"
    outside = write_ct(tmp_path / "secret.dcm", study=uid(1), series=uid(2), sop=uid(3))
    inside = write_ct(media / "IMG1", study=uid(1), series=uid(2), sop=uid(4))
    ds = pydicom.dcmread(pydicom_file("DICOMDIR"))
    records = [r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r][:3]
    records[0].ReferencedFileID = ["..", outside.name]
    records[1].ReferencedFileID = [inside.name]
    records[2].ReferencedFileID = ["IMG1"]  # the same file again: read once
    ds.DirectoryRecordSequence = Sequence(records)
    ds.save_as(media / "DICOMDIR")
    result = runner.invoke(
        app, ["instances", "-o", store, "--follow-dicomdir", str(media / "DICOMDIR")]
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: {media / 'DICOMDIR'}: record 1: "
        f"Referenced File ID '..\\\\{outside.name}' is not a path inside the DICOMDIR's folder; "
        "not read"
    ]
    assert result.stdout.startswith("1 instance stored")


def test_internal_failure_is_worded(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure no error class foresees names the file and how far reading got, in words;
    only --verbose shows the traceback."""

    def broken(*_args: object) -> list[str]:
        raise KeyError("literal")

    monkeypatch.setattr("dicomweb_archive.dicom.parts.encodings_of", broken)
    path = write_ct(tmp_path / "a.dcm", study=uid(1), series=uid(2), sop=uid(3))
    (result,) = ingested(store, [path]).results
    assert isinstance(result.exception, UnreadableInputError)
    assert result.error is not None
    assert re.fullmatch(
        rf"{re.escape(str(path))}: cannot be read: bytes in it could not be interpreted, after "
        r"byte \d+ \(an internal error of dicomweb-archive; --verbose shows it\)",
        result.error,
    )
    quiet = runner.invoke(app, ["instances", "-o", store, str(path)])
    assert quiet.stderr.splitlines() == [f"error: {result.error}"]
    loud = runner.invoke(app, ["instances", "-o", store, "-v", str(path)])
    assert "Traceback" in loud.stderr and "KeyError: 'literal'" in loud.stderr


def test_transfer_syntax_that_is_no_uid(tmp_path: Path, store: str) -> None:
    """A Transfer Syntax UID with other characters than digits and dots is read as absent
    (the encoding guessed from the bytes, with a warning); the file is stored as it is."""
    path = write_ct(tmp_path / "a.dcm", study=uid(1), series=uid(2), sop=uid(3))
    data = path.read_bytes()
    syntax = b"1.2.840.10008.1.2.1\0"
    assert data.count(syntax) == 1
    path.write_bytes(data.replace(syntax, b"1.2.840.10008.\xe9.2.1\0"))
    (result,) = ingested(store, [path], options=AS_RECEIVED).results
    assert result.status == "stored", result.error
    assert "the Transfer Syntax UID is not a UID" in result.warnings
    with Archive.open(store) as archive:
        assert reconstruct_p10(archive, uid(3)) == path.read_bytes()


@pytest.mark.parametrize("term", [b"ISO_IR 10\x00", b"ISO_IR\x00100", b"\x00" * 10])
def test_null_in_specific_character_set(term: bytes, tmp_path: Path, store: str) -> None:
    """A Specific Character Set holding a null byte (padding, or inside the term, where
    pydicom's reader stops) is stored and exported as received, its text decoded as the term
    without the null says (the default repertoire when that term is unknown)."""
    path = write_ct(tmp_path / "a.dcm", study=uid(1), series=uid(2), sop=uid(3))
    ds = pydicom.dcmread(path)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jörg"
    ds.save_as(path)
    data = path.read_bytes()
    assert data.count(b"ISO_IR 100") == 1
    path.write_bytes(data.replace(b"ISO_IR 100", term))
    (result,) = ingested(store, [path], options=AS_RECEIVED).results
    assert result.status == "stored", result.error
    with Archive.open(store) as archive:
        assert reconstruct_p10(archive, uid(3)) == path.read_bytes()
        assert verify(archive, deep=True).ok
