"""Every file pydicom ships: ingest (with the default recompression), check the store, rebuild
the P10 bytes exactly (pixel for pixel where a JPEG 2000 original was recompressed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
import pytest

from dicomweb_archive import Archive, ingest, reconstruct_p10
from dicomweb_archive.dicom.parts import InlineLimits
from dicomweb_archive.dicom.recompression import SOURCE_TYPES
from dicomweb_archive.errors import (
    DicomdirError,
    MissingUidError,
    NotDicomError,
    TruncatedError,
)
from dicomweb_archive.store.instance import read_info, read_instance_metadata, study_uids
from dicomweb_archive.store.keys import STUDIES_INDEX
from dicomweb_archive.store.storage import from_json_gz
from tests.conftest import corpus_files, corpus_id
from tests.parts_helpers import assert_same_instance, rebuild

#: Files that are not ingested, each with the error expected and why.
NOT_INGESTED: dict[str, tuple[type[Exception], str]] = {
    "README.txt": (NotDicomError, "text file"),
    "dicomdirtests/README.txt": (NotDicomError, "text file"),
    "dicomdirtests/TINY_ALPHA/README": (NotDicomError, "text file"),
    "rtplan.dump": (NotDicomError, "dcmdump text output"),
    "rtstruct.dump": (NotDicomError, "dcmdump text output"),
    "test1.json": (NotDicomError, "DICOM JSON, not P10"),
    "test_PN.json": (NotDicomError, "DICOM JSON, not P10"),
    "crayons.icc": (NotDicomError, "an ICC profile"),
    "zipMR.gz": (NotDicomError, "a gzip archive (not deflated DICOM)"),
    "no_meta.dcm": (
        NotDicomError,
        "first byte missing: pydicom too reads it as one bogus element (0820,0500)",
    ),
    "meta_missing_tsyntax.dcm": (MissingUidError, "fragment without Study/Series/SOP UIDs"),
    "nested_priv_SQ.dcm": (MissingUidError, "fragment with only private sequences, no UIDs"),
    "priv_SQ.dcm": (MissingUidError, "fragment with only a private sequence, no UIDs"),
    "empty_charset_LEI.dcm": (MissingUidError, "fragment without UIDs"),
    "SC_rgb_jls_lossy_line.dcm": (MissingUidError, "pixel-only test file without UIDs"),
    "SC_rgb_jls_lossy_sample.dcm": (MissingUidError, "pixel-only test file without UIDs"),
    "JPEGLSNearLossless_08.dcm": (MissingUidError, "pixel-only test file without UIDs"),
    "JPEGLSNearLossless_16.dcm": (MissingUidError, "pixel-only test file without UIDs"),
    "UN_sequence.dcm": (MissingUidError, "fragment holding one UN sequence, no UIDs"),
    "no_meta_group_length.dcm": (MissingUidError, "fragment without UIDs"),
    "rtplan_truncated.dcm": (TruncatedError, "ends inside an element: incomplete, refused"),
}
for _name in (
    "DICOMDIR",
    "DICOMDIR-bigEnd",
    "DICOMDIR-empty.dcm",
    "DICOMDIR-implicit",
    "DICOMDIR-nooffset",
    "DICOMDIR-nopatient",
    "DICOMDIR-reordered",
    "TINY_ALPHA/DICOMDIR",
):
    NOT_INGESTED[f"dicomdirtests/{_name}"] = (
        DicomdirError,
        "a DICOMDIR (Media Storage Directory) is an index of files, not an instance",
    )

#: Files whose stored frame count is not their NumberOfFrames: (frames stored, why).
FRAME_COUNT_EXCEPTIONS = {
    "badVR.dcm": (1, "NumberOfFrames is '1A', not an IS: read as 1, as for an absent value"),
    "MR_truncated.dcm": (0, "ends inside Pixel Data: stored incomplete, no frame is whole"),
}

CORPUS = corpus_files()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("path", CORPUS, ids=corpus_id)
def test_corpus_file_round_trips(path: Path, store: str) -> None:
    """Each readable file is stored with its frames and rebuilt byte for byte."""
    with Archive.open_or_create(store) as archive:
        report = ingest(archive, [path])
        (result,) = report.results
        name = corpus_id(path)
        storage, keys = archive.storage, archive.keys
        if name in NOT_INGESTED:
            expected, _reason = NOT_INGESTED[name]
            assert result.status == "failed"
            assert isinstance(result.exception, expected), result.error
            assert result.error is not None and str(path) in result.error
            assert not study_uids(storage)
            return
        assert result.status == "stored", result.error
        assert result.key is not None
        key = result.key
        info = read_info(storage, keys, key)
        metadata = [read_instance_metadata(storage, keys, key)]
        series_metadata = keys.series_metadata(key.study, key.series)
        assert from_json_gz(storage.get(series_metadata)) == metadata
        for object_key in (
            STUDIES_INDEX,
            keys.study_index(key.study),
            keys.series_index(key.study),
            keys.series_singleton(key.study, key.series),
            keys.instances_index(key.study, key.series),
        ):
            assert storage.head(object_key) is not None, object_key
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=False)
        if "PixelData" in ds:
            if name in FRAME_COUNT_EXCEPTIONS:
                expected_frames = FRAME_COUNT_EXCEPTIONS[name][0]
            else:
                expected_frames = int(ds.get("NumberOfFrames") or 1)
            assert len(info.frames) == expected_frames
            for number in range(1, expected_frames + 1):
                frame = keys.frame(key.study, key.series, key.sop, number)
                assert storage.head(frame) is not None, frame
        rebuilt = reconstruct_p10(archive, key.sop)
    original = path.read_bytes()
    if info.rebuilds_original():  # frames as received, or native frames recompressed
        assert _sha(rebuilt) == _sha(original)
    else:  # JPEG 2000 recompressed to JPEG-LS by default: pixel and attribute identical
        assert info.original.transfer_syntax_uid in SOURCE_TYPES["jp2"]
        assert_same_instance(rebuilt, original)
    assert info.original.sha256 == _sha(original)
    assert info.original.size == len(original)


@pytest.mark.slow
@pytest.mark.parametrize("path", CORPUS, ids=corpus_id)
def test_corpus_file_skeleton_is_complete(path: Path) -> None:
    """Even files the store refuses (no UIDs) decompose into parts that rebuild them exactly."""
    data = path.read_bytes()
    try:
        # force many bulk-data holes with a 16-byte inline limit
        rebuilt, _end = rebuild(data, InlineLimits(public=16, private=16))
    except NotDicomError:
        assert NOT_INGESTED[corpus_id(path)][0] is NotDicomError
        return
    assert _sha(rebuilt) == _sha(data)


def test_exclusions_name_real_files() -> None:
    """The exclusion tables list only files that exist in pydicom's corpus."""
    names = {corpus_id(p) for p in CORPUS}
    assert set(NOT_INGESTED) <= names
    assert set(FRAME_COUNT_EXCEPTIONS) <= names
