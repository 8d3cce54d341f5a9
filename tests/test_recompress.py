"""Recompression at ingest: export and verify afterwards, lossy JPEG, mixed instances, edits."""

from __future__ import annotations

import hashlib
import io
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive, ingest, reconstruct_p10
from dicomweb_archive.cli.main import SEED_APPS
from dicomweb_archive.dicom.codecs import encode
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.errors import UsageError
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.syntax import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_LS_LOSSLESS,
    NATIVE,
)
from dicomweb_archive.ops.delete import apply_delete, plan_delete
from dicomweb_archive.ops.export import Selection, export, member_name
from dicomweb_archive.ops.ingest_types import PipelineOptions
from dicomweb_archive.ops.reconstruct import find_instance_key
from dicomweb_archive.ops.update import apply_update, plan_update
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.instance import InstanceKey, read_info, read_instance_metadata
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.multipart import boundary_for, parse_part, part_header, part_trailer
from dicomweb_archive.store.storage import from_json_gz, json_gz
from tests.factory import (
    make_ct,
    refuse_overlay_frames,
    uid,
    write_ct,
    write_odd_bits,
    write_series,
)
from tests.parts_helpers import assert_same_instance
from tests.stores import etags, ingested, objects
from tests.test_frames import DECODABLE, EVERY_SOURCE

KEYS = StoreKeys()
SOURCES = [p for p in DECODABLE if pydicom.dcmread(p).file_meta.TransferSyntaxUID in EVERY_SOURCE]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _info(archive: Archive, sop: str) -> InfoRecord:
    return read_info(archive.storage, archive.keys, find_instance_key(archive, sop))


@pytest.mark.slow
@pytest.mark.parametrize("target", [JPEG_LS_LOSSLESS, HTJ2K_LOSSLESS])
@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_export_and_verify_after_recompression(
    path: Path, target: str, tmp_path: Path, store: str
) -> None:
    """Uncompressed originals export byte for byte; compressed ones pixel-identical; verify
    calls them bytes and pixels+attributes and finds nothing wrong."""
    policy = Recompression(EVERY_SOURCE, target, target)
    with Archive.open_or_create(store) as archive:
        options = PipelineOptions(recompression=policy)
        key = ingest(archive, [path], options=options).results[0].key
        assert key is not None
        selection = Selection(study=key.study, series=key.series, sops=(key.sop,))
        report = export(archive, selection, out=tmp_path / "o")
        assert report.ok, report.failures
        exported = (tmp_path / "o" / member_name(key)).read_bytes()
        info = _info(archive, key.sop)
        native = info.original.transfer_syntax_uid in NATIVE
        checked = verify(archive, deep=True)
    assert checked.ok, checked.findings
    (verdict,) = checked.instances
    if native or not any(f.recompressed for f in info.frames):
        assert _sha(exported) == _sha(path.read_bytes())
        assert verdict.equivalence == "bytes"
    else:
        assert report.items[0].recompressed
        assert pydicom.dcmread(io.BytesIO(exported)).file_meta.TransferSyntaxUID == target
        assert_same_instance(exported, path.read_bytes())
        assert verdict.equivalence == "pixels+attributes"
    assert info.rebuilds_original() == (verdict.equivalence == "bytes")


def test_recompressed_export_in_a_requested_syntax(tmp_path: Path, store: str) -> None:
    """A recompressed JPEG 2000 original exports pixel-identical in the syntax asked for."""
    source = next(p for p in DECODABLE if p.name == "MR_small_jp2klossless.dcm")
    with Archive.open_or_create(store) as archive:
        key = ingest(archive, [source]).results[0].key
        assert key is not None
        reports = {
            syntax: export(
                archive, Selection(study=key.study), out=tmp_path / syntax, transfer_syntax=syntax
            )
            for syntax in (EXPLICIT_VR_LITTLE_ENDIAN, HTJ2K_LOSSLESS)
        }
    for syntax, report in reports.items():
        out = tmp_path / syntax
        assert report.ok and report.items[0].recompressed and report.items[0].transcoded
        data = (out / member_name(key)).read_bytes()
        assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == syntax
        assert_same_instance(data, source.read_bytes())


