"""Recompression at ingest: export and verify afterwards, lossy JPEG, mixed instances, edits."""

from __future__ import annotations

import hashlib
import io
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from dicomweb_archive import ingest, reconstruct_p10
from dicomweb_archive.cli.main import SEED_APPS
from dicomweb_archive.dicom.codecs import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_LS_LOSSLESS,
    NATIVE_SYNTAXES,
    encode,
)
from dicomweb_archive.dicom.recompress import (
    Recompression,
    is_recompressed,
    rebuilds_original,
    stored_syntaxes,
)
from dicomweb_archive.errors import UsageError
from dicomweb_archive.ops.delete import apply_delete, plan_delete
from dicomweb_archive.ops.export import Selection, export, member_name
from dicomweb_archive.ops.ingest import PipelineOptions
from dicomweb_archive.ops.update import apply_update, plan_update
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.files import gzip_bytes, read_json_gz, to_json_bytes, write_bytes
from dicomweb_archive.store.instance import InstanceKey
from dicomweb_archive.store.layout import StoreLayout
from dicomweb_archive.store.multipart import boundary_for, part_header, part_trailer, read_part
from tests.factory import make_ct, uid, write_ct, write_odd_bits, write_series
from tests.parts_helpers import assert_same_instance
from tests.test_frames import DECODABLE, EVERY_SOURCE

SOURCES = [p for p in DECODABLE if pydicom.dcmread(p).file_meta.TransferSyntaxUID in EVERY_SOURCE]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _info(store: Path, sop: str) -> dict[str, Any]:
    (path,) = [p for p in store.rglob("info.json.gz") if p.parent.name == sop]
    info: dict[str, Any] = read_json_gz(path)
    return info


@pytest.mark.slow
@pytest.mark.parametrize("target", [JPEG_LS_LOSSLESS, HTJ2K_LOSSLESS])
@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_export_and_verify_after_recompression(path: Path, target: str, tmp_path: Path) -> None:
    """Uncompressed originals export byte for byte; compressed ones pixel-identical; verify
    calls them bytes and pixels+attributes and finds nothing wrong."""
    store = tmp_path / "store"
    policy = Recompression(EVERY_SOURCE, target, target)
    key = ingest([path], store, options=PipelineOptions(recompression=policy)).results[0].key
    assert key is not None
    report = export(
        store, Selection(study=key.study, series=key.series, sops=(key.sop,)), out=tmp_path / "o"
    )
    assert report.ok, report.failures
    exported = (tmp_path / "o" / member_name(key)).read_bytes()
    info = _info(store, key.sop)
    native = info["original"]["transfer_syntax_uid"] in NATIVE_SYNTAXES
    checked = verify(store, deep=True)
    assert checked.ok, checked.findings
    (verdict,) = checked.instances
    if native or not any(is_recompressed(f) for f in info["frames"]):
        assert _sha(exported) == _sha(path.read_bytes())
        assert verdict.equivalence == "bytes"
    else:
        assert report.items[0].recompressed
        assert pydicom.dcmread(io.BytesIO(exported)).file_meta.TransferSyntaxUID == target
        assert_same_instance(exported, path.read_bytes())
        assert verdict.equivalence == "pixels+attributes"
    assert rebuilds_original(info) == (verdict.equivalence == "bytes")


def test_recompressed_export_in_a_requested_syntax(tmp_path: Path) -> None:
    """A recompressed JPEG 2000 original exports pixel-identical in the syntax asked for."""
    source = next(p for p in DECODABLE if p.name == "MR_small_jp2klossless.dcm")
    store = tmp_path / "store"
    key = ingest([source], store).results[0].key
    assert key is not None
    for syntax in (EXPLICIT_VR_LITTLE_ENDIAN, HTJ2K_LOSSLESS):
        out = tmp_path / syntax
        report = export(store, Selection(study=key.study), out=out, transfer_syntax=syntax)
        assert report.ok and report.items[0].recompressed and report.items[0].transcoded
        data = (out / member_name(key)).read_bytes()
        assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == syntax
        assert_same_instance(data, source.read_bytes())


