"""Pixel Data (7FE0,0010) of a de-identified instance written anew: rectangles blanked (PS3.15
E.3.1, Clean Pixel Data Option) in the frames a rule touches, every other frame as it is.

- Native frames (PS3.5 8.1.1, little endian): the words of the rectangle's pixels are set to 0
  in every sample, in the frame's bytes; the value's length does not change.
- Encapsulated frames (PS3.5 A.4): a touched frame is decoded, blanked and encoded again
  losslessly in the same transfer syntax (JPEG-LS, JPEG 2000 or HTJ2K lossless: the codecs
  ``dicom/codecs.py`` encodes and checks), one fragment per frame after an empty Basic Offset
  Table. Other syntaxes (lossy JPEG, JPEG 2000 or JPEG-LS near-lossless, JPEG lossless, RLE)
  are refused for cleaning: encoding a lossy frame again loses more, and those encoders are not
  here; the instance is reported and left out rather than released uncleaned.

Blanked pixels are 0 in every sample (for signed pixels too, not the most negative value): the
test reads them back with pydicom. Frames pass through as they are read, one at a time.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from dicomweb_archive.errors import ArchiveError
from dicomweb_archive.model.pixel import PixelDescription
from dicomweb_archive.model.syntax import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_2000_LOSSLESS,
    JPEG_LS_LOSSLESS,
)

Chunk = bytes | memoryview
Areas = dict[int, list[tuple[slice, slice]]]
#: native syntaxes whose frames are blanked in their bytes
NATIVE_LITTLE = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN})
#: encapsulated syntaxes a frame is encoded in again after blanking (lossless, checked)
REENCODED = frozenset({JPEG_LS_LOSSLESS, JPEG_2000_LOSSLESS, HTJ2K_LOSSLESS})
_ITEM = struct.Struct("<HHI")
_ENCAPSULATED_HEADER = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
_SEQUENCE_DELIMITER = _ITEM.pack(0xFFFE, 0xE0DD, 0)


def check_cleanable(syntax: str, pixel: PixelDescription) -> None:
    """Raise :class:`ArchiveError` (worded without values) when frames of this transfer
    syntax and pixel description cannot be cleaned here (see the module docstring)."""
    if syntax not in NATIVE_LITTLE | REENCODED:
        raise ArchiveError(
            f"its frames are in transfer syntax {syntax}, which cannot be cleaned and encoded "
            "again losslessly here (native little endian, JPEG-LS, JPEG 2000 and HTJ2K "
            "lossless can): it needs review, it is left out"
        )
    if pixel.bits_allocated not in (8, 16, 32) or pixel.photometric_interpretation.endswith("_422"):
        raise ArchiveError(
            f"its pixels ({pixel.bits_allocated} bits allocated, "
            f"{pixel.photometric_interpretation}) cannot be cleaned here: it is left out"
        )


def pixel_element(
    header: bytes,
    *,
    syntax: str,
    count: int,
    read: Callable[[int], Chunk],
    pixel: PixelDescription,
    areas: Areas,
) -> Iterator[Chunk]:
    """The Pixel Data element of ``count`` frames (``read(n)`` gives frame n in ``syntax``),
    the ``areas`` of each frame they name blanked. ``header`` is the original element's
    header: kept for native frames (their length does not change), replaced by one of
    undefined length for encapsulated ones."""
    if syntax in NATIVE_LITTLE:
        yield header
        written = 0
        for number in range(1, count + 1):
            data = read(number)
            if number in areas:
                data = _blank_native(data, pixel, areas[number])
            written += len(data)
            yield data
        length = int.from_bytes(header[-4:], "little")
        if length > written:  # the pad byte of an odd-length value (PS3.5 7.1.1)
            yield b"\0" * (length - written)
        return
    yield _ENCAPSULATED_HEADER
    yield _ITEM.pack(0xFFFE, 0xE000, 0)  # an empty Basic Offset Table (PS3.5 A.4)
    for number in range(1, count + 1):
        data = read(number)
        if number in areas:
            data = _blank_encoded(bytes(data), syntax, pixel, areas[number])
        pad = len(data) % 2
        yield _ITEM.pack(0xFFFE, 0xE000, len(data) + pad)
        yield data
        if pad:
            yield b"\0"
    yield _SEQUENCE_DELIMITER


def _blank_native(data: Chunk, pixel: PixelDescription, areas: list[tuple[slice, slice]]) -> bytes:
    """A native little endian frame with the areas' words set to 0 (other bytes as they are)."""
    import numpy as np  # noqa: PLC0415 - numpy only where pixels are cleaned

    samples = pixel.samples_per_pixel
    count = pixel.rows * pixel.columns * samples
    words = np.frombuffer(data, dtype=pixel.dtype, count=count).copy()
    if samples > 1 and pixel.planar_configuration == 1:
        planes = words.reshape(samples, pixel.rows, pixel.columns)
        for rows, columns in areas:
            planes[:, rows, columns] = 0
    else:
        image = words.reshape(pixel.rows, pixel.columns, samples)
        for rows, columns in areas:
            image[rows, columns, :] = 0
    return words.tobytes() + bytes(data[words.nbytes :])


def _blank_encoded(
    data: bytes, syntax: str, pixel: PixelDescription, areas: list[tuple[slice, slice]]
) -> bytes:
    """A compressed frame decoded, its areas set to 0, and encoded again in ``syntax``
    (checked lossless by :func:`~dicomweb_archive.dicom.codecs.encode_frame`)."""
    from dicomweb_archive.dicom.codecs import decode_frame, encode_frame  # noqa: PLC0415

    array, photometric = decode_frame(data, syntax, pixel)
    if photometric != pixel.photometric_interpretation:
        raise ArchiveError(
            f"a frame decodes to {photometric}, not {pixel.photometric_interpretation}: "
            "it cannot be encoded again as it was"
        )
    array = array.copy()
    for rows, columns in areas:
        array[rows, columns] = 0
    return encode_frame(array, syntax, pixel)