def _forge_first_frame(archive: Archive, key: InstanceKey, *, consistent: bool) -> None:
    """Replace frame 1 by another valid JPEG-LS frame (one pixel changed) and record its file
    hash; with ``consistent`` also its pixel hash, so that the store agrees with itself."""
    storage = archive.storage
    frame = archive.keys.frame(key.study, key.series, key.sop, 1)
    content_type, payload = parse_part(storage.get(frame), source=frame)
    ours = pydicom.dcmread(io.BytesIO(reconstruct_p10(archive, key.sop)))
    assert ours.file_meta.TransferSyntaxUID == JPEG_LS_LOSSLESS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = ours.pixel_array.copy()
    pixels[10, 10] += 1
    new_payload = encode(pixels, JPEG_LS_LOSSLESS)
    assert payload != new_payload
    info_key = archive.keys.info(key.study, key.series, key.sop)
    info = read_info(storage, archive.keys, key)
    first = info.frames[0]
    first.sha256 = _sha(new_payload)
    first.size = len(new_payload)
    if consistent:
        assert first.source is not None
        first.source.pixels_sha256 = _sha(pixels.astype("<i2").tobytes())
    boundary = boundary_for(_sha(new_payload))
    storage.put(frame, part_header(boundary, content_type) + new_payload + part_trailer(boundary))
    storage.put(info_key, json_gz(info.to_json()))


def _jp2k_store(archive: Archive) -> tuple[Path, InstanceKey]:
    source = next(p for p in DECODABLE if p.name == "MR_small_jp2klossless.dcm")
    key = ingest(archive, [source]).results[0].key
    assert key is not None
    return source, key


def test_verify_finds_a_damaged_recompressed_frame(store: str) -> None:
    """A frame file whose hash was recomputed after damage still fails: it must decode to the
    source pixels recorded at ingest."""
    with Archive.open_or_create(store) as archive:
        _source, key = _jp2k_store(archive)
        _forge_first_frame(archive, key, consistent=False)
        checked = verify(archive, studies=[key.study])
    assert any(f.kind == "pixels" for f in checked.findings), checked.findings
    assert checked.instances[0].equivalence == "failed"


def test_verify_against_the_originals_closes_the_proof(tmp_path: Path, store: str) -> None:
    """With --against, the original's frames must decode to the recorded pixels: a frame
    replaced together with its file and pixel hashes passes the frame checks alone, not
    against the originals."""
    with Archive.open_or_create(store) as archive:
        source, key = _jp2k_store(archive)
        originals = tmp_path / "originals"
        originals.mkdir()
        shutil.copy(source, originals / source.name)
        checked = verify(archive, against=originals)
        assert checked.ok and checked.against["identical"] == 1, checked.findings
        assert checked.instances[0].equivalence == "pixels+attributes"
        _forge_first_frame(archive, key, consistent=True)  # the deduplicated record differs
        alone = verify(archive)
        assert not {f.kind for f in alone.findings} & {"pixels", "hash", "against"}, alone.findings
        checked = verify(archive, against=originals)
    against = [f.message for f in checked.findings if f.kind == "against"]
    assert against == ["frame 1 of the original decodes to other pixels than the store's"], (
        checked.findings
    )


def test_lossy_jpeg_keeps_the_original(store: str) -> None:
    """-T jpeg: colour frames are served as JPEG baseline; the received frames stay in the
    store as bulk data, so export is still byte for byte; delete removes them too."""
    names = {"examples_rgb_color.dcm", "SC_rgb_rle_2frame.dcm", "CT_small.dcm"}
    sources = [p for p in DECODABLE if p.name in names]
    policy = Recompression(EVERY_SOURCE, JPEG_LS_LOSSLESS, JPEG_BASELINE)
    with Archive.open_or_create(store) as archive:
        report = ingest(archive, sources, options=PipelineOptions(recompression=policy))
        assert report.ok
        for source, result in zip(sources, report.results, strict=True):
            assert result.key is not None
            info = _info(archive, result.key.sop)
            colour = source.name != "CT_small.dcm"
            expected = JPEG_BASELINE if colour else JPEG_LS_LOSSLESS
            assert info.stored_syntaxes() == [expected]
            frame = archive.keys.frame(result.key.study, result.key.series, result.key.sop, 1)
            content_type, payload = parse_part(archive.storage.get(frame), source=frame)
            assert content_type.startswith("image/jpeg;") == colour
            if colour:
                kept = {f.source.bulk if f.source else None for f in info.frames}
                assert kept <= info.bulk_hashes()
                assert bytes(payload).startswith(b"\xff\xd8")
            rebuilt = reconstruct_p10(archive, result.key.sop)
            assert _sha(rebuilt) == _sha(source.read_bytes())
        checked = verify(archive)
        assert checked.ok and {v.equivalence for v in checked.instances} == {"bytes"}
        rle = next(r.key for s, r in zip(sources, report.results, strict=True) if "rle" in s.name)
        assert rle is not None
        apply_delete(archive, plan_delete(archive, "study", rle.study))
        assert verify(archive).ok


