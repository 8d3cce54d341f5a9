"""Recompressing frames at ingest, by the policy of ``dicom/recompression.py``.

Lossless means lossless: each recompressed frame is decoded again and must give back exactly
the source pixels, and for native sources exactly the source bytes (bits above Bits Stored
included), or the frame is kept as received and the reason recorded. Signed values whose bits
above Bits Stored are not sign bits are coded as their Bits Allocated container words. A lossy
frame is only ever stored next to its original, which stays in the store as bulk data: an
instance can always be exported as received. The codestreams of a compressed original are kept
the same way with ``keep_originals``; otherwise only their pixels are, and such an instance is
exported pixel for pixel (``docs/spec/recompression.md``).

References: encapsulated transfer syntaxes PS3.5 8.2 (JPEG-LS 8.2.3, JPEG 2000 and HTJ2K 8.2.4
and after) and A.4; their UIDs PS3.6 Table A-1; frame media types PS3.18 Table 8.7.3-2;
AvailableTransferSyntaxUID (0008,3002, VR UI, VM 1-n) in the DICOM JSON of PS3.18 F.2.

The frame record (``docs/spec/info-record.md``) of a recompressed frame names the stored
transfer syntax and its ``source``: the original frame's transfer syntax, SHA-256 and size, the
SHA-256 of its pixels (native little endian bytes, which :func:`source_pixels` recomputes from
the stored frame), and for lossy frames the bulk-data hash of the original.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dicomweb_archive.dicom.codecs import (
    decode_frame,
    encode,
    encode_lossy_jpeg,
    native_array,
    native_bytes,
    sign_extends,
)
from dicomweb_archive.dicom.recompression import (
    CARRIED,
    TARGET_LABELS,
    Recompression,
)
from dicomweb_archive.errors import CodecError
from dicomweb_archive.model.info import FrameRecord
from dicomweb_archive.model.pixel import PixelDescription
from dicomweb_archive.model.syntax import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    JPEG_BASELINE,
    media_type,
)

BulkReader = Callable[[str], bytes | memoryview]


@dataclass(slots=True)
class Outcome:
    """One frame after recompression: what to store, and what the info record says."""

    data: bytes | memoryview
    media_type: str
    record: dict[str, Any] = field(default_factory=dict)
    #: the received frame, to keep as bulk data (lossy targets, ``keep_originals``)
    original: bytes | memoryview | None = None
    note: str | None = None  # why the frame was kept as received


class FrameRecompressor:
    """Recompresses the frames of one instance received in transfer syntax ``received``;
    ``native`` says its frames arrive as little endian native bytes (PS3.5 8.1.1)."""

    def __init__(
        self,
        policy: Recompression,
        received: str,
        pixel: PixelDescription | None,
        *,
        native: bool,
    ) -> None:
        self.received = received
        self.native = native
        self.keep_originals = policy.keep_originals
        self.pixel = pixel
        self.frame_syntax = EXPLICIT_VR_LITTLE_ENDIAN if native else received
        self.target = policy.target(received, pixel) if pixel is not None else None
        if self.target == self.frame_syntax:
            self.target = None
        self.reason = _unsupported(self.target, pixel)
        self.label = TARGET_LABELS.get(self.target or "", self.target)

    @property
    def active(self) -> bool:
        return self.target is not None and self.reason is None

    def frame(self, data: bytes | memoryview, sha256: str) -> Outcome:
        """The frame recompressed, or as received with the reason (never an exception).

        ``sha256`` is the received frame's hash (computed once by the caller)."""
        kept = Outcome(
            data, media_type(self.frame_syntax), {"transfer_syntax_uid": self.frame_syntax}
        )
        if not self.active:
            return kept
        assert self.target is not None and self.pixel is not None
        try:
            return self._recompress(data, sha256, self.target, self.pixel)
        except CodecError as exc:
            kept.note = str(exc)
        except Exception as exc:  # a codec's or numpy's surprise must not fail the instance
            kept.note = f"unexpected {type(exc).__name__} while recompressing: {exc}"
        return kept

    def _recompress(
        self, data: bytes | memoryview, sha256: str, target: str, pixel: PixelDescription
    ) -> Outcome:
        if self.native:
            array = native_array(data, pixel)
            source: bytes | memoryview = data
            pixels_sha256 = sha256
        else:
            array, photometric = decode_frame(bytes(data), self.received, pixel)
            if photometric != pixel.photometric_interpretation:
                raise CodecError(f"the frame decodes to {photometric} pixels")
            source = native_bytes(array, pixel)
            pixels_sha256 = hashlib.sha256(source).hexdigest()
        record: dict[str, Any] = {
            "transfer_syntax_uid": target,
            "source": {
                "transfer_syntax_uid": self.received,
                "sha256": sha256,
                "size": len(data),
                "pixels_sha256": pixels_sha256,
            },
        }
        if target == JPEG_BASELINE:
            record["source"]["bulk"] = sha256
            return Outcome(encode_lossy_jpeg(array), media_type(target), record, original=data)
        original = None
        if self.keep_originals and not self.native:  # native frames are given back by decoding
            record["source"]["bulk"] = sha256
            original = data
        if target == EXPLICIT_VR_LITTLE_ENDIAN:
            stored = bytes(source)
        else:
            stored = encode(array, target)
            decoded, _ = decode_frame(stored, target, pixel)
            if not _gives_back(decoded, array, source, pixel):
                if not (self.native and sign_extends(pixel)):
                    raise CodecError(
                        "decoded, it does not give back the received bytes exactly"
                        if self.native
                        else "decoded, it does not give back the source pixels exactly"
                    )
                stored = _encode_words(source, target, pixel)
        return Outcome(stored, media_type(target), record, original=original)