def _forge_first_frame(store: Path, key: InstanceKey, *, consistent: bool) -> None:
    """Replace frame 1 by another valid JPEG-LS frame (one pixel changed) and record its file
    hash; with ``consistent`` also its pixel hash, so that the store agrees with itself."""
    layout = StoreLayout(store)
    frame = layout.frame(key.study, key.series, key.sop, 1)
    content_type, payload = read_part(frame)
    ours = pydicom.dcmread(io.BytesIO(reconstruct_p10(store, key.sop)))
    assert ours.file_meta.TransferSyntaxUID == JPEG_LS_LOSSLESS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = ours.pixel_array.copy()
    pixels[10, 10] += 1
    new_payload = encode(pixels, JPEG_LS_LOSSLESS)
    assert payload != new_payload
    info_path = layout.info(key.study, key.series, key.sop)
    info = read_json_gz(info_path)
    info["frames"][0]["sha256"] = _sha(new_payload)
    info["frames"][0]["size"] = len(new_payload)
    if consistent:
        info["frames"][0]["source"]["pixels_sha256"] = _sha(pixels.astype("<i2").tobytes())
    boundary = boundary_for(_sha(new_payload))
    write_bytes(frame, part_header(boundary, content_type) + new_payload + part_trailer(boundary))
    write_bytes(info_path, gzip_bytes(to_json_bytes(info)))


def _jp2k_store(tmp_path: Path) -> tuple[Path, Path, InstanceKey]:
    source = next(p for p in DECODABLE if p.name == "MR_small_jp2klossless.dcm")
    store = tmp_path / "store"
    key = ingest([source], store).results[0].key
    assert key is not None
    return source, store, key


def test_verify_finds_a_damaged_recompressed_frame(tmp_path: Path) -> None:
    """A frame file whose hash was recomputed after damage still fails: it must decode to the
    source pixels recorded at ingest."""
    _source, store, key = _jp2k_store(tmp_path)
    _forge_first_frame(store, key, consistent=False)
    checked = verify(store, studies=[key.study])
    assert any(f.kind == "pixels" for f in checked.findings), checked.findings
    assert checked.instances[0].equivalence == "failed"


def test_verify_against_the_originals_closes_the_proof(tmp_path: Path) -> None:
    """With --against, the original's frames must decode to the recorded pixels: a frame
    replaced together with its file and pixel hashes passes the frame checks alone, not
    against the originals."""
    source, store, key = _jp2k_store(tmp_path)
    originals = tmp_path / "originals"
    originals.mkdir()
    shutil.copy(source, originals / source.name)
    checked = verify(store, against=originals)
    assert checked.ok and checked.against["identical"] == 1, checked.findings
    assert checked.instances[0].equivalence == "pixels+attributes"
    _forge_first_frame(store, key, consistent=True)  # the deduplicated record still differs
    alone = verify(store)
    assert not {f.kind for f in alone.findings} & {"pixels", "hash", "against"}, alone.findings
    checked = verify(store, against=originals)
    against = [f.message for f in checked.findings if f.kind == "against"]
    assert against == ["frame 1 of the original decodes to other pixels than the store's"], (
        checked.findings
    )


