"""Instances whose file ends inside Pixel Data (PS3.5 7.1, 8.1.1, A.4): stored, flagged.

pydicom and Orthanc read such files, so the archive stores them
(``docs/spec/export-verify.md``, "Incomplete instances"):
the frames that are whole become frames; the received bytes of the rest of Pixel Data (the
frame the file ends inside, a cut item header) stay in the skeleton as one segment marked
``incomplete`` with the number of the first frame that is not whole, so that export gives the
file back byte for byte. The mark is what makes an instance incomplete: the index flag and
verify's class are derived from it. In a deflated file (PS3.5 A.5) the mark is inside the
``deflate`` segment's own segments (or on the one literal segment that keeps the whole file when
no zlib parameters reproduce its deflate stream).
"""

from __future__ import annotations

from typing import Any

#: the key of the skeleton segment holding the received bytes after the whole frames
INCOMPLETE = "incomplete"


def incomplete_frame(skeleton: list[dict[str, Any]]) -> int | None:
    """The number of the first frame that is not whole, when the file ends inside Pixel Data
    (None: the file is complete)."""
    for segment in skeleton:
        if INCOMPLETE in segment:
            return int(segment[INCOMPLETE])
        if "deflate" in segment:
            inner = incomplete_frame(segment["segments"])
            if inner is not None:
                return inner
    return None
