"""Transcoding an instance on export (``--transfer-syntax``): decode every frame and write the
instance again in a native transfer syntax (PS3.5 A.1, A.2).

Unlike a byte-exact export, this rewrites the file with pydicom: the File Meta Information
gets the new Transfer Syntax UID, Pixel Data holds the decoded frames, and JPEG colour frames
become RGB. Lossy originals stay lossy (Lossy Image Compression is kept). The instance is held
in memory while it is rewritten. Compressed targets arrive with recompression.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.encaps import generate_frames
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomweb_archive.dicom.codecs import PixelDescription, decode_frame
from dicomweb_archive.errors import ExportError, UsageError

TARGETS = {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}


def check_target(syntax: str) -> str:
    if syntax not in TARGETS:
        raise UsageError(
            f"--transfer-syntax {syntax}: export can transcode to Explicit VR Little Endian "
            "(1.2.840.10008.1.2.1) or Implicit VR Little Endian (1.2.840.10008.1.2); "
            "compressed targets arrive with recompression"
        )
    return syntax


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
            arrays = [np.asarray(ds.pixel_array)]
        little = arrays[0].dtype.newbyteorder("<")
        data = np.concatenate([a.reshape(-1) for a in arrays]).astype(little)
        ds.PixelData = data.tobytes() + (b"\0" if data.nbytes % 2 else b"")
        ds["PixelData"].VR = "OB" if pixel.bits_allocated <= 8 else "OW"
        ds["PixelData"].is_undefined_length = False
        ds.PhotometricInterpretation = photometric
        if pixel.samples_per_pixel > 1:
            ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    out = io.BytesIO()
    try:
        for _element in ds.iterall():
            pass  # decode every raw element, so that a big endian original can be re-encoded
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
    except (ValueError, TypeError) as exc:
        raise ExportError(f"cannot write the transcoded instance: {exc}") from exc
    return out.getvalue()
