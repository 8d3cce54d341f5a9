"""The streaming API: parts from a non-seekable pipe, memory bounded by about one frame."""

from __future__ import annotations

import json
import os
import threading
import tracemalloc
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from dicomweb_archive import Archive, generate_parts, reconstruct_p10, write_stream
from dicomweb_archive.dicom.parts import FramePart, InlineLimits, InstanceEnd, InstanceHeader
from dicomweb_archive.dicom.recompression import Recompression
from tests.factory import make_ct, uid, write_ct

FRAME_BYTES = 512 * 512 * 2


def _pipe_from(path: Path) -> tuple[int, threading.Thread]:
    """A pipe fed with the file's bytes by a thread; returns the read end."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with path.open("rb") as source, os.fdopen(write_fd, "wb") as sink:
            while chunk := source.read(1 << 16):
                sink.write(chunk)

    thread = threading.Thread(target=feed)
    thread.start()
    return read_fd, thread


def _peak_from_pipe(path: Path, frames: int, recompression: Recompression | None = None) -> int:
    """Peak Python memory while decomposing ``path`` read through a pipe."""
    read_fd, thread = _pipe_from(path)
    kinds = []
    with os.fdopen(read_fd, "rb") as pipe:
        assert not pipe.seekable()
        tracemalloc.start()
        for part in generate_parts(
            pipe,
            frames_uri=lambda _m: "frames",
            bulk_uri=lambda _m, sha: sha,
            recompression=recompression,
        ):
            kinds.append(type(part).__name__)
            if isinstance(part, FramePart):
                assert (len(part.data) == FRAME_BYTES) == (recompression is None)
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    thread.join()
    assert kinds[0] == InstanceHeader.__name__ and kinds[-1] == InstanceEnd.__name__
    assert kinds.count(FramePart.__name__) == frames
    return peak


@pytest.mark.parametrize("recompress", [False, True], ids=["as-received", "jpeg-ls"])
def test_parts_from_a_pipe_with_bounded_memory(recompress: bool, tmp_path: Path) -> None:
    """From a pipe, peak memory is a few frames and does not grow with the frame count, also
    while frames are recompressed."""
    peaks = {}
    for frames in (8, 32):
        path = write_ct(
            tmp_path / f"multi{frames}.dcm",
            study=uid(1),
            series=uid(2),
            sop=uid(3),
            frames=frames,
            rows=512,
            columns=512,
            realistic=recompress,
        )
        peaks[frames] = _peak_from_pipe(path, frames, Recompression() if recompress else None)
    # 32 frames are 16 MB; the peak is about three frames (read buffer, joined bytes, part);
    # recompressing, up to three frames are in the frame pool at once, each with its decoded
    # copy and codestream (about seven frames in all, one or two more by thread scheduling)
    assert peaks[32] < (10 if recompress else 4) * FRAME_BYTES, peaks
    # growth would be 24 frames; recompressing, thread scheduling decides whether one more
    # frame is in flight at the peak moment, so the allowance is two frames
    allowance = 2 * FRAME_BYTES if recompress else FRAME_BYTES // 4
    assert abs(peaks[32] - peaks[8]) < allowance, peaks


def test_write_stream_stores_the_instance(tmp_path: Path, store: str) -> None:
    """write_stream ingests from a pipe; the instance rebuilds byte for byte."""
    path = write_ct(tmp_path / "one.dcm", study=uid(1), series=uid(2), sop=uid(3), frames=3)
    read_fd, thread = _pipe_from(path)
    with Archive.open_or_create(store) as archive:
        with os.fdopen(read_fd, "rb") as pipe:
            result = write_stream(archive, pipe, name="pipe")
        thread.join()
        assert result.status == "stored", result.error
        assert reconstruct_p10(archive, uid(3)) == path.read_bytes()


def test_bulk_data_uris_are_filled_in_nested_items(tmp_path: Path) -> None:
    """A value moved to bulk data inside a sequence item (two levels deep) gets its
    BulkDataURI like a top-level one; no placeholder is left in the metadata."""
    ds = make_ct(study=uid("s1"), series=uid("s1.1"), sop=uid("s1.1.1"))
    inner = Dataset()
    inner.RedPaletteColorLookupTableData = bytes(range(256)) * 4
    outer = Dataset()
    outer.IconImageSequence = [inner]
    ds.ReferencedImageSequence = [outer]
    ds.EncapsulatedDocument = bytes(300)
    path = tmp_path / "nested.dcm"
    ds.save_as(path, enforce_file_format=True)
    with path.open("rb") as stream:
        (end,) = [
            part
            for part in generate_parts(
                stream,
                frames_uri=lambda _m: "frames",
                bulk_uri=lambda _m, sha: f"bulk/{sha}",
                limits=InlineLimits(public=256, private=64),
            )
            if isinstance(part, InstanceEnd)
        ]
    metadata = end.metadata
    item = metadata["00081140"]["Value"][0]["00880200"]["Value"][0]
    assert item["00281201"]["BulkDataURI"].startswith("bulk/")
    assert metadata["00420011"]["BulkDataURI"].startswith("bulk/")
    assert metadata["7FE00010"]["BulkDataURI"] == "frames"
    assert "\\u0000" not in json.dumps(metadata)