def test_mixed_instance(tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame the codec refuses is kept beside recompressed ones: per-frame syntaxes, both in
    0008,3002, byte-exact export, verify bytes."""
    refuse_overlay_frames(monkeypatch)
    path = write_odd_bits(tmp_path / "odd.dcm", study=uid(61), series=uid(62), sop=uid(63))
    with Archive.open_or_create(store) as archive:
        (result,) = ingest(archive, [path]).results
        assert (result.frames_recompressed, result.frames_kept) == (1, 1)
        assert any("frame(s) 2 kept as received" in w for w in result.warnings)
        info = _info(archive, uid(63))
        assert info.stored_syntaxes() == [JPEG_LS_LOSSLESS, EXPLICIT_VR_LITTLE_ENDIAN]
        key = InstanceKey(uid(61), uid(62), uid(63))
        metadata = read_instance_metadata(archive.storage, archive.keys, key)
        assert metadata["00083002"]["Value"] == [JPEG_LS_LOSSLESS, EXPLICIT_VR_LITTLE_ENDIAN]
        assert reconstruct_p10(archive, uid(63)) == path.read_bytes()
        assert verify(archive).ok


def _frame_etags(store: str, study: str) -> dict[str, str]:
    """The etag of every frame object of a study (a rewritten object gets a new one)."""
    return {k: e for k, e in etags(store, KEYS.study(study)).items() if k.endswith(".mht")}


def test_edit_after_recompression(tmp_path: Path, store: str) -> None:
    """An attribute edit rewrites metadata only; the recompressed frames are untouched and
    both kinds of instance export with the edit and the original pixels."""
    source = next(p for p in DECODABLE if p.name == "MR_small_jp2klossless.dcm")
    files = write_series(
        tmp_path / "in", count=1, study=str(pydicom.dcmread(source).StudyInstanceUID)
    )
    files.append(Path(shutil.copy(source, tmp_path / "in" / source.name)))
    study = str(pydicom.dcmread(source).StudyInstanceUID)
    with Archive.open_or_create(store) as archive:
        assert ingest(archive, files).ok
    frames_before = _frame_etags(store, study)
    assert frames_before
    with Archive.open(store) as archive:
        edits = ["StudyDescription=Edited"]
        apply_update(archive, plan_update(archive, "study", study, edits))
    assert _frame_etags(store, study) == frames_before
    with Archive.open(store) as archive:
        report = export(archive, Selection(study=study), out=tmp_path / "o")
        checked = verify(archive)
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


def test_a_codec_surprise_keeps_the_frame(monkeypatch: pytest.MonkeyPatch, store: str) -> None:
    """Whatever a codec raises, the frame is kept as received and the instance is stored."""

    def broken(_array: object, _syntax: str) -> bytes:
        raise RuntimeError("codec crashed")

    monkeypatch.setattr("dicomweb_archive.dicom.recompress.encode", broken)
    source = next(p for p in DECODABLE if p.name == "CT_small.dcm")
    with Archive.open_or_create(store) as archive:
        (result,) = ingest(archive, [source]).results
        assert result.status == "stored"
        assert (result.frames_recompressed, result.frames_kept) == (0, 1)
        assert any("unexpected RuntimeError" in w for w in result.warnings)
        assert result.key is not None
        assert reconstruct_p10(archive, result.key.sop) == source.read_bytes()


OTHER_TARGETS = {
    "jpeg2000": (JPEG_2000_LOSSLESS, JPEG_2000_LOSSLESS),
    "decompress": (EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN),
    "jls+lossy-colour": (JPEG_LS_LOSSLESS, JPEG_BASELINE),
}


@pytest.mark.slow
@pytest.mark.parametrize("targets", sorted(OTHER_TARGETS))
@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_other_targets_round_trip(path: Path, targets: str, store: str) -> None:
    """The UID targets and lossy colour JPEG: every file still comes back (byte for byte, or
    pixel-identical where a compressed original's codestreams were replaced) and verifies."""
    grey, colour = OTHER_TARGETS[targets]
    policy = Recompression(EVERY_SOURCE, grey, colour)
    with Archive.open_or_create(store) as archive:
        options = PipelineOptions(recompression=policy)
        (result,) = ingest(archive, [path], options=options).results
        assert result.key is not None
        rebuilt = reconstruct_p10(archive, result.key.sop)
        info = _info(archive, result.key.sop)
        checked = verify(archive)
    if info.rebuilds_original():
        assert _sha(rebuilt) == _sha(path.read_bytes())
    else:
        assert_same_instance(rebuilt, path.read_bytes())
    assert checked.ok, checked.findings


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "SC_rgb_rle_2frame.dcm"])
def test_keep_originals(name: str, store: str) -> None:
    """--keep-originals: a compressed original's codestreams stay in the store as bulk data,
    so it is exported byte for byte (class bytes) while its frames are served as JPEG-LS."""
    source = next(p for p in DECODABLE if p.name == name)
    policy = Recompression(EVERY_SOURCE, keep_originals=True)
    with Archive.open_or_create(store) as archive:
        options = PipelineOptions(recompression=policy)
        (result,) = ingest(archive, [source], options=options).results
        assert result.key is not None
        info = _info(archive, result.key.sop)
        assert info.stored_syntaxes() == [JPEG_LS_LOSSLESS]
        kept = {f.source.bulk if f.source else None for f in info.frames}
        assert len(kept) == len(info.frames) and kept <= info.bulk_hashes()
        assert info.rebuilds_original()
        assert reconstruct_p10(archive, result.key.sop) == source.read_bytes()
        checked = verify(archive, deep=True)
    assert checked.ok and [v.equivalence for v in checked.instances] == ["bytes"]


