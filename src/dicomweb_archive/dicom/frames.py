"""Frames of the top-level Pixel Data: where each frame's bytes are, and their media type.

- Native (uncompressed) pixel data is split at ``Rows * Columns * SamplesPerPixel *
  BitsAllocated / 8`` bytes (PS3.5 8.1.1, PS3.3 C.7.6.3). Big endian values are swapped to little
  endian (the stored frame is what its content type says; PS3.18 8.7.3.3.2). Single-bit frames that
  do not end on a byte boundary are re-packed from bit 0 (PS3.5 8.1.1 packs them continuously).
- Encapsulated pixel data (PS3.5 A.4) is grouped into frames by the Extended Offset Table
  (7FE0,0001), else the Basic Offset Table, else one frame per fragment, else by the start
  markers of the codestreams.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dicomweb_archive.dicom.parse import Buffer, Element
from dicomweb_archive.model.dicom_json import swap_bytes
from dicomweb_archive.model.syntax import EXPLICIT_VR_LITTLE_ENDIAN, media_type

PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
EXTENDED_OFFSET_TABLE = 0x7FE00001  # (7FE0,0001) ExtendedOffsetTable


_JPEG_SOI = b"\xff\xd8"
_J2K_SOC = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  "


@dataclass(slots=True)
class FrameSource:
    """Where one frame's bytes come from in the data set buffer.

    ``ranges`` are (offset, length) pieces concatenated in order. ``swap`` > 1 reverses byte
    order per word of that width. ``window`` (skip, length) then cuts the frame out of
    word-aligned bytes, for swapped frames that do not start or end on a word boundary.
    ``bits`` (first bit, bit count) selects a run of single-bit pixels that does not start on a
    byte boundary.
    """

    ranges: list[tuple[int, int]]
    swap: int = 1
    bits: tuple[int, int] | None = None
    window: tuple[int, int] | None = None

    @property
    def length(self) -> int:
        if self.bits is not None:
            return (self.bits[1] + 7) // 8
        if self.window is not None:
            return self.window[1]
        return sum(length for _, length in self.ranges)

    def read(self, buffer: Buffer) -> bytes | memoryview:
        """The frame as stored: little endian, complete, starting at its first pixel."""
        if self.bits is not None:
            start, count = self.bits
            first = start // 8
            last = (start + count + 7) // 8
            import numpy as np  # noqa: PLC0415 - single-bit frames off a byte boundary only

            chunk = np.frombuffer(buffer[first:last], dtype=np.uint8)
            bits = np.unpackbits(chunk, bitorder="little")[start % 8 : start % 8 + count]
            return np.packbits(bits, bitorder="little").tobytes()
        if len(self.ranges) == 1:
            offset, length = self.ranges[0]
            data: bytes | memoryview = memoryview(buffer)[offset : offset + length]
        else:
            data = b"".join(bytes(buffer[o : o + n]) for o, n in self.ranges)
        if self.swap > 1:
            data = swap_bytes(data, self.swap)
        if self.window is not None:
            skip, length = self.window
            data = data[skip : skip + length]
        return data


@dataclass(slots=True)
class PixelLayout:
    """The frames of a Pixel Data element and how they sit in it."""

    frames: list[FrameSource]
    transfer_syntax: str
    media_type: str
    warnings: list[str] = field(default_factory=list)
    #: True when the frames cannot be skeleton holes (re-packed bits): the value stays literal.
    keep_literal: bool = False


def native_layout(
    element: Element,
    *,
    rows: int,
    columns: int,
    samples_per_pixel: int,
    bits_allocated: int,
    number_of_frames: int,
    photometric_interpretation: str,
) -> PixelLayout:
    """Split native pixel data into frames (PS3.5 8.1.1).

    YBR_FULL_422 native data holds two samples per pixel on average (PS3.3 C.7.6.3.1.2).
    Big endian OW values are swapped per 16-bit word even for 8-bit pixels (PS3.5 7.3), so a
    frame that does not start and end on a word boundary is cut from swapped aligned words and
    the value stays literal in the skeleton.
    """
    warnings: list[str] = []
    if photometric_interpretation == "YBR_FULL_422" and samples_per_pixel == 3:
        frame_bits = rows * columns * 2 * bits_allocated
    else:
        frame_bits = rows * columns * samples_per_pixel * bits_allocated
    swap = 1
    if not element.little:
        if bits_allocated in (16, 32, 64):
            swap = bits_allocated // 8
        elif element.vr == "OW":
            swap = 2
    layout = PixelLayout([], EXPLICIT_VR_LITTLE_ENDIAN, media_type(EXPLICIT_VR_LITTLE_ENDIAN))
    if frame_bits == 0 or number_of_frames < 1:
        return layout
    available_bits = element.length * 8
    complete = min(number_of_frames, available_bits // frame_bits)
    if complete < number_of_frames:
        warnings.append(f"pixel data holds {complete} of {number_of_frames} frames")
    if frame_bits % 8:
        layout.keep_literal = True
        for index in range(complete):
            start = element.value_offset * 8 + index * frame_bits
            layout.frames.append(FrameSource([], bits=(start, frame_bits)))
    elif swap > 1 and (frame_bits // 8) % swap:
        layout.keep_literal = True
        size = frame_bits // 8
        for index in range(complete):
            start = element.value_offset + index * size
            aligned = element.value_offset + (index * size) // swap * swap
            end = aligned + -(-(start + size - aligned) // swap) * swap
            window = (start - aligned, size)
            layout.frames.append(FrameSource([(aligned, end - aligned)], swap, window=window))
    else:
        size = frame_bits // 8
        for index in range(complete):
            layout.frames.append(FrameSource([(element.value_offset + index * size, size)], swap))
    layout.warnings = warnings
    return layout


STARTS_FRAME = (_JPEG_SOI, _J2K_SOC, _JP2_SIGNATURE)


def starts_codestream(head: bytes) -> bool:
    """True when a fragment begins a JPEG, JPEG-LS, JPEG 2000 or JP2 codestream."""
    return head.startswith(STARTS_FRAME)