def test_lossy_jpeg_keeps_the_original(tmp_path: Path) -> None:
    """-T jpeg: colour frames are served as JPEG baseline; the received frames stay in the
    store as bulk data, so export is still byte for byte; delete removes them too."""
    names = {"examples_rgb_color.dcm", "SC_rgb_rle_2frame.dcm", "CT_small.dcm"}
    sources = [p for p in DECODABLE if p.name in names]
    store = tmp_path / "store"
    policy = Recompression(EVERY_SOURCE, JPEG_LS_LOSSLESS, JPEG_BASELINE)
    report = ingest(sources, store, options=PipelineOptions(recompression=policy))
    assert report.ok
    for source, result in zip(sources, report.results, strict=True):
        assert result.key is not None
        info = _info(store, result.key.sop)
        colour = source.name != "CT_small.dcm"
        expected = JPEG_BASELINE if colour else JPEG_LS_LOSSLESS
        assert stored_syntaxes(info) == [expected]
        layout = StoreLayout(store)
        content_type, payload = read_part(
            layout.frame(result.key.study, result.key.series, result.key.sop, 1)
        )
        assert content_type.startswith("image/jpeg;") == colour
        if colour:
            kept = {f["source"]["bulk"] for f in info["frames"]}
            assert kept <= {b["sha256"] for b in info["bulkdata"]}
            assert bytes(payload).startswith(b"\xff\xd8")
        assert _sha(reconstruct_p10(store, result.key.sop)) == _sha(source.read_bytes())
    checked = verify(store)
    assert checked.ok and {v.equivalence for v in checked.instances} == {"bytes"}
    rle = next(r.key for s, r in zip(sources, report.results, strict=True) if "rle" in s.name)
    assert rle is not None
    apply_delete(store, plan_delete(store, "study", rle.study))
    assert verify(store).ok


def test_mixed_instance(tmp_path: Path) -> None:
    """A frame that cannot be given back exactly is kept beside recompressed ones: per-frame
    syntaxes, both in 0008,3002, byte-exact export, verify bytes."""
    path = write_odd_bits(tmp_path / "odd.dcm", study=uid(61), series=uid(62), sop=uid(63))
    store = tmp_path / "store"
    (result,) = ingest([path], store).results
    assert (result.frames_recompressed, result.frames_kept) == (1, 1)
    assert any("frame(s) 2 kept as received" in w for w in result.warnings)
    info = _info(store, uid(63))
    assert stored_syntaxes(info) == [JPEG_LS_LOSSLESS, EXPLICIT_VR_LITTLE_ENDIAN]
    metadata = read_json_gz(next(store.rglob(f"{uid(63)}/metadata.gz")))[0]
    assert metadata["00083002"]["Value"] == [JPEG_LS_LOSSLESS, EXPLICIT_VR_LITTLE_ENDIAN]
    assert reconstruct_p10(store, uid(63)) == path.read_bytes()
    assert verify(store).ok


def test_edit_after_recompression(tmp_path: Path) -> None:
    """An attribute edit rewrites metadata only; the recompressed frames are untouched and
    both kinds of instance export with the edit and the original pixels."""
    source = next(p for p in DECODABLE if p.name == "MR_small_jp2klossless.dcm")
    files = write_series(
        tmp_path / "in", count=1, study=str(pydicom.dcmread(source).StudyInstanceUID)
    )
    files.append(Path(shutil.copy(source, tmp_path / "in" / source.name)))
    store = tmp_path / "store"
    assert ingest(files, store).ok
    study = str(pydicom.dcmread(source).StudyInstanceUID)
    frames_before = {p: p.stat().st_ino for p in store.rglob("*.mht")}
    apply_update(store, plan_update(store, "study", study, ["StudyDescription=Edited"]))
    assert {p: p.stat().st_ino for p in store.rglob("*.mht")} == frames_before
    report = export(store, Selection(study=study), out=tmp_path / "o")
    assert report.ok, report.failures
    for item, original in zip(
        sorted(report.items, key=lambda i: i.key.sop),
        sorted(files, key=lambda f: str(pydicom.dcmread(f).SOPInstanceUID)),
        strict=True,
    ):
        ours = pydicom.dcmread(item.name)
        theirs = pydicom.dcmread(original)
        assert ours.StudyDescription == "Edited"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            np.testing.assert_array_equal(ours.pixel_array, theirs.pixel_array)
    checked = verify(store)
    assert checked.ok, checked.findings
    assert {v.equivalence for v in checked.instances} == {"edited"}


