"""Inflating a Deflated Explicit VR Little Endian data set (PS3.5 A.5), in bounded steps.

The deflated data set is inflated chunk by chunk, so that zlib never builds more than
:data:`INFLATE_STEP` bytes at once, and refused as soon as it grows past the limit
(:func:`inflation_limit`): a few hundred kilobytes of deflated zeros can inflate to hundreds
of megabytes (a "deflate bomb"), and the data set of a deflated file is held in memory whole.
Bytes after the end of the deflate stream are not part of the data set: they are the file's
trailing bytes (``docs/spec/info-record.md``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from dicomweb_archive.errors import InflationLimitError, TruncatedError

#: A deflated data set may always inflate to this many bytes ...
INFLATE_FLOOR = 64 << 20
#: ... and beyond that to at most this many times its deflated size (real data sets inflate
#: 2 to 20 times; deflate itself cannot exceed 1032).
INFLATE_RATIO = 100
#: Bytes zlib may produce in one step.
INFLATE_STEP = 1 << 20
_INPUT_STEP = 1 << 16


@dataclass(frozen=True, slots=True)
class Inflated:
    """The inflated data set, and where the deflate stream ended in the deflated bytes."""

    data: bytes
    deflated_size: int


def inflation_limit(deflated_size: int) -> int:
    """The most bytes a deflated data set of ``deflated_size`` bytes may inflate to."""
    return max(INFLATE_FLOOR, INFLATE_RATIO * deflated_size)


def inflate(deflated: bytes | memoryview, *, name: str) -> Inflated:
    """Inflate a raw deflate stream (PS3.5 A.5: RFC 1951, no zlib header).

    Raises:
        TruncatedError: the stream is damaged or ends early.
        InflationLimitError: it inflates beyond :func:`inflation_limit`.
    """
    view = memoryview(deflated)
    limit = inflation_limit(len(view))
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    position = 0
    try:
        while not inflater.eof:
            if inflater.unconsumed_tail:
                chunk = inflater.decompress(inflater.unconsumed_tail, INFLATE_STEP)
            elif position < len(view):
                chunk = inflater.decompress(view[position : position + _INPUT_STEP], INFLATE_STEP)
                position += _INPUT_STEP
            else:
                break
            out += chunk
            if len(out) > limit:
                raise InflationLimitError(
                    f"{name}: the deflated data set inflates to more than {limit >> 20} MB, "
                    f"the most accepted from {len(view)} deflated bytes (the larger of "
                    f"{INFLATE_FLOOR >> 20} MB and {INFLATE_RATIO} times their size); refused "
                    "as a possible deflate bomb"
                )
    except zlib.error as exc:
        raise TruncatedError(f"{name}: the deflated data set cannot be inflated") from exc
    if not inflater.eof:
        raise TruncatedError(f"{name}: the deflated data set ends early; the file is incomplete")
    end = min(position, len(view)) - len(inflater.unused_data)
    return Inflated(bytes(out), end)
