"""The skeleton: a P10 file as literal bytes plus references to stored frames and bulk data.

A skeleton is a list of segments whose concatenation is the original file
(``docs/spec/info-record.md``):

- ``{"literal": "<base64>"}``: bytes kept as they were (preamble, File Meta Information,
  element headers, values that stay in metadata, delimiters, trailing bytes);
- ``{"frame": n}``: the whole stored frame n (1-based), or a slice of it with ``offset`` and
  ``length`` (one fragment of a multi-fragment frame); ``swap`` w reverses byte order per
  w-byte word (big endian originals, stored little endian);
- ``{"bulk": "<sha256>"}``: a whole bulk-data file, with optional ``swap``;
- ``{"stored_frames": n}``: the items of encapsulated Pixel Data holding the n stored frames as
  they are stored, one fragment each, after an empty Basic Offset Table (PS3.5 A.4): used where
  frames of a compressed original were recompressed and its codestreams are not kept;
- ``{"deflate": {...zlib parameters}, "segments": [...]}``: the inner segments rebuild the
  inflated data set, which is compressed again with the recorded zlib parameters
  (PS3.5 A.5, Deflated Explicit VR Little Endian).

Frames and bulk data are never copied into the skeleton, except where they cannot be holes
(single-bit frames that straddle bytes, a deflate stream zlib cannot reproduce).
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dicomweb_archive.dicom.parse import Buffer
from dicomweb_archive.model.dicom_json import swap_bytes

Segment = dict[str, Any]
_ITEM = struct.Struct("<HHI")
#: Returns (stored bytes) for a frame number or a bulk-data hash.
FrameReader = Callable[[int], bytes | memoryview]
BulkReader = Callable[[str], bytes | memoryview]


@dataclass(slots=True, order=True)
class Hole:
    """A byte range of the data set buffer replaced by a reference segment."""

    start: int
    end: int
    segment: Segment


def build_segments(buffer: Buffer, holes: list[Hole]) -> list[Segment]:
    """Cover ``buffer`` with literal segments around the (sorted, disjoint) holes."""
    segments: list[Segment] = []
    position = 0
    for hole in sorted(holes, key=lambda h: h.start):
        if hole.start < position:
            raise ValueError("skeleton holes overlap")
        if hole.start > position:
            segments.append(literal(buffer[position : hole.start]))
        segments.append(hole.segment)
        position = hole.end
    if position < len(buffer):
        segments.append(literal(buffer[position:]))
    return segments


def literal(data: Buffer) -> Segment:
    return {"literal": base64.b64encode(data).decode("ascii")}


def deflate_segments(
    file_buffer: Buffer, dataset_offset: int, inflated: bytes, inner: list[Segment]
) -> list[Segment]:
    """Skeleton of a deflated file: literal header, then a re-deflated inner skeleton.

    The zlib parameters that reproduce the original compressed stream exactly are searched
    for; if none does, the whole file is kept literal (frames are still stored for viewers).
    """
    original = bytes(file_buffer[dataset_offset:])
    for params in _zlib_candidates():
        compressor = zlib.compressobj(
            params["level"], zlib.DEFLATED, -zlib.MAX_WBITS, params["memlevel"], params["strategy"]
        )
        if compressor.compress(inflated) + compressor.flush() == original:
            header = literal(file_buffer[:dataset_offset])
            return [header, {"deflate": params, "segments": inner}]
    return [literal(file_buffer)]


def _zlib_candidates() -> Iterator[dict[str, int]]:
    for memlevel in (8, 9):
        for level in (6, 9, 1, 2, 3, 4, 5, 7, 8, 0):
            yield {"level": level, "memlevel": memlevel, "strategy": zlib.Z_DEFAULT_STRATEGY}


def generate_bytes(
    segments: list[Segment],
    *,
    read_frame: FrameReader,
    read_bulk: BulkReader,
    read_stored: FrameReader | None = None,
) -> Iterator[bytes | memoryview]:
    """Yield the file's bytes segment by segment (memory bounded by one frame).

    ``read_frame`` gives a frame as received, ``read_stored`` as stored (they differ for
    recompressed frames; default: ``read_frame``).
    """
    for segment in segments:
        if "literal" in segment:
            yield base64.b64decode(segment["literal"])
        elif "frame" in segment:
            data = read_frame(segment["frame"])
            if "offset" in segment:
                data = data[segment["offset"] : segment["offset"] + segment["length"]]
            yield _unswap(data, segment)
        elif "bulk" in segment:
            yield _unswap(read_bulk(segment["bulk"]), segment)
        elif "stored_frames" in segment:
            yield from _items(int(segment["stored_frames"]), read_stored or read_frame)
        elif "deflate" in segment:
            params = segment["deflate"]
            compressor = zlib.compressobj(
                params["level"],
                zlib.DEFLATED,
                -zlib.MAX_WBITS,
                params["memlevel"],
                params["strategy"],
            )
            for chunk in generate_bytes(
                segment["segments"],
                read_frame=read_frame,
                read_bulk=read_bulk,
                read_stored=read_stored,
            ):
                yield compressor.compress(chunk)
            yield compressor.flush()
        else:
            raise ValueError(f"unknown skeleton segment {sorted(segment)}")


def _items(count: int, read_stored: FrameReader) -> Iterator[bytes | memoryview]:
    """An empty Basic Offset Table item, then one item per stored frame (even length)."""
    yield _ITEM.pack(0xFFFE, 0xE000, 0)
    for number in range(1, count + 1):
        data = read_stored(number)
        pad = len(data) % 2
        yield _ITEM.pack(0xFFFE, 0xE000, len(data) + pad)
        yield data
        if pad:
            yield b"\0"


def _unswap(data: bytes | memoryview, segment: Segment) -> bytes | memoryview:
    width = int(segment.get("swap", 1))
    return swap_bytes(data, width) if width > 1 else data


def referenced_bulk(segments: list[Segment]) -> set[str]:
    """Bulk-data hashes a skeleton refers to (also inside deflate segments)."""
    found: set[str] = set()
    for segment in segments:
        if "bulk" in segment:
            found.add(str(segment["bulk"]))
        elif "segments" in segment:
            found |= referenced_bulk(segment["segments"])
    return found


class ChunkStream(io.RawIOBase):
    """A readable, non-seekable stream over a chunk iterator (a rebuilt file as a stream)."""

    def __init__(self, chunks: Iterator[bytes | memoryview]) -> None:
        self.chunks = chunks
        self.buffer: bytes | memoryview = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self.buffer:
            try:
                self.buffer = next(self.chunks)
            except StopIteration:
                return 0
        size = min(len(target), len(self.buffer))
        target[:size] = self.buffer[:size]
        self.buffer = self.buffer[size:]
        return size
