"""P10 export: byte-identical files, zip, DICOMDIR, selection; checked by DCMTK too."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet
from typer.testing import CliRunner

from dicomweb_archive import Archive, ingest
from dicomweb_archive.cli.main import PART10_APP, app
from dicomweb_archive.errors import BadQueryError, NoSuchStudyError
from dicomweb_archive.index.queries import parse_filters
from dicomweb_archive.ops.export import Selection, export, member_name
from dicomweb_archive.store.keys import StoreKeys
from tests.conftest import corpus_files, corpus_id
from tests.factory import uid, write_ct, write_series
from tests.parts_helpers import assert_same_instance
from tests.stores import ingested
from tests.test_corpus import NOT_INGESTED

DCMDUMP = shutil.which("dcmdump")
KEYS = StoreKeys()
runner = CliRunner()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dcmdump_ok(path: Path) -> bool:
    assert DCMDUMP is not None
    done = subprocess.run([DCMDUMP, "-q", str(path)], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "path", [p for p in corpus_files() if corpus_id(p) not in NOT_INGESTED], ids=corpus_id
)
def test_corpus_exports_byte_identical(path: Path, tmp_path: Path, store: str) -> None:
    """Every ingestible corpus file comes back with the same SHA-256, or pixel-identical where
    its compressed original was recompressed (and dcmdump agrees)."""
    with Archive.open_or_create(store) as archive:
        key = ingest(archive, [path]).results[0].key
        assert key is not None
        selection = Selection(study=key.study, series=key.series, sops=(key.sop,))
        report = export(archive, selection, out=tmp_path / "out")
    assert report.ok, report.failures
    exported = tmp_path / "out" / member_name(key)
    if report.items[0].recompressed:  # a JPEG 2000 original, stored as JPEG-LS by default
        assert_same_instance(exported.read_bytes(), path.read_bytes())
    else:
        assert _sha(exported.read_bytes()) == _sha(path.read_bytes())
    if DCMDUMP is not None and _dcmdump_ok(path):
        assert _dcmdump_ok(exported)


def test_dcmdump_is_installed_in_ci() -> None:
    """The independent reader is there (``.ci/run`` installs DCMTK)."""
    if DCMDUMP is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have DCMTK: .ci/run installs it")
        pytest.skip("DCMTK is not installed on this machine (.ci/run installs it)")
    assert _dcmdump_ok(Path(str(pydicom.data.get_testdata_file("CT_small.dcm"))))


@pytest.fixture
def filled(tmp_path: Path, store: str) -> tuple[str, list[Path]]:
    """A store of three studies (two of patient P1), and the files ingested."""
    files = [
        *write_series(tmp_path / "in" / "a", count=3, patient_id="P1"),
        *write_series(tmp_path / "in" / "b", count=2, patient_id="P2"),
        write_ct(
            tmp_path / "in" / "c.dcm",
            study=uid(7),
            series=uid(8),
            sop=uid(9),
            frames=4,
            patient_id="P1",
            patient_name="ROE^ANN",
        ),
    ]
    assert ingested(store, files).ok
    return store, files


def _by_sop(files: list[Path]) -> dict[str, bytes]:
    return {
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f.read_bytes()
        for f in files
    }


def test_zip_stream_and_file(filled: tuple[str, list[Path]], tmp_path: Path) -> None:
    """A zip (file or non-seekable stream) holds each instance byte for byte; pydicom reads it."""
    root, files = filled
    originals = _by_sop(files)
    buffer = io.BytesIO()
    with Archive.open(root) as archive:
        report = export(archive, Selection(patient_id="P1"), zip_file=tmp_path / "p1.zip")
        assert report.ok and len(report.items) == 4
        export(archive, Selection(patient_id="P1"), zip_file=buffer)
    for zipped in (zipfile.ZipFile(tmp_path / "p1.zip"), zipfile.ZipFile(buffer)):
        for name in zipped.namelist():
            data = zipped.read(name)
            ds = pydicom.dcmread(io.BytesIO(data))
            assert data == originals[str(ds.SOPInstanceUID)]


def test_dicomdir_media(filled: tuple[str, list[Path]], tmp_path: Path) -> None:
    """--dicomdir writes media that pydicom's FileSet opens, with every instance."""
    root, _files = filled
    with Archive.open(root) as archive:
        report = export(archive, Selection(patient_id="P1"), out=tmp_path / "cd", dicomdir=True)
    assert report.ok
    fileset = FileSet(tmp_path / "cd" / "DICOMDIR")
    assert len(fileset) == 4
    for instance in fileset:
        assert instance.load().SOPInstanceUID


