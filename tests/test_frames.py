"""Stored frames decode to exactly the pixels pydicom decodes from the original file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomweb_archive import ingest
from dicomweb_archive.store.files import read_json_gz
from dicomweb_archive.store.layout import StoreLayout
from dicomweb_archive.store.multipart import read_part
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


@pytest.mark.slow
@pytest.mark.parametrize("path", DECODABLE, ids=corpus_id)
def test_stored_frames_decode_like_original(path: Path, tmp_path: Path) -> None:
    """Frame n of the store decodes to pixel_array[n] of the original."""
    report = ingest([path], tmp_path)
    key = report.results[0].key
    assert key is not None
    layout = StoreLayout(tmp_path)
    info = read_json_gz(layout.info(key.study, key.series, key.sop))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = pydicom.dcmread(path)
        expected = original.pixel_array
        frames = int(original.get("NumberOfFrames") or 1)
    if frames == 1:
        expected = expected[np.newaxis]
    assert len(info["frames"]) == frames
    for number in range(1, frames + 1):
        content_type, payload = read_part(layout.frame(key.study, key.series, key.sop, number))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decoded = _frame_array(original, bytes(payload), content_type)
        np.testing.assert_array_equal(decoded, expected[number - 1])


def test_corpus_has_many_decodable_files() -> None:
    """The frame test is not vacuous: native, big endian, RLE and multi-frame are all there."""
    names = {p.name for p in DECODABLE}
    assert {"CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm"} <= names
    assert "SC_rgb_rle_2frame.dcm" in names
    assert len(DECODABLE) >= 30
