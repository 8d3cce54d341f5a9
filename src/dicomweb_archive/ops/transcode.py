"""Transcoding an instance on export (``--transfer-syntax``): decode every frame and write the
instance again in another transfer syntax.

Targets: Explicit and Implicit VR Little Endian (PS3.5 A.1, A.2), and the lossless
compressed JPEG-LS (1.2.840.10008.1.2.4.80), JPEG 2000 (1.2.840.10008.1.2.4.90), HTJ2K
(1.2.840.10008.1.2.4.201) with imagecodecs, and RLE (1.2.840.10008.1.2.5) with pydicom. Every
compressed frame is decoded again and compared with the pixels it was made from; a difference
fails the instance. Unlike a byte-exact export, this rewrites the file with pydicom: the File
Meta Information gets the new Transfer Syntax UID, Pixel Data the new frames, and JPEG colour
frames become RGB. Lossy originals stay lossy (Lossy Image Compression is kept). The instance is
held in memory while it is rewritten.
"""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pydicom
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from dicomweb_archive.dicom.codecs import PixelDescription, decode_frame
from dicomweb_archive.errors import ExportError, UsageError

NATIVE = {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}
#: lossless compressed targets -> imagecodecs codec
ENCODERS = {
    "1.2.840.10008.1.2.4.80": "jpegls",
    "1.2.840.10008.1.2.4.90": "jpeg2k",
    "1.2.840.10008.1.2.4.201": "htj2k",
}
TARGETS = NATIVE | set(ENCODERS) | {str(RLELossless)}


def check_target(syntax: str) -> str:
    if syntax not in TARGETS:
        raise UsageError(
            f"--transfer-syntax {syntax}: export can transcode to " + ", ".join(sorted(TARGETS))
        )
    return syntax


def encode_frame(array: np.ndarray, syntax: str, bits_stored: int) -> bytes:
    """One frame losslessly compressed, checked by decoding it again (PS3.5 A.4)."""
    prepared = array
    if array.dtype.kind == "i":  # signed: the stored bit pattern, as the codecs want it
        unsigned = array.view(array.dtype.str.replace("i", "u"))
        prepared = (
            unsigned & ((1 << bits_stored) - 1) if bits_stored < array.itemsize * 8 else unsigned
        )
    prepared = np.ascontiguousarray(prepared)
    codec = ENCODERS[syntax]
    try:
        if codec == "jpeg2k":
            data = imagecodecs.jpeg2k_encode(prepared, level=0, codecformat="j2k", reversible=True)
        else:
            data = getattr(imagecodecs, f"{codec}_encode")(prepared)
        decoded = np.asarray(getattr(imagecodecs, f"{codec}_decode")(data))
    except Exception as exc:  # imagecodecs raises its own error types per codec
        raise ExportError(f"cannot encode a frame as {syntax}: {exc}") from exc
    if decoded.shape != prepared.shape or not np.array_equal(decoded, prepared):
        raise ExportError(f"a frame does not survive {syntax} losslessly")
    return bytes(data)


def transcode(p10: bytes, syntax: str) -> bytes:
    """The P10 file ``p10`` rewritten in the native transfer syntax ``syntax``."""
    ds = pydicom.dcmread(io.BytesIO(p10), force=True)
    source = str(ds.file_meta.TransferSyntaxUID)
    if source == syntax:
        return p10  # already there: keep the bytes as received
    if "PixelData" in ds and source != syntax:
        pixel = PixelDescription(
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
            bits_allocated=int(ds.BitsAllocated),
            bits_stored=int(ds.get("BitsStored", ds.BitsAllocated)),
            pixel_representation=int(ds.get("PixelRepresentation", 0)),
            photometric_interpretation=str(ds.PhotometricInterpretation),
            planar_configuration=int(ds.get("PlanarConfiguration", 0)),
        )
        count = int(ds.get("NumberOfFrames") or 1)
        photometric = pixel.photometric_interpretation
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            arrays = []
            for frame in generate_frames(ds.PixelData, number_of_frames=count):
                array, photometric = decode_frame(bytes(frame), source, pixel)
                arrays.append(array)
        else:  # native, possibly big endian: pydicom reads the values
            everything = np.asarray(ds.pixel_array)
            arrays = list(
                everything.reshape(
                    count, *everything.shape[-3 if pixel.samples_per_pixel > 1 else -2 :]
                )
            )
        little = arrays[0].dtype.newbyteorder("<")
        ds.PhotometricInterpretation = photometric
        if pixel.samples_per_pixel > 1:
            ds.PlanarConfiguration = 0
        if syntax in ENCODERS:
            frames = [encode_frame(a.astype(little), syntax, pixel.bits_stored) for a in arrays]
            ds.PixelData = encapsulate(frames, has_bot=True)
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
        else:
            data = np.concatenate([a.reshape(-1) for a in arrays]).astype(little)
            ds.PixelData = data.tobytes() + (b"\0" if data.nbytes % 2 else b"")
            ds["PixelData"].VR = "OB" if pixel.bits_allocated <= 8 else "OW"
            ds["PixelData"].is_undefined_length = False
            if syntax == RLELossless:
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                try:
                    ds.compress(RLELossless, encoding_plugin="pydicom")
                except (ValueError, RuntimeError) as exc:
                    raise ExportError(f"cannot encode as RLE Lossless: {exc}") from exc
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    out = io.BytesIO()
    try:
        for _element in ds.iterall():
            pass  # decode every raw element, so that a big endian original can be re-encoded
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
    except (ValueError, TypeError) as exc:
        raise ExportError(f"cannot write the transcoded instance: {exc}") from exc
    return out.getvalue()
