"""Recompressing frames at ingest (the seed's ``-r``, ``--no-recompress``, ``-t``, ``-T``).

A :class:`Recompression` names the source transfer syntaxes to recompress (the seed's aliases:
``uncompressed``, ``jp2``, ``jpeglossless``, ``rle``; default ``uncompressed jp2``) and a target
for grayscale (MONOCHROME1/2) and for colour frames: JPEG-LS lossless (``jls``, the default,
1.2.840.10008.1.2.4.80), HTJ2K lossless (``htj2k``, 1.2.840.10008.1.2.4.201), JPEG 2000
lossless (1.2.840.10008.1.2.4.90), Explicit VR Little Endian (decompress), JPEG baseline
(``jpeg``, 1.2.840.10008.1.2.4.50: lossy, colour only, when asked), or ``none``.

Lossless means lossless: each recompressed frame is decoded again and must give back exactly
the source pixels, and for native sources exactly the source bytes (bits above Bits Stored
included), or the frame is kept as received and the reason recorded. A lossy frame is only
ever stored next to its original, which stays in the store as bulk data: an instance can always
be exported as received. The codestreams of a compressed original are kept the same way with
``keep_originals``; otherwise only their pixels are, and such an instance is exported pixel for
pixel (``docs/spec/recompression.md``).

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
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dicomweb_archive.dicom.codecs import (
    ENCODERS,
    decode_frame,
    encode,
    encode_lossy_jpeg,
    native_array,
    native_bytes,
    sign_extends,
)
from dicomweb_archive.errors import CodecError, UsageError
from dicomweb_archive.model.info import FrameRecord
from dicomweb_archive.model.pixel import PixelDescription
from dicomweb_archive.model.syntax import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_LS_LOSSLESS,
    NATIVE,
    media_type,
)

#: The seed's recompression aliases -> source transfer syntaxes (its README's table).
SOURCE_TYPES: dict[str, tuple[str, ...]] = {
    "uncompressed": tuple(sorted(NATIVE)),
    "jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "jpeglossless": ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"),
    "rle": ("1.2.840.10008.1.2.5",),
}
DEFAULT_TYPES = ("uncompressed", "jp2")
#: Target names of ``-t`` and ``-T`` -> transfer syntax (None: keep frames as received).
TARGET_NAMES: dict[str, str | None] = {
    "jls": JPEG_LS_LOSSLESS,
    "htj2k": HTJ2K_LOSSLESS,
    "jpeg": JPEG_BASELINE,
    "none": None,
}
LOSSLESS_TARGETS = {*ENCODERS, EXPLICIT_VR_LITTLE_ENDIAN}
TARGET_LABELS = {
    JPEG_LS_LOSSLESS: "JPEG-LS lossless",
    HTJ2K_LOSSLESS: "HTJ2K lossless",
    JPEG_2000_LOSSLESS: "JPEG 2000 lossless",
    EXPLICIT_VR_LITTLE_ENDIAN: "Explicit VR Little Endian",
    JPEG_BASELINE: "JPEG baseline (lossy)",
}
GREY = ("MONOCHROME1", "MONOCHROME2")
#: Photometric interpretations whose samples a lossless codec carries as they are.
CARRIED = (*GREY, "PALETTE COLOR", "RGB", "YBR_FULL")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")

BulkReader = Callable[[str], bytes | memoryview]


@dataclass(frozen=True, slots=True)
class Recompression:
    """Which received transfer syntaxes are recompressed, and to what (None: kept)."""

    sources: frozenset[str] = field(
        default_factory=lambda: frozenset(s for t in DEFAULT_TYPES for s in SOURCE_TYPES[t])
    )
    grey: str | None = JPEG_LS_LOSSLESS
    colour: str | None = JPEG_LS_LOSSLESS
    #: keep the received codestreams of compressed originals too (``--keep-originals``), so
    #: that they are exported byte for byte rather than pixel for pixel
    keep_originals: bool = False

    @classmethod
    def from_options(
        cls,
        types: Iterable[str] | None = None,
        grey: str | None = None,
        colour: str | None = None,
        *,
        disabled: bool = False,
        keep_originals: bool = False,
    ) -> Recompression | None:
        """The policy the seed's options describe; None when nothing is recompressed.

        ``types`` are aliases, comma- or space-separated (default ``uncompressed jp2``);
        ``grey`` and ``colour`` are target names or transfer syntax UIDs (default ``jls``).
        """
        names = [n for value in types or [] for n in re.split(r"[,\s]+", value) if n]
        for name in names:
            if name not in SOURCE_TYPES:
                raise UsageError(
                    f"-r/--recompress: {name!r} is not one of {', '.join(SOURCE_TYPES)}"
                )
        grey_target = _target(grey, "-t/--content-type", colour_only=False)
        colour_target = _target(colour, "-T/--colour-content-type", colour_only=True)
        if disabled:
            return None
        sources = frozenset(s for n in names or DEFAULT_TYPES for s in SOURCE_TYPES[n])
        if grey_target is None and colour_target is None:
            return None
        return cls(sources, grey_target, colour_target, keep_originals)

    def to_json(self) -> dict[str, Any]:
        """The policy as recorded in a store's configuration."""
        return {
            "sources": sorted(self.sources),
            "grey": self.grey,
            "colour": self.colour,
            "keep_originals": self.keep_originals,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Recompression:
        return cls(
            frozenset(value["sources"]),
            value["grey"],
            value["colour"],
            bool(value.get("keep_originals", False)),
        )

    def target(self, syntax: str, pixel: PixelDescription) -> str | None:
        """The target for frames of this kind received in ``syntax`` (None: kept)."""
        if syntax not in self.sources:
            return None
        grey = pixel.photometric_interpretation in GREY
        target = self.grey if grey else self.colour
        return None if target == syntax else target


def _target(value: str | None, option: str, *, colour_only: bool) -> str | None:
    if value is None:
        return JPEG_LS_LOSSLESS
    if value in TARGET_NAMES:
        target = TARGET_NAMES[value]
    elif _UID.fullmatch(value):
        target = value
    else:
        names = ", ".join(TARGET_NAMES)
        raise UsageError(f"{option}: {value!r} is not one of {names} or a transfer syntax UID")
    if target is None:
        return None
    if target == JPEG_BASELINE and not colour_only:
        raise UsageError(f"{option}: lossy JPEG is for colour frames only (use it with -T)")
    if target not in LOSSLESS_TARGETS and target != JPEG_BASELINE:
        allowed = ", ".join(sorted(LOSSLESS_TARGETS | {JPEG_BASELINE}))
        raise UsageError(f"{option}: frames cannot be recompressed to {target} (use {allowed})")
    return target


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
                raise CodecError(
                    "decoded, it does not give back the received bytes exactly (bits above "
                    "Bits Stored that are not sign bits?)"
                    if self.native
                    else "decoded, it does not give back the source pixels exactly"
                )
        return Outcome(stored, media_type(target), record, original=original)


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
    stored: bytes | memoryview, record: FrameRecord, pixel: PixelDescription
) -> bytes:
    """The native little endian pixels a recompressed frame decodes to, checked against the
    SHA-256 recorded at ingest (raises :class:`CodecError` when they differ)."""
    assert record.source is not None and record.transfer_syntax_uid is not None
    array, _ = decode_frame(bytes(stored), record.transfer_syntax_uid, pixel)
    pixels = native_bytes(array, pixel)
    if hashlib.sha256(pixels).hexdigest() != record.source.pixels_sha256:
        raise CodecError("it decodes to pixels that differ from the source's (SHA-256)")
    return pixels


def source_frame(
    stored: bytes | memoryview,
    record: FrameRecord,
    pixel: PixelDescription | None,
    read_bulk: BulkReader,
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
    return source_pixels(stored, record, pixel)
