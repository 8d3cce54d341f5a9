"""Decoding and encoding frames (PS3.5 8 and Annex A), for recompression, transcoding and serving.

JPEG (baseline, extended, lossless), JPEG-LS, JPEG 2000 and HTJ2K codestreams are decoded with
imagecodecs; RLE frames with pydicom's decoder (without colour conversion); native frames are
read directly. A decoded frame is an array of shape (rows, columns[, samples]) in the container
type of the stored data (Bits Allocated, Pixel Representation), little endian, with signed values
sign-extended from Bits Stored (PS3.5 8.1.1) as pydicom gives them. JPEG colour frames are
decoded to RGB (the codec applies the YCbCr transform), which the caller records as the new
Photometric Interpretation.

Encoding is lossless only (JPEG-LS 1.2.840.10008.1.2.4.80, JPEG 2000 .4.90, HTJ2K .4.201) and
every encoded frame is decoded again and compared with the pixels it was made from; the one
lossy encoder (JPEG baseline .4.50, for 8-bit RGB) is used only where a caller asks for it.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace

import imagecodecs
import numpy as np

from dicomweb_archive.errors import CodecError
from dicomweb_archive.model.pixel import PixelDescription
from dicomweb_archive.model.syntax import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_LS_LOSSLESS,
    NATIVE,
    RLE_LOSSLESS,
)

JPEG_FAMILY = {
    JPEG_BASELINE: "jpeg8",
    "1.2.840.10008.1.2.4.51": "jpeg8",
    "1.2.840.10008.1.2.4.57": "ljpeg",
    "1.2.840.10008.1.2.4.70": "ljpeg",
    JPEG_LS_LOSSLESS: "jpegls",
    "1.2.840.10008.1.2.4.81": "jpegls",
    JPEG_2000_LOSSLESS: "jpeg2k",
    "1.2.840.10008.1.2.4.91": "jpeg2k",
    HTJ2K_LOSSLESS: "htj2k",  # OpenJPH: HT code blocks only, as .4.201 and .4.202 have
    "1.2.840.10008.1.2.4.202": "htj2k",
    "1.2.840.10008.1.2.4.203": "jpeg2k",  # may mix HT and part 1 code blocks: OpenJPEG
}
#: Lossless compressed targets -> imagecodecs encoder.
ENCODERS = {JPEG_LS_LOSSLESS: "jpegls", JPEG_2000_LOSSLESS: "jpeg2k", HTJ2K_LOSSLESS: "htj2k"}
#: One OpenJPH call at a time. imagecodecs' HTJ2K codec (new in 2026.3) once failed a decode
#: with "ojph error" and an exception in its read callback while other threads were coding
#: HTJ2K (a clean-clone test run; not reproduced in 60,000 concurrent calls since). The
#: lossless check then kept the frame as received, so nothing was wrong in the store; the lock
#: removes the suspected cause at little cost (an HTJ2K frame codes in about 2.7 ms).
_OPENJPH = threading.Lock()


def decode_frame(
    data: bytes, syntax: str, pixel: PixelDescription, *, words: bool = False
) -> tuple[np.ndarray, str]:
    """One frame's pixels and the Photometric Interpretation they are now in. ``words``: the
    container words as coded, signed values not sign-extended from Bits Stored (a frame coded
    at Bits Allocated precision, its bits above Bits Stored as received)."""
    if words:
        array, photometric = decode_frame(data, syntax, replace(pixel, pixel_representation=0))
        return array.view(pixel.dtype), photometric
    codec = JPEG_FAMILY.get(syntax)
    if codec is not None:
        decoder = getattr(imagecodecs, f"{codec}_decode")
        options = {}
        rgb = pixel.samples_per_pixel == 3 and pixel.photometric_interpretation == "RGB"
        if codec == "jpeg8" and rgb and not _jpeg_says_ycbcr(data):
            options = {"colorspace": "RGB", "outcolorspace": "RGB"}
        try:
            with _OPENJPH if codec == "htj2k" else contextlib.nullcontext():
                array = np.asarray(decoder(data, **options))
        except Exception as exc:  # imagecodecs raises its own error types per codec
            raise CodecError(f"cannot decode a {syntax} frame: {exc}") from exc
        photometric = pixel.photometric_interpretation
        if codec == "jpeg8" and pixel.samples_per_pixel == 3:
            photometric = "RGB"
        return container(array, pixel), photometric
    if syntax in NATIVE and pixel.bits_allocated in (8, 16, 32):
        return native_array(data, pixel), pixel.photometric_interpretation
    if syntax == RLE_LOSSLESS or syntax in NATIVE:
        return _with_pydicom(data, syntax, pixel), pixel.photometric_interpretation
    raise CodecError(f"frames in transfer syntax {syntax} cannot be decoded here")


def _jpeg_says_ycbcr(data: bytes) -> bool:
    """Whether a JPEG codestream's header marks its three components as YCbCr: a JFIF APP0
    segment, or an Adobe APP14 segment with transform 1 (ITU-T T.872). Without either, a frame
    whose Photometric Interpretation is RGB holds RGB components (PS3.5 8.2.1, PS3.3
    C.7.6.3.1.2), which libjpeg would otherwise take for YCbCr and convert."""
    pos = 2  # after SOI
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE0 and segment.startswith(b"JFIF\0"):
            return True
        if marker == 0xEE and segment.startswith(b"Adobe") and len(segment) >= 12:
            return segment[11] == 1
        if marker == 0xDA:  # start of scan: no header segment said so
            return False
        pos += 2 + length
    return False


def native_array(data: bytes | memoryview, pixel: PixelDescription) -> np.ndarray:
    """A little endian native frame (PS3.5 8.1.1) as an array, samples last."""
    dtype = pixel.dtype
    if pixel.bits_allocated not in (8, 16, 32) or len(data) < np.prod(pixel.shape) * dtype.itemsize:
        raise CodecError(
            f"a native frame of {len(data)} bytes is not {pixel.rows} x {pixel.columns} x "
            f"{pixel.samples_per_pixel} samples of {pixel.bits_allocated} bits"
        )
    count = int(np.prod(pixel.shape))
    flat = np.frombuffer(data, dtype=dtype, count=count)
    if pixel.samples_per_pixel > 1 and pixel.planar_configuration == 1:
        planes = flat.reshape(pixel.samples_per_pixel, pixel.rows, pixel.columns)
        return sign_extend(np.moveaxis(planes, 0, -1), pixel)
    return sign_extend(flat.reshape(pixel.shape), pixel)


def native_bytes(array: np.ndarray, pixel: PixelDescription) -> bytes:
    """The native little endian bytes of a decoded frame, in its Planar Configuration."""
    values = np.asarray(array, dtype=pixel.dtype)
    if pixel.samples_per_pixel > 1 and pixel.planar_configuration == 1:
        values = np.moveaxis(values, -1, 0)
    return np.ascontiguousarray(values).tobytes()


def container(array: np.ndarray, pixel: PixelDescription) -> np.ndarray:
    """Decoded values in the stored container type (bits allocated, signedness)."""
    dtype = pixel.dtype
    if array.dtype.itemsize == dtype.itemsize:
        return sign_extend(array.view(dtype), pixel)
    return sign_extend(array.astype(dtype), pixel)


def sign_extends(pixel: PixelDescription) -> bool:
    """Whether signed values need their sign copied above Bits Stored."""
    return bool(pixel.pixel_representation) and pixel.bits_stored < pixel.dtype.itemsize * 8


def sign_extend(array: np.ndarray, pixel: PixelDescription) -> np.ndarray:
    """Signed values whose bits above Bits Stored copy the sign bit (PS3.5 8.1.1)."""
    if not sign_extends(pixel) or array.dtype.kind != "i":
        return array
    shift = array.itemsize * 8 - pixel.bits_stored
    return (array << shift) >> shift  # arithmetic shift right copies the sign bit


def unsigned_view(array: np.ndarray) -> np.ndarray:
    """Signed values as their two's complement bit patterns (JPEG-LS codes unsigned samples).

    imagecodecs declares the container's precision (8 or 16 bits) in the JPEG-LS frame header,
    so the whole container word is coded, sign bits included: a decoder that reads the samples
    back as signed container words (as pydicom does) gets the values (PS3.5 A.4.3).
    """
    if array.dtype.kind == "i":
        return array.view(array.dtype.str.replace("i", "u"))
    return array


def encode(array: np.ndarray, syntax: str) -> bytes:
    """One frame losslessly compressed, unchecked (PS3.5 A.4): JPEG-LS codes the bit patterns
    of signed values (:func:`unsigned_view`); JPEG 2000 and HTJ2K code them as signed."""
    codec = ENCODERS[syntax]
    prepared = np.ascontiguousarray(unsigned_view(array) if codec == "jpegls" else array)
    try:
        if codec == "jpeg2k":
            data = imagecodecs.jpeg2k_encode(prepared, level=0, codecformat="j2k", reversible=True)
        elif codec == "htj2k":
            with _OPENJPH:
                data = imagecodecs.htj2k_encode(prepared, reversible=True)
        else:
            data = without_spiff(bytes(imagecodecs.jpegls_encode(prepared)))
    except Exception as exc:  # imagecodecs raises its own error types per codec
        raise CodecError(f"cannot encode a frame as {syntax}: {exc}") from exc
    return bytes(data)


def without_spiff(data: bytes) -> bytes:
    """A JPEG-LS codestream without the SPIFF header CharLS writes (ITU-T T.87 Annex F).

    The header is optional, and DICOM's JPEG-LS frames are plain interchange-format streams
    (PS3.5 A.4.3): SOI, then frame header. The SPIFF header (an APP8 marker segment) and its
    end-of-directory entry (an APP8 segment whose last two bytes are the image's SOI) are dropped.
    """
    header = b"\xff\xd8\xff\xe8"
    if not data.startswith(header) or data[6:12] != b"SPIFF\0":
        return data
    position = 4 + int.from_bytes(data[4:6], "big")
    while data[position : position + 2] == b"\xff\xe8":  # directory entries, then end of directory
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    if data[position - 2 : position] != b"\xff\xd8":
        return data  # not the layout described above: keep the stream as the codec wrote it
    return b"\xff\xd8" + data[position:]


def encode_frame(array: np.ndarray, syntax: str, pixel: PixelDescription) -> bytes:
    """One frame losslessly compressed and checked: decoded again, it must give ``array``
    back exactly (raises :class:`CodecError` otherwise, or when the codec refuses it)."""
    data = encode(array, syntax)
    decoded, _ = decode_frame(data, syntax, pixel)
    if decoded.shape != array.shape or not np.array_equal(decoded, array):
        raise CodecError(f"a frame does not survive {syntax} losslessly")
    return data


def encode_lossy_jpeg(array: np.ndarray, quality: int = 90) -> bytes:
    """An 8-bit RGB frame as JPEG baseline (1.2.840.10008.1.2.4.50): lossy, on request only."""
    try:
        return bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(array), level=quality))
    except Exception as exc:  # imagecodecs raises its own error types per codec
        raise CodecError(f"cannot encode a frame as JPEG baseline: {exc}") from exc


def _with_pydicom(data: bytes, syntax: str, pixel: PixelDescription) -> np.ndarray:
    # pydicom (0.3 s to import) only for the syntaxes imagecodecs does not decode here
    from pydicom.dataset import Dataset, FileMetaDataset  # noqa: PLC0415
    from pydicom.encaps import encapsulate  # noqa: PLC0415
    from pydicom.pixels.utils import pixel_array  # noqa: PLC0415
    from pydicom.uid import UID  # noqa: PLC0415

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.Rows, ds.Columns = pixel.rows, pixel.columns
    ds.SamplesPerPixel = pixel.samples_per_pixel
    ds.BitsAllocated, ds.BitsStored = pixel.bits_allocated, pixel.bits_stored
    ds.HighBit = pixel.bits_stored - 1
    ds.PixelRepresentation = pixel.pixel_representation
    ds.PhotometricInterpretation = pixel.photometric_interpretation
    if pixel.samples_per_pixel > 1:
        ds.PlanarConfiguration = pixel.planar_configuration
    ds.NumberOfFrames = 1
    if syntax in NATIVE:
        ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)  # stored little endian
        ds.PixelData = data
    else:
        ds.PixelData = encapsulate([data])
    try:
        array = pixel_array(ds, as_rgb=False)
    except Exception as exc:  # pydicom raises several error types for bad pixel data
        raise CodecError(f"cannot decode a {syntax} frame: {exc}") from exc
    return container(np.asarray(array), pixel)