def test_keep_originals_option(store: str) -> None:
    """The command-line switch reaches the policy."""
    source = next(p for p in DECODABLE if p.name == "MR_small_jp2klossless.dcm")
    args = ["--keep-originals", "-o", store, str(source)]
    result = CliRunner().invoke(SEED_APPS["mkdicomweb"], args)
    assert result.exit_code == 0, result.output
    (info_key,) = [k for k in objects(store) if k.endswith("/info.json.gz")]
    info = InfoRecord.from_json(from_json_gz(objects(store)[info_key]))
    assert all(f.source is not None and f.source.bulk is not None for f in info.frames)


def test_multi_frame_recompression_in_parallel_is_deterministic(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, new_store: Callable[[str], str]
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
    parallel, serial = new_store("parallel"), new_store("serial")
    ingested(parallel, [path])
    monkeypatch.setattr("dicomweb_archive.dicom.pixel_stream.FRAME_THREADS", 1)
    monkeypatch.setattr("dicomweb_archive.dicom.pixel_stream.FRAME_LOOKAHEAD", 0)
    monkeypatch.setattr("dicomweb_archive.dicom.pixel_stream._POOL", None)
    ingested(serial, [path])

    def files(store: str) -> dict[str, bytes]:
        return {
            key: data
            for key, data in objects(store).items()
            if key.endswith((".mht", "/info.json.gz"))
        }

    assert files(parallel)
    assert files(parallel) == files(serial)
    with Archive.open(parallel) as archive:
        assert reconstruct_p10(archive, uid(73)) == path.read_bytes()


def test_extended_offset_table_of_a_recompressed_original(tmp_path: Path, store: str) -> None:
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
    with Archive.open_or_create(store) as archive:
        assert ingest(archive, [path]).ok
        rebuilt = pydicom.dcmread(io.BytesIO(reconstruct_p10(archive, uid(83))))
        assert "ExtendedOffsetTable" not in rebuilt
        assert rebuilt.file_meta.TransferSyntaxUID == JPEG_LS_LOSSLESS
        np.testing.assert_array_equal(rebuilt.pixel_array, pixels)
        assert verify(archive).ok


@pytest.mark.parametrize("keep", ["lossy", "keep-originals"])
def test_kept_originals_survive_edits_and_deletes(keep: str, tmp_path: Path, store: str) -> None:
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
    options = PipelineOptions(recompression=policy)
    other_sop = str(pydicom.dcmread(other[0]).SOPInstanceUID)
    with Archive.open_or_create(store) as archive:
        assert ingest(archive, [source, *other], options=options).ok
        apply_update(archive, plan_update(archive, "study", study, ["StudyDescription=Edited"]))
        apply_delete(archive, plan_delete(archive, "instance", other_sop))
        checked = verify(archive)
        assert checked.ok, checked.findings
        assert [v.equivalence for v in checked.instances] == ["edited"]
        report = export(archive, Selection(study=study), out=tmp_path / "o")
    assert report.ok, report.failures
