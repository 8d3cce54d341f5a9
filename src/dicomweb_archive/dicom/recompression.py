"""Which frames ingest recompresses, and to what: the policy of the seed's ``-r``,
``--no-recompress``, ``-t`` and ``-T`` (``docs/spec/recompression.md``).

A :class:`Recompression` names the source transfer syntaxes to recompress (the seed's aliases:
``uncompressed``, ``jp2``, ``jpeglossless``, ``rle``; default ``uncompressed jp2``) and a target
for grayscale (MONOCHROME1/2) and for colour frames: JPEG-LS lossless (``jls``, the default,
1.2.840.10008.1.2.4.80), HTJ2K lossless (``htj2k``, 1.2.840.10008.1.2.4.201), JPEG 2000
lossless (1.2.840.10008.1.2.4.90), Explicit VR Little Endian (decompress), JPEG baseline
(``jpeg``, 1.2.840.10008.1.2.4.50: lossy, colour only, when asked), or ``none``. The codecs
that do it are in ``dicom/recompress.py`` and ``dicom/codecs.py`` (numpy, imagecodecs), which
only a command that recompresses imports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dicomweb_archive.errors import UsageError
from dicomweb_archive.model.pixel import PixelDescription
from dicomweb_archive.model.syntax import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_LS_LOSSLESS,
    NATIVE,
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
#: Lossless targets (``dicom/codecs.py`` has an encoder for each compressed one).
LOSSLESS_TARGETS = {JPEG_LS_LOSSLESS, JPEG_2000_LOSSLESS, HTJ2K_LOSSLESS, EXPLICIT_VR_LITTLE_ENDIAN}
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