def test_selection_by_series_instances_and_query(
    filled: tuple[str, list[Path]], tmp_path: Path
) -> None:
    """Study, series, instances, patient and query select what they say."""
    root, _ = filled
    with Archive.open(root) as archive:
        one = export(
            archive, Selection(study=uid(7), series=uid(8), sops=(uid(9),)), out=tmp_path / "1"
        )
        assert [i.key.sop for i in one.items] == [uid(9)]
        roe = export(
            archive, Selection(query=parse_filters(["PatientName=roe*"])), out=tmp_path / "2"
        )
        assert [i.key.study for i in roe.items] == [uid(7)]
        dated = export(
            archive,
            Selection(query=parse_filters(["StudyDate=20230101-20241231"])),
            out=tmp_path / "3",
        )
        assert len(dated.items) == 6
        with pytest.raises(NoSuchStudyError):
            export(archive, Selection(study=uid(7), series=uid(99)), out=tmp_path / "4")
        with pytest.raises(NoSuchStudyError):
            export(
                archive, Selection(query=parse_filters(["PatientID=NOBODY"])), out=tmp_path / "5"
            )
    with pytest.raises(BadQueryError):
        parse_filters(["Colour=blue"])


def test_damaged_instance_is_not_exported(filled: tuple[str, list[Path]], tmp_path: Path) -> None:
    """A flipped frame byte makes that instance fail; nothing wrong is written."""
    root, _ = filled
    with Archive.open(root) as archive:
        storage = archive.storage
        frame = next(
            i.key for i in storage.list_prefix(KEYS.study(uid(7))) if i.key.endswith("/2.mht")
        )
        data = bytearray(storage.get(frame))
        data[-100] ^= 0xFF
        storage.put(frame, bytes(data))
        report = export(archive, Selection(study=uid(7)), out=tmp_path / "out")
    assert not report.ok and "frame 2" in (report.failures[0].error or "")
    assert not any((tmp_path / "out").rglob("*.dcm"))


def test_cli_part10(filled: tuple[str, list[Path]], tmp_path: Path) -> None:
    """mkdicomwebpart10 STUDY writes the files; export - streams a zip; errors exit 1/2."""
    root, _ = filled
    result = runner.invoke(PART10_APP, ["-o", root, "--out", str(tmp_path / "o"), uid(7)])
    assert result.exit_code == 0, result.output
    assert "1 instance exported (1 bytes)" in result.stdout
    assert (tmp_path / "o" / uid(7) / uid(8) / f"{uid(9)}.dcm").is_file()
    streamed = runner.invoke(app, ["export", "-o", root, "--out", "-", "--patient-id", "P2"])
    assert streamed.exit_code == 0
    assert len(zipfile.ZipFile(io.BytesIO(streamed.stdout_bytes)).namelist()) == 2
    missing = runner.invoke(PART10_APP, ["-o", root, "--out", str(tmp_path), uid(55)])
    assert missing.exit_code == 1 and "not in the store" in missing.stderr
    bad = runner.invoke(PART10_APP, ["-o", root, "--out", str(tmp_path), "--query", "X=1"])
    assert bad.exit_code == 2
    nothing = runner.invoke(PART10_APP, ["-o", root, "--out", str(tmp_path)])
    assert nothing.exit_code == 2


def test_export_memory_is_bounded_by_a_frame(tmp_path: Path, store: str) -> None:
    """Exporting a 48-frame instance peaks at a few frames of memory, not the file size."""
    import tracemalloc

    path = write_ct(
        tmp_path / "big.dcm",
        study=uid(1),
        series=uid(2),
        sop=uid(3),
        frames=48,
        rows=512,
        columns=512,
    )
    frame = 512 * 512 * 2
    with Archive.open_or_create(store) as archive:
        ingest(archive, [path])
        export(archive, Selection(study=uid(1)), out=tmp_path / "warm")  # imports, caches
        tracemalloc.start()
        report = export(archive, Selection(study=uid(1)), out=tmp_path / "out")
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert report.ok and path.stat().st_size > 40 * frame
    assert peak < 4 * frame, peak