def _encode_words(source: bytes | memoryview, target: str, pixel: PixelDescription) -> bytes:
    """A native frame of signed values whose bits above Bits Stored are not sign bits (an
    overlay, say) coded at Bits Allocated precision: its container words as unsigned samples,
    which JPEG-LS, JPEG 2000 and HTJ2K code up to 16 bits (PS3.5 A.4.3, A.4.4). Decoded as
    words (:func:`decode_frame` with ``words``) it must give back the received bytes exactly.
    """
    words = replace(pixel, pixel_representation=0)
    stored = encode(native_array(source, words), target)
    decoded, _ = decode_frame(stored, target, pixel, words=True)
    if native_bytes(decoded, pixel) != bytes(source):
        raise CodecError(
            "decoded, it does not give back the received bytes exactly, neither as values nor "
            f"as {pixel.bits_allocated}-bit words"
        )
    return stored


def _gives_back(
    decoded: np.ndarray, array: np.ndarray, source: bytes | memoryview, pixel: PixelDescription
) -> bool:
    """Whether the decoded frame is the source exactly: its pixels and, re-encoded natively,
    its bytes. Fast path: where the source array is a plain view of the source bytes (no sign
    extension, samples interleaved, no byte left over), equal arrays mean equal bytes."""
    if decoded.shape != array.shape or decoded.dtype != array.dtype:
        return False
    plain = not sign_extends(pixel) and pixel.planar_configuration == 0
    if plain and len(source) == array.nbytes:
        return bool(np.array_equal(decoded, array))
    return native_bytes(decoded, pixel) == bytes(source)


def _unsupported(target: str | None, pixel: PixelDescription | None) -> str | None:
    """Why frames of this kind cannot be recompressed to ``target`` (None: they can)."""
    if target is None or pixel is None:
        return None
    photometric = pixel.photometric_interpretation
    samples = pixel.samples_per_pixel
    if photometric not in CARRIED:
        return f"{photometric} frames are kept as received"
    if samples != (3 if photometric in ("RGB", "YBR_FULL") else 1):
        return f"{samples} samples per pixel do not fit {photometric}"
    if pixel.bits_allocated not in (8, 16, 32):
        return f"{pixel.bits_allocated}-bit frames are kept as received"
    if not 0 < pixel.bits_stored <= pixel.bits_allocated:
        return f"Bits Stored {pixel.bits_stored} does not fit Bits Allocated"
    if samples == 3 and pixel.planar_configuration == 1:
        return "colour-by-plane frames (Planar Configuration 1) are kept as received"
    if pixel.bits_allocated > 16 and target != EXPLICIT_VR_LITTLE_ENDIAN:
        return (
            "frames of more than 16 bits per sample are kept as received (JPEG-LS stops at 16,"
            " and common JPEG 2000 decoders do too)"
        )
    if target == JPEG_BASELINE and (
        photometric != "RGB" or pixel.bits_allocated != 8 or pixel.bits_stored != 8
    ):
        return "lossy JPEG is used for 8-bit RGB frames only"
    return None


def source_pixels(
    stored: bytes | memoryview, record: FrameRecord, pixel: PixelDescription, *, check: bool = True
) -> bytes:
    """The native little endian pixels a recompressed frame decodes to, checked against the
    SHA-256 recorded at ingest (raises :class:`CodecError` when they differ; ``check`` off:
    the caller checks what it builds from them)."""
    assert record.source is not None and record.transfer_syntax_uid is not None
    array, _ = decode_frame(bytes(stored), record.transfer_syntax_uid, pixel)
    pixels = native_bytes(array, pixel)
    expected = record.source.pixels_sha256
    if sign_extends(pixel) and hashlib.sha256(pixels).hexdigest() != expected:
        # signed values with bits above Bits Stored that are not sign bits, coded as words
        array, _ = decode_frame(bytes(stored), record.transfer_syntax_uid, pixel, words=True)
        pixels = native_bytes(array, pixel)
    if check and hashlib.sha256(pixels).hexdigest() != expected:
        raise CodecError("it decodes to pixels that differ from the source's (SHA-256)")
    return pixels


def source_frame(
    stored: bytes | memoryview,
    record: FrameRecord,
    pixel: PixelDescription | None,
    read_bulk: BulkReader,
    *,
    check: bool = True,
) -> bytes | memoryview:
    """The frame as received (what the skeleton's frame segments refer to) from the stored
    frame: itself, the kept original of a lossy frame, or the native pixels decoded from a
    losslessly recompressed native frame."""
    source = record.source
    if source is None:
        return stored
    if source.bulk is not None:
        return read_bulk(source.bulk)
    if pixel is None:
        raise CodecError("the info record lacks the pixel description of recompressed frames")
    return source_pixels(stored, record, pixel, check=check)
