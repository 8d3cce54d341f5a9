"""Decoding stored frames to pixels (PS3.5 8 and Annex A), for transcoding on export.

JPEG (baseline, extended, lossless), JPEG-LS, JPEG 2000 and HTJ2K codestreams are decoded with
imagecodecs; native and RLE frames with pydicom's own decoders. A decoded frame is an array of
shape (rows, columns[, samples]) in the stored bit depth; JPEG colour frames are decoded to RGB
(the codec applies the YCbCr transform), which the caller records as the new Photometric
Interpretation.
"""

from __future__ import annotations

from dataclasses import dataclass

import imagecodecs
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomweb_archive.errors import ExportError

JPEG_FAMILY = {
    "1.2.840.10008.1.2.4.50": "jpeg8",
    "1.2.840.10008.1.2.4.51": "jpeg8",
    "1.2.840.10008.1.2.4.57": "ljpeg",
    "1.2.840.10008.1.2.4.70": "ljpeg",
    "1.2.840.10008.1.2.4.80": "jpegls",
    "1.2.840.10008.1.2.4.81": "jpegls",
    "1.2.840.10008.1.2.4.90": "jpeg2k",
    "1.2.840.10008.1.2.4.91": "jpeg2k",
    "1.2.840.10008.1.2.4.201": "jpeg2k",
    "1.2.840.10008.1.2.4.202": "jpeg2k",
    "1.2.840.10008.1.2.4.203": "jpeg2k",
}
PYDICOM_DECODED = {"1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1"}


@dataclass(frozen=True, slots=True)
class PixelDescription:
    """The Image Pixel Module attributes a decoder needs (PS3.3 C.7.6.3)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int = 0


def decode_frame(data: bytes, syntax: str, pixel: PixelDescription) -> tuple[np.ndarray, str]:
    """One frame's pixels and the Photometric Interpretation they are now in."""
    codec = JPEG_FAMILY.get(syntax)
    if codec is not None:
        decoder = getattr(imagecodecs, f"{codec}_decode")
        try:
            array = np.asarray(decoder(data))
        except Exception as exc:  # imagecodecs raises its own error types per codec
            raise ExportError(f"cannot decode a {syntax} frame: {exc}") from exc
        photometric = pixel.photometric_interpretation
        if codec == "jpeg8" and pixel.samples_per_pixel == 3:
            photometric = "RGB"
        return _container(array, pixel), photometric
    if syntax in PYDICOM_DECODED:
        return _with_pydicom(data, syntax, pixel), pixel.photometric_interpretation
    raise ExportError(f"frames in transfer syntax {syntax} cannot be decoded here")


def _container(array: np.ndarray, pixel: PixelDescription) -> np.ndarray:
    """The decoded values in the stored container type (bits allocated, signedness)."""
    kind = "i" if pixel.pixel_representation else "u"
    dtype = np.dtype(f"<{kind}{max(1, pixel.bits_allocated // 8)}")
    if array.dtype.itemsize == dtype.itemsize:
        return array.view(dtype)
    return array.astype(dtype)


def _with_pydicom(data: bytes, syntax: str, pixel: PixelDescription) -> np.ndarray:
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
    ds.PixelData = data if syntax == ExplicitVRLittleEndian else encapsulate([data])
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises several error types for bad pixel data
        raise ExportError(f"cannot decode a {syntax} frame: {exc}") from exc