#: compressed or big endian file -> the native file with the same pixels
TRANSCODE_CASES = {
    "MR_small_jpeg_ls_lossless.dcm": "MR_small.dcm",
    "MR_small_jp2klossless.dcm": "MR_small.dcm",
    "MR_small_RLE.dcm": "MR_small.dcm",
    "MR_small_bigendian.dcm": "MR_small.dcm",
    "SC_rgb_small_odd_big_endian.dcm": "SC_rgb_small_odd.dcm",
}


@pytest.mark.parametrize("name", sorted(TRANSCODE_CASES))
def test_transcode_to_explicit_little_endian(name: str, tmp_path: Path, store: str) -> None:
    """--transfer-syntax 1.2.840.10008.1.2.1 decodes frames to the native file's pixels."""
    import numpy as np

    source = Path(str(pydicom.data.get_testdata_file(name, download=False)))
    native_name = TRANSCODE_CASES[name]
    native = pydicom.data.get_testdata_file(native_name, download=False)
    if native is None:
        pytest.skip(f"{native_name} is not in this pydicom's corpus")
    with Archive.open_or_create(store) as archive:
        key = ingest(archive, [source]).results[0].key
        assert key is not None
        report = export(
            archive,
            Selection(study=key.study),
            out=tmp_path / "out",
            transfer_syntax="1.2.840.10008.1.2.1",
        )
    assert report.ok and report.items[0].transcoded
    written = tmp_path / "out" / member_name(key)
    ds = pydicom.dcmread(written)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    np.testing.assert_array_equal(ds.pixel_array, pydicom.dcmread(str(native)).pixel_array)
    if DCMDUMP is not None:
        assert _dcmdump_ok(written)


def test_transcode_refuses_lossy_targets(filled: tuple[str, list[Path]], tmp_path: Path) -> None:
    """A lossy target (JPEG Baseline) is a usage error: export never loses pixels."""
    from dicomweb_archive.errors import UsageError

    root, _ = filled
    out = tmp_path / "out"
    with Archive.open(root) as archive, pytest.raises(UsageError, match="can transcode to"):
        export(archive, Selection(study=uid(7)), out=out, transfer_syntax="1.2.840.10008.1.2.4.50")
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.parametrize(
    "syntax",
    [
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.5",
    ],
    ids=["jpeg-ls", "jpeg2000", "htj2k", "rle"],
)
@pytest.mark.parametrize("name", ["MR_small.dcm", "SC_rgb_rle_2frame.dcm", "CT_small.dcm"])
def test_transcode_to_lossless_compressed(
    name: str, syntax: str, tmp_path: Path, store: str
) -> None:
    """Compressed lossless targets: every frame decodes to the original pixels."""
    import numpy as np

    from dicomweb_archive.dicom.codecs import decode_frame
    from dicomweb_archive.model.pixel import PixelDescription

    source = Path(str(pydicom.data.get_testdata_file(name, download=False)))
    with Archive.open_or_create(store) as archive:
        key = ingest(archive, [source]).results[0].key
        assert key is not None
        report = export(
            archive, Selection(study=key.study), out=tmp_path / "out", transfer_syntax=syntax
        )
    assert report.ok, report.failures
    written = pydicom.dcmread(tmp_path / "out" / member_name(key))
    assert written.file_meta.TransferSyntaxUID == syntax
    original = pydicom.dcmread(source)
    expected = original.pixel_array.reshape(
        int(original.get("NumberOfFrames") or 1),
        *original.pixel_array.shape[-3 if original.SamplesPerPixel > 1 else -2 :],
    )
    pixel = PixelDescription(
        int(written.Rows),
        int(written.Columns),
        int(written.SamplesPerPixel),
        int(written.BitsAllocated),
        int(written.BitsStored),
        int(written.PixelRepresentation),
        str(written.PhotometricInterpretation),
    )
    frames = pydicom.encaps.generate_frames(written.PixelData, number_of_frames=len(expected))
    for frame, want in zip(frames, expected, strict=True):
        got, _ = decode_frame(bytes(frame), syntax, pixel)
        if got.dtype.kind == "u" and want.dtype.kind == "i":
            got = got.view(want.dtype)
        np.testing.assert_array_equal(got.reshape(want.shape), want)
    if DCMDUMP is not None:
        assert _dcmdump_ok(tmp_path / "out" / member_name(key))