def test_policy_from_options() -> None:
    """The seed's defaults, aliases and targets; lossy JPEG only for colour."""
    default = Recompression.from_options()
    assert default is not None and default.grey == default.colour == JPEG_LS_LOSSLESS
    assert "1.2.840.10008.1.2.4.91" in default.sources
    assert "1.2.840.10008.1.2.5" not in default.sources
    assert Recompression.from_options(disabled=True) is None
    assert Recompression.from_options(grey="none", colour="none") is None
    rle = Recompression.from_options(["rle"], "htj2k")
    assert rle is not None and rle.sources == {"1.2.840.10008.1.2.5"}
    assert rle.grey == HTJ2K_LOSSLESS and rle.colour == JPEG_LS_LOSSLESS
    with pytest.raises(UsageError, match="colour frames only"):
        Recompression.from_options(grey="jpeg")
    with pytest.raises(UsageError, match="'png'"):
        Recompression.from_options(colour="png")


def test_a_codec_surprise_keeps_the_frame(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Whatever a codec raises, the frame is kept as received and the instance is stored."""

    def broken(_array: object, _syntax: str) -> bytes:
        raise RuntimeError("codec crashed")

    monkeypatch.setattr("dicomweb_archive.dicom.recompress.encode", broken)
    source = next(p for p in DECODABLE if p.name == "CT_small.dcm")
    (result,) = ingest([source], tmp_path / "store").results
    assert result.status == "stored" and (result.frames_recompressed, result.frames_kept) == (0, 1)
    assert any("unexpected RuntimeError" in w for w in result.warnings)
    assert result.key is not None
    assert reconstruct_p10(tmp_path / "store", result.key.sop) == source.read_bytes()


OTHER_TARGETS = {
    "jpeg2000": (JPEG_2000_LOSSLESS, JPEG_2000_LOSSLESS),
    "decompress": (EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN),
    "jls+lossy-colour": (JPEG_LS_LOSSLESS, JPEG_BASELINE),
}


@pytest.mark.slow
@pytest.mark.parametrize("targets", sorted(OTHER_TARGETS))
@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_other_targets_round_trip(path: Path, targets: str, tmp_path: Path) -> None:
    """The UID targets and lossy colour JPEG: every file still comes back (byte for byte, or
    pixel-identical where a compressed original's codestreams were replaced) and verifies."""
    grey, colour = OTHER_TARGETS[targets]
    policy = Recompression(EVERY_SOURCE, grey, colour)
    (result,) = ingest([path], tmp_path, options=PipelineOptions(recompression=policy)).results
    assert result.key is not None
    rebuilt = reconstruct_p10(tmp_path, result.key.sop)
    if rebuilds_original(_info(tmp_path, result.key.sop)):
        assert _sha(rebuilt) == _sha(path.read_bytes())
    else:
        assert_same_instance(rebuilt, path.read_bytes())
    checked = verify(tmp_path)
    assert checked.ok, checked.findings


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "SC_rgb_rle_2frame.dcm"])
def test_keep_originals(name: str, tmp_path: Path) -> None:
    """--keep-originals: a compressed original's codestreams stay in the store as bulk data,
    so it is exported byte for byte (class bytes) while its frames are served as JPEG-LS."""
    source = next(p for p in DECODABLE if p.name == name)
    policy = Recompression(EVERY_SOURCE, keep_originals=True)
    (result,) = ingest([source], tmp_path, options=PipelineOptions(recompression=policy)).results
    assert result.key is not None
    info = _info(tmp_path, result.key.sop)
    assert stored_syntaxes(info) == [JPEG_LS_LOSSLESS]
    kept = {f["source"]["bulk"] for f in info["frames"]}
    assert len(kept) == len(info["frames"]) and kept <= {b["sha256"] for b in info["bulkdata"]}
    assert rebuilds_original(info)
    assert reconstruct_p10(tmp_path, result.key.sop) == source.read_bytes()
    checked = verify(tmp_path, deep=True)
    assert checked.ok and [v.equivalence for v in checked.instances] == ["bytes"]


def test_keep_originals_option(tmp_path: Path) -> None:
    """The command-line switch reaches the policy."""
    source = next(p for p in DECODABLE if p.name == "MR_small_jp2klossless.dcm")
    args = ["--keep-originals", "-o", str(tmp_path), str(source)]
    result = CliRunner().invoke(SEED_APPS["mkdicomweb"], args)
    assert result.exit_code == 0, result.output
    (info_path,) = tmp_path.rglob("info.json.gz")
    assert all("bulk" in f["source"] for f in read_json_gz(info_path)["frames"])


