"""A file that ends inside Pixel Data is stored, flagged incomplete, served frame by frame as
far as frames are whole, verified in a class of its own, and exported as received."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from dicomweb_archive import Archive, ingest
from dicomweb_archive.cli.main import app
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.ops.export import Selection, export
from dicomweb_archive.ops.ingest import write_stream
from dicomweb_archive.ops.ingest_types import PipelineOptions
from dicomweb_archive.ops.reindex import ensure_index, reindex
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.instance import InstanceKey, read_info
from tests.factory import make_ct, uid
from tests.serving import Http, serving
from tests.stores import index_dump

runner = CliRunner()


def _testdata(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str)
    return Path(path)


def _native_three_frames(tmp_path: Path) -> bytes:
    """A generated 3-frame CT (native): cut inside frame 2, frame 1 is whole."""
    ds = make_ct(study=uid(81), series=uid(82), sop=uid(83), frames=3, rows=32, columns=32)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()[: -(32 * 32 * 2) - 100]


def _cut(name: str, by: int) -> Callable[[Path], bytes]:
    return lambda _tmp: _testdata(name).read_bytes()[:-by]


#: input, whole frames, the number of the first frame not whole
CASES = {
    "native-3-frames": (_native_three_frames, 1, 2),
    "native-1-frame": (_cut("CT_small.dcm", 1000), 0, 1),
    "jpeg2000-recompressed": (_cut("MR_small_jp2klossless.dcm", 500), 0, 1),
    "rle-2-frames": (_cut("SC_rgb_rle_2frame.dcm", 300), 1, 2),
    # the file ends where frame 2's one fragment ends (RLE: one fragment per frame): whole
    "rle-delimiter-cut": (_cut("SC_rgb_rle_2frame.dcm", 4), 2, 3),
    "rle-item-end": (_cut("SC_rgb_rle_2frame.dcm", 8), 2, 3),
    "rle-frame-1-item-end": (_cut("SC_rgb_rle_2frame.dcm", 8 + 672), 1, 2),
}


def _store_cut(tmp_path: Path, store: str, case: str) -> tuple[Path, InstanceKey]:
    make, _whole, _cut_at = CASES[case]
    path = tmp_path / "in" / f"{case}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make(tmp_path))
    with Archive.open_or_create(store) as archive:
        (result,) = ingest(archive, [path]).results
    assert result.status == "stored", result.error
    assert any("stored incomplete" in w for w in result.warnings)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return path, InstanceKey(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


@pytest.mark.parametrize("case", sorted(CASES))
def test_stored_flagged_and_exported_as_received(tmp_path: Path, store: str, case: str) -> None:
    """Stored (it was refused), whole frames stored, flagged in the index (also after a
    reindex), class incomplete in verify, exported byte for byte."""
    path, key = _store_cut(tmp_path, store, case)
    _make, whole, cut = CASES[case]
    with Archive.open(store) as archive:
        info = read_info(archive.storage, archive.keys, key)
        assert (len(info.frames), incomplete_frame(info.skeleton)) == (whole, cut)
        assert info.rebuilds_original()
        report = verify(archive)
        assert report.ok and report.complete, report.findings
        assert [v.equivalence for v in report.instances] == ["incomplete"]
        assert verify(archive, deep=True).ok
        out = export(archive, Selection(study=key.study), out=tmp_path / "out")
        assert out.ok and Path(out.items[0].name).read_bytes() == path.read_bytes()
        (row,) = index_dump(store)["instances"]
        assert row["incomplete"] == 1
        reindex(archive)
    assert index_dump(store)["instances"] == [row]


def test_verify_exit_code(tmp_path: Path, store: str) -> None:
    """verify says how many instances are incomplete and exits with 5; export counts them
    in the same class."""
    _store_cut(tmp_path, store, "native-3-frames")
    result = runner.invoke(app, ["verify", "-o", store])
    assert result.exit_code == 5, result.output
    assert "no differences, but 1 instance incomplete" in result.stdout
    exported = runner.invoke(app, ["export", "-o", store, "--out", str(tmp_path / "o"), uid(81)])
    assert exported.exit_code == 0, exported.output
    assert "1 instance exported (1 incomplete)" in exported.output


def test_served_whole_frames_and_410(tmp_path: Path, store: str) -> None:
    """The whole frame is served; the frame the file ends inside is answered 410 Gone."""
    _path, key = _store_cut(tmp_path, store, "rle-2-frames")
    with serving(store) as base:
        (first,) = DICOMwebClient(base).retrieve_instance_frames(
            key.study, key.series, key.sop, [1]
        )
        assert len(first) > 0
        path = "/".join(("", *base.split("//")[1].split("/")[1:]))
        url = f"{path}/studies/{key.study}/series/{key.series}/instances/{key.sop}/frames"
        answer = Http(base).get(f"{url}/2", {"Accept": "multipart/related; type=*/*"})
        assert answer.status_code == 410
        assert b"ends inside Pixel Data" in answer.content
        assert Http(base).get(f"{url}/1,2", {}).status_code == 410
        # a frame the instance never had is not gone but not found
        assert Http(base).get(f"{url}/99", {}).status_code == 404


RECOMPRESS_RLE = PipelineOptions(recompression=Recompression.from_options(["rle"]))


def test_recompressed_frames_are_read_again(tmp_path: Path, store: str) -> None:
    """An RLE file cut in frame 2 whose frame 1 was recompressed (its codestream not kept) is
    read again with frames as received: stored, exported byte for byte."""
    path = tmp_path / "cut.dcm"
    path.write_bytes(_cut("SC_rgb_rle_2frame.dcm", 300)(tmp_path))
    with Archive.open_or_create(store) as archive:
        (result,) = ingest(archive, [path], options=RECOMPRESS_RLE).results
        assert result.status == "stored" and result.frames_recompressed == 0
        out = export(
            archive,
            Selection(study=str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)),
            out=tmp_path / "o",
        )
    assert out.ok and Path(out.items[0].name).read_bytes() == path.read_bytes()


def test_pipe_with_recompressed_frames_is_refused_by_name(tmp_path: Path, store: str) -> None:
    """The same from a stream that cannot be read again is refused in one line that says what
    to do (its received codestreams are gone)."""
    data = _cut("SC_rgb_rle_2frame.dcm", 300)(tmp_path)

    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    with Archive.open_or_create(store) as archive:
        result = write_stream(archive, Pipe(data), name="stdin", options=RECOMPRESS_RLE)
    assert result.status == "failed"
    assert result.error is not None and "--keep-originals" in result.error
    assert result.error.startswith("stdin: ") and "\n" not in result.error


def test_not_transcoded(tmp_path: Path, store: str) -> None:
    """--transfer-syntax refuses an incomplete instance in one worded line (exit code 1)."""
    _path, key = _store_cut(tmp_path, store, "native-3-frames")
    result = runner.invoke(
        app,
        [
            "export",
            "-o",
            store,
            "--out",
            str(tmp_path / "o"),
            "--transfer-syntax",
            "1.2.840.10008.1.2",
            key.study,
        ],
    )
    assert result.exit_code == 1, result.output
    assert "ends inside Pixel Data" in result.stderr and "unexpected" not in result.stderr


@pytest.mark.local
def test_index_of_the_previous_version_gets_both_flags(tmp_path: Path, store: str) -> None:
    """An index made before migrations 4 and 5 is migrated and rebuilt: the non-conformant
    UID and incomplete flags come from the store's files."""
    _path, key = _store_cut(tmp_path, store, "native-3-frames")
    before = index_dump(store)["instances"]
    database = Path(store) / ".dicomweb-archive" / "local" / "index.sqlite"
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.executescript(
            "DROP INDEX studies_accession_number; DROP INDEX studies_patient_name_upper;"
            " DROP INDEX studies_date_uid;"  # migration 6 came later still
            " DROP INDEX instances_incomplete; DROP INDEX instances_nonconformant_uid;"
            " ALTER TABLE instances DROP COLUMN incomplete;"
            " ALTER TABLE instances DROP COLUMN nonconformant_uid;"
            " DELETE FROM instances; PRAGMA user_version = 3;"
        )
    with Archive.open(store) as archive:
        ensure_index(archive)
    assert index_dump(store)["instances"] == before
    assert before[0]["incomplete"] == 1 and before[0]["sop_instance_uid"] == key.sop


def test_series_with_an_incomplete_instance_is_refused_before_sending(
    tmp_path: Path, store: str
) -> None:
    """A series retrieval in a syntax the incomplete instance cannot be sent in is answered 406
    before anything is sent, even when other instances come first (it was a 200 cut short)."""
    whole = make_ct(study=uid(81), series=uid(82), sop=uid(80), frames=3, rows=32, columns=32)
    whole.InstanceNumber = 0
    whole.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    first = tmp_path / "in" / "first.dcm"
    first.parent.mkdir(parents=True, exist_ok=True)
    whole.save_as(first, enforce_file_format=True)
    with Archive.open_or_create(store) as archive:
        (result,) = ingest(archive, [first]).results
    assert result.status == "stored", result.error
    _path, key = _store_cut(tmp_path, store, "native-3-frames")
    with serving(store) as base:
        path = "/".join(("", *base.split("//")[1].split("/")[1:]))
        accept = (
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80'
        )
        answer = Http(base).get(
            f"{path}/studies/{key.study}/series/{key.series}", {"Accept": accept}
        )
        assert answer.status_code == 406
        assert b"incomplete" in answer.content
