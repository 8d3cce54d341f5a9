"""Stored frames decode to exactly the pixels pydicom decodes from the original file."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomweb_archive import Archive, ingest
from dicomweb_archive.dicom.recompression import SOURCE_TYPES, Recompression
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.syntax import HTJ2K_LOSSLESS, JPEG_LS_LOSSLESS, media_type
from dicomweb_archive.ops.ingest_types import PipelineOptions
from dicomweb_archive.store.instance import read_info, read_instance_metadata
from dicomweb_archive.store.multipart import parse_part
from dicomweb_archive.store.storage import from_json_gz
from tests.conftest import corpus_files, corpus_id


def _decodable(path: Path) -> bool:
    """Files with pixel data that pydicom (with what is installed) can decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            if "PixelData" not in ds or "StudyInstanceUID" not in ds:
                return False
            ds.pixel_array  # noqa: B018 - decoding is the check
    except Exception:
        return False
    return True


DECODABLE = [p for p in corpus_files() if _decodable(p)]


def _frame_array(original: pydicom.Dataset, payload: bytes, content_type: str) -> np.ndarray:
    """Decode one stored frame with pydicom, as a one-frame copy of the original."""
    ds = pydicom.Dataset()
    for element in original:
        if element.tag.group != 0x7FE0:
            ds.add(element)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    syntax = content_type.split("transfer-syntax=")[1]
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.NumberOfFrames = 1
    if syntax == ExplicitVRLittleEndian:
        ds.PixelData = payload
    else:
        ds.PixelData = encapsulate([payload])
    return ds.pixel_array


#: -t/-T targets tested on every decodable file, every source type recompressed.
TARGETS = {"jls": JPEG_LS_LOSSLESS, "htj2k": HTJ2K_LOSSLESS, "none": None}
EVERY_SOURCE = frozenset(s for syntaxes in SOURCE_TYPES.values() for s in syntaxes)


def _policy(target: str) -> Recompression | None:
    syntax = TARGETS[target]
    return None if syntax is None else Recompression(EVERY_SOURCE, syntax, syntax)


def _recorded_media_type(info: InfoRecord, number: int) -> str:
    """The Content-Type the info record gives stored frame ``number``: its own transfer
    syntax's where frames differ, else the instance's."""
    syntax = info.frames[number - 1].transfer_syntax_uid
    return media_type(syntax) if syntax is not None else info.stored.media_type


def _only_info(archive: Archive) -> InfoRecord:
    """The info record of a store holding one instance."""
    (name,) = [
        i.key for i in archive.storage.list_prefix("studies/") if i.key.endswith("/info.json.gz")
    ]
    return InfoRecord.from_json(from_json_gz(archive.storage.get(name)))


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("path", DECODABLE, ids=corpus_id)
def test_stored_frames_decode_like_original(path: Path, target: str, store: str) -> None:
    """Frame n of the store, decoded by pydicom (pylibjpeg's decoders, not the encoders'
    libraries for JPEG-LS), equals pixel_array[n] of the original, whatever the target; each
    frame's content type names its transfer syntax, 0008,3002 lists them, and a frame of a
    recompressed source type that was kept as received is reported in the info record."""
    options = PipelineOptions(recompression=_policy(target))
    with Archive.open_or_create(store) as archive:
        report = ingest(archive, [path], options=options)
        key = report.results[0].key
        assert key is not None
        storage, keys = archive.storage, archive.keys
        info = read_info(storage, keys, key)
        metadata = read_instance_metadata(storage, keys, key)
        stored: dict[int, tuple[str, memoryview]] = {}
        for number in range(1, len(info.frames) + 1):
            name = keys.frame(key.study, key.series, key.sop, number)
            stored[number] = parse_part(storage.get(name), source=name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = pydicom.dcmread(path)
        expected = original.pixel_array
        frames = int(original.get("NumberOfFrames") or 1)
    if frames == 1:
        expected = expected[np.newaxis]
    assert len(info.frames) == frames
    assert metadata["00083002"] == {"vr": "UI", "Value": info.stored_syntaxes()}
    received = info.original.transfer_syntax_uid
    kept = 0
    for number in range(1, frames + 1):
        content_type, payload = stored[number]
        syntax = info.frame_syntax(number)
        assert content_type == _recorded_media_type(info, number)
        assert content_type == media_type(syntax)
        kept += not info.frames[number - 1].recompressed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decoded = _frame_array(original, bytes(payload), content_type)
        np.testing.assert_array_equal(decoded, expected[number - 1])
    if target != "none" and received in EVERY_SOURCE and kept:
        assert any("kept as received" in w for w in info.warnings), info.warnings
    if target == "none":
        assert kept == frames and info.stored_syntaxes() == [info.stored.transfer_syntax_uid]


#: Files every lossless target recompresses, one per kind of source.
RECOMPRESSED = {
    "CT_small.dcm": "native, signed 16-bit",
    "MR_small_bigendian.dcm": "big endian",
    "MR_small_RLE.dcm": "RLE",
    "SC_rgb_rle_2frame.dcm": "RLE colour, two frames",
    "SC_rgb_rle_16bit.dcm": "RLE colour, 16-bit",
    "examples_rgb_color.dcm": "native colour",
    "SC_rgb_small_odd.dcm": "native colour, odd size",
    "SC_rgb_jpeg_dcmd.dcm": "implicit VR colour",
    "MR_small_jp2klossless.dcm": "JPEG 2000 lossless",
    "SC_rgb_jpeg_gdcm.dcm": "JPEG lossless colour",
    "examples_palette.dcm": "PALETTE COLOR",
}
#: Files of a source type that is recompressed, kept as received, and the reason reported.
KEPT = {
    "SC_ybr_full_422_uncompressed.dcm": "YBR_FULL_422",
    "ExplVR_BigEnd.dcm": "Planar Configuration 1",
    "examples_jpeg2k.dcm": "YBR_RCT",
}


@pytest.mark.parametrize("target", ["jls", "htj2k"])
def test_recompression_is_not_vacuous(target: str, new_store: Callable[[str], str]) -> None:
    """The kinds of source the parametrized test covers are really recompressed."""
    names = {p.name: p for p in DECODABLE}
    options = PipelineOptions(recompression=_policy(target))
    for name in RECOMPRESSED:
        with Archive.open_or_create(new_store(f"{name}-{target}")) as archive:
            ingest(archive, [names[name]], options=options)
            info = _only_info(archive)
        assert all(f.recompressed for f in info.frames), (name, info.warnings)
        assert info.stored_syntaxes() == [TARGETS[target]]
    for name, reason in KEPT.items():
        with Archive.open_or_create(new_store(f"kept-{name}-{target}")) as archive:
            ingest(archive, [names[name]], options=options)
            info = _only_info(archive)
        assert not any(f.recompressed for f in info.frames), name
        assert any(reason in w and "kept as received" in w for w in info.warnings), name


def test_corpus_has_many_decodable_files() -> None:
    """The frame test is not vacuous: native, big endian, RLE and multi-frame are all there."""
    names = {p.name for p in DECODABLE}
    assert {"CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm"} <= names
    assert "SC_rgb_rle_2frame.dcm" in names
    assert len(DECODABLE) >= 30