def test_multi_frame_recompression_in_parallel_is_deterministic(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Frames of one instance recompressed in the frame pool give the store that recompressing
    them one by one gives: same info record, same frame files."""
    path = write_ct(
        tmp_path / "multi.dcm",
        study=uid(71),
        series=uid(72),
        sop=uid(73),
        frames=12,
        rows=128,
        columns=128,
        realistic=True,
    )
    ingest([path], tmp_path / "parallel")
    monkeypatch.setattr("dicomweb_archive.dicom.pixel_stream.FRAME_THREADS", 1)
    monkeypatch.setattr("dicomweb_archive.dicom.pixel_stream.FRAME_LOOKAHEAD", 0)
    monkeypatch.setattr("dicomweb_archive.dicom.pixel_stream._POOL", None)
    ingest([path], tmp_path / "serial")

    def files(store: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(store)): p.read_bytes()
            for p in sorted(store.rglob("*.mht")) + sorted(store.rglob("info.json.gz"))
        }

    assert files(tmp_path / "parallel") == files(tmp_path / "serial")
    assert reconstruct_p10(tmp_path / "parallel", uid(73)) == path.read_bytes()


def test_extended_offset_table_of_a_recompressed_original(tmp_path: Path) -> None:
    """A multi-frame JPEG 2000 original with an Extended Offset Table (PS3.5 A.4) comes back
    pixel-identical without the table that described its old fragments."""
    ds = make_ct(study=uid(81), series=uid(82), sop=uid(83), frames=3, rows=32, columns=32)
    pixels = np.frombuffer(ds.PixelData, dtype="<u2").reshape(3, 32, 32)
    frames = [encode(frame, JPEG_2000_LOSSLESS) for frame in pixels]
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = (
        pydicom.encaps.encapsulate_extended(frames)
    )
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(JPEG_2000_LOSSLESS)
    path = tmp_path / "eot.dcm"
    ds.save_as(path, enforce_file_format=True)
    store = tmp_path / "store"
    assert ingest([path], store).ok
    rebuilt = pydicom.dcmread(io.BytesIO(reconstruct_p10(store, uid(83))))
    assert "ExtendedOffsetTable" not in rebuilt
    assert rebuilt.file_meta.TransferSyntaxUID == JPEG_LS_LOSSLESS
    np.testing.assert_array_equal(rebuilt.pixel_array, pixels)
    assert verify(store).ok


@pytest.mark.parametrize("keep", ["lossy", "keep-originals"])
def test_kept_originals_survive_edits_and_deletes(keep: str, tmp_path: Path) -> None:
    """An edit rewrites the info record: the received frames kept as bulk data stay listed
    (not orphans, not pruned when another instance of the study is deleted)."""
    name = "SC_rgb_rle_2frame.dcm" if keep == "lossy" else "MR_small_jp2klossless.dcm"
    source = next(p for p in DECODABLE if p.name == name)
    if keep == "lossy":
        policy = Recompression(EVERY_SOURCE, JPEG_LS_LOSSLESS, JPEG_BASELINE)
    else:
        policy = Recompression(EVERY_SOURCE, keep_originals=True)
    study = str(pydicom.dcmread(source).StudyInstanceUID)
    other = write_series(tmp_path / "in", count=1, study=study)
    store = tmp_path / "store"
    options = PipelineOptions(recompression=policy)
    assert ingest([source, *other], store, options=options).ok
    apply_update(store, plan_update(store, "study", study, ["StudyDescription=Edited"]))
    other_sop = str(pydicom.dcmread(other[0]).SOPInstanceUID)
    apply_delete(store, plan_delete(store, "instance", other_sop))
    checked = verify(store)
    assert checked.ok, checked.findings
    assert [v.equivalence for v in checked.instances] == ["edited"]
    report = export(store, Selection(study=study), out=tmp_path / "o")
    assert report.ok, report.failures
