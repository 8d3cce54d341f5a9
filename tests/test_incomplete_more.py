"""Files that end inside Pixel Data that were refused or taken for complete: a deflated data
set cut inside Pixel Data, a file cut inside the Pixel Data element's header; the summary
counts incomplete instances and no study whose only file failed as built."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from dicomweb_archive import Archive, ingest
from dicomweb_archive.cli.main import app
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.ops.export import Selection, export
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.instance import InstanceKey, read_info
from tests.factory import make_ct, uid
from tests.stores import index_dump

runner = CliRunner()


def _testdata(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str)
    return Path(path).read_bytes()


def _deflated_cut(memlevel: int) -> bytes:
    """image_dfl.dcm with its inflated data set cut 100000 bytes into Pixel Data and deflated
    again, whole (``memlevel`` 8: zlib parameters the skeleton finds; 1: none it tries)."""
    data = _testdata("image_dfl.dcm")
    start = 144 + struct.unpack("<I", data[140:144])[0]
    inner = zlib.decompressobj(-15).decompress(data[start:])
    pixel = inner.rfind(b"\xe0\x7f\x10\x00")
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15, memlevel)
    return data[:start] + deflater.compress(inner[: pixel + 12 + 100000]) + deflater.flush()


def _header_cut(by: int) -> bytes:
    """CT_small.dcm cut ``by`` bytes into its 12-byte Pixel Data element header."""
    data = _testdata("CT_small.dcm")
    return data[: data.rfind(b"\xe0\x7f\x10\x00") + by]


def _implicit_header_cut(by: int) -> bytes:
    """A generated Implicit VR Little Endian CT cut ``by`` bytes into its 8-byte Pixel Data
    element header."""
    ds = make_ct(study=uid(91), series=uid(92), sop=uid(93), rows=8, columns=8)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    return data[: data.rfind(b"\xe0\x7f\x10\x00") + by]


#: input, the number of the first frame not whole
CASES: dict[str, tuple[Callable[[], bytes], int]] = {
    "deflated-parameters-found": (partial(_deflated_cut, 8), 1),
    "deflated-kept-literal": (partial(_deflated_cut, 1), 1),
    **{f"explicit-header-cut-{by}": (partial(_header_cut, by), 1) for by in range(4, 12)},
    **{f"implicit-header-cut-{by}": (partial(_implicit_header_cut, by), 1) for by in (4, 7)},
}


def _ingest(tmp_path: Path, store: str, data: bytes) -> tuple[Path, InstanceKey]:
    path = tmp_path / "in" / "cut.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    with Archive.open_or_create(store) as archive:
        (result,) = ingest(archive, [path]).results
    assert result.status == "stored", result.error
    assert result.incomplete and any("stored incomplete" in w for w in result.warnings)
    assert result.key is not None
    return path, result.key


@pytest.mark.parametrize("case", sorted(CASES))
def test_stored_incomplete_and_exported_as_received(tmp_path: Path, store: str, case: str) -> None:
    """Stored (deflated: refused; header cut: taken for complete), no frame whole, flagged
    in the index, class incomplete in verify, exported byte for byte."""
    make, cut = CASES[case]
    path, key = _ingest(tmp_path, store, make())
    with Archive.open(store) as archive:
        info = read_info(archive.storage, archive.keys, key)
        assert (len(info.frames), incomplete_frame(info.skeleton)) == (0, cut)
        assert info.trailing is None
        report = verify(archive)
        assert report.ok and report.complete, report.findings
        assert [v.equivalence for v in report.instances] == ["incomplete"]
        out = export(archive, Selection(study=key.study), out=tmp_path / "out")
        assert out.ok and Path(out.items[0].name).read_bytes() == path.read_bytes()
    (row,) = index_dump(store)["instances"]
    assert row["incomplete"] == 1


def test_deflated_verify_exit_code(tmp_path: Path, store: str) -> None:
    """verify exits with 5 on a store holding the cut deflated file."""
    _ingest(tmp_path, store, _deflated_cut(8))
    result = runner.invoke(app, ["verify", "-o", store])
    assert result.exit_code == 5, result.output


@pytest.mark.parametrize("by", [1, 3])
def test_cut_inside_the_tag_stays_trailing_bytes(tmp_path: Path, store: str, by: int) -> None:
    """A cut inside the tag itself (nothing says it is Pixel Data) keeps the bytes as
    trailing bytes of a complete instance, as before."""
    path = tmp_path / "cut.dcm"
    path.write_bytes(_header_cut(by))
    with Archive.open_or_create(store) as archive:
        (result,) = ingest(archive, [path]).results
        assert result.status == "stored" and not result.incomplete
        assert result.key is not None
        info = read_info(archive.storage, archive.keys, result.key)
    assert incomplete_frame(info.skeleton) is None and info.trailing is not None


def test_summary_counts_incomplete_instances(tmp_path: Path, store: str) -> None:
    """Without -v the summary says how many instances were stored incomplete."""
    path = tmp_path / "cut.dcm"
    path.write_bytes(_header_cut(10))
    result = runner.invoke(app, ["create", "-o", store, str(path)])
    assert result.exit_code == 0, result.output
    assert "1 instance stored, 1 stored incomplete (-v says why), 1 study built" in result.stdout


def test_study_whose_only_file_failed_is_not_built(tmp_path: Path, store: str) -> None:
    """A file refused after its header was read (it ends inside an element after Pixel Data)
    leaves no study, and the summary counts none as built."""
    ds = make_ct(study=uid(94), series=uid(95), sop=uid(96), rows=8, columns=8)
    ds.add_new(0xFFFCFFFC, "OB", b"\x01" * 100)  # Data Set Trailing Padding
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    path = tmp_path / "cut.dcm"
    path.write_bytes(buffer.getvalue()[:-50])
    result = runner.invoke(app, ["create", "-o", store, str(path)])
    assert result.exit_code == 1, result.output
    assert "0 instances stored, 0 studies built" in result.stdout
    assert "cut.dcm: file is truncated" in result.stderr
