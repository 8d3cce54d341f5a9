"""Transfer syntax UIDs (PS3.6 Table A-1, PS3.5 8 and A) and their frame media types
(PS3.18 Table 8.7.3-2, 8.7.4-1), defined once.

They are plain strings here rather than pydicom's ``UID`` constants so that a command that only
reads a store's records does not import pydicom (a third of a second); ``tests/test_syntax.py``
checks each against pydicom's.
"""

from __future__ import annotations

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

#: Native frames (PS3.5 A.1-A.3): their values are the pixels.
NATIVE = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN})
#: Pixel data that is not encapsulated: the native ones, and deflated data sets (PS3.5 A.5).
NATIVE_PIXEL_DATA = NATIVE | {DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}

#: Media types of frames by transfer syntax (PS3.18 Table 8.7.3-2, 8.7.4-1).
FRAME_MEDIA_TYPES = {
    JPEG_BASELINE: "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    JPEG_LS_LOSSLESS: "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    JPEG_2000_LOSSLESS: "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    HTJ2K_LOSSLESS: "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    RLE_LOSSLESS: "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}


def media_type(transfer_syntax: str) -> str:
    """The content type of a stored frame, with its transfer-syntax parameter."""
    base = FRAME_MEDIA_TYPES.get(transfer_syntax, "application/octet-stream")
    return f"{base}; transfer-syntax={transfer_syntax}"
