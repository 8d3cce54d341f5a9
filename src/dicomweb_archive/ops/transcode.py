"""Transcoding an instance on export (``--transfer-syntax``): decode every frame and write the
instance again in another transfer syntax.

Targets: Explicit and Implicit VR Little Endian (PS3.5 A.1, A.2), and the lossless
compressed JPEG-LS (1.2.840.10008.1.2.4.80), JPEG 2000 (1.2.840.10008.1.2.4.90), HTJ2K
(1.2.840.10008.1.2.4.201) with imagecodecs, and RLE (1.2.840.10008.1.2.5) with pydicom. Every
compressed frame is decoded again and compared with the pixels it was made from; a difference
fails the instance. Unlike a byte-exact export, this rewrites the file: the File Meta
Information gets the new Transfer Syntax UID, Pixel Data the new frames, and JPEG colour frames
become RGB; every other element of a little endian original keeps its value's bytes
(``dicom/rewrite.py``), a big endian original's are read and written again by pydicom. Lossy
originals stay lossy (Lossy Image Compression is kept). The instance is held in memory while it
is rewritten.

The same function writes instances whose frames were recompressed at ingest from a compressed
original (the original codestreams are not kept): their stored form carries each stored frame
in its own transfer syntax, and every decoded frame is checked against the SHA-256 of the
source pixels recorded at ingest.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.utils import pack_bits
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from dicomweb_archive.dicom.codecs import (
    ENCODERS,
    decode_frame,
    encode_frame,
    native_bytes,
)
from dicomweb_archive.dicom.rewrite import decode_all, write_p10
from dicomweb_archive.errors import CodecError, ExportError, UsageError
from dicomweb_archive.model.pixel import PixelDescription

NATIVE = {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}
#: Extended Offset Table (7FE0,0001) and Extended Offset Table Lengths (7FE0,0002)
EXTENDED_OFFSET_TABLE_TAGS = (0x7FE00001, 0x7FE00002)
TARGETS = NATIVE | set(ENCODERS) | {str(RLELossless)}


def check_target(syntax: str) -> str:
    if syntax not in TARGETS:
        raise UsageError(
            f"--transfer-syntax {syntax}: export can transcode to " + ", ".join(sorted(TARGETS))
        )
    return syntax


def _pixel(ds: pydicom.Dataset) -> PixelDescription:
    return PixelDescription(
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
        bits_allocated=int(ds.BitsAllocated),
        bits_stored=int(ds.get("BitsStored", ds.BitsAllocated)),
        pixel_representation=int(ds.get("PixelRepresentation", 0)),
        photometric_interpretation=str(ds.PhotometricInterpretation),
        planar_configuration=int(ds.get("PlanarConfiguration", 0)),
    )


def transcode(
    p10: bytes,
    syntax: str,
    *,
    frame_syntaxes: Sequence[str] | None = None,
    pixel_sha256: Sequence[str | None] | None = None,
) -> bytes:
    """The P10 file ``p10`` rewritten in the transfer syntax ``syntax``.

    ``frame_syntaxes`` gives the transfer syntax of each encapsulated frame when the file holds
    stored frames rather than frames in its own transfer syntax; ``pixel_sha256`` the SHA-256
    each decoded frame's native little endian bytes must have (None: not checked).
    """
    ds = pydicom.dcmread(io.BytesIO(p10), force=True)
    source = str(ds.file_meta.TransferSyntaxUID)
    little_endian = ds.original_encoding[1] is not False
    if source == syntax and frame_syntaxes is None:
        return p10  # already there: keep the bytes as received
    if "PixelData" in ds:
        try:
            _pixels(ds, source, syntax, frame_syntaxes, pixel_sha256)
        except CodecError as exc:
            raise ExportError(str(exc)) from exc
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    try:
        if little_endian:  # every element the transcoding did not set keeps its bytes
            implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
            return write_p10(ds, implicit=implicit)
        decode_all(ds)  # a big endian original: pydicom re-encodes every value
        out = io.BytesIO()
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
    except (ValueError, TypeError) as exc:
        raise ExportError(f"cannot write the transcoded instance: {exc}") from exc
    return out.getvalue()


def _pixels(
    ds: pydicom.Dataset,
    source: str,
    syntax: str,
    frame_syntaxes: Sequence[str] | None,
    pixel_sha256: Sequence[str | None] | None,
) -> None:
    """Replace Pixel Data with the frames in ``syntax`` (and set what describes them)."""
    pixel = _pixel(ds)
    count = int(ds.get("NumberOfFrames") or 1)
    photometric = pixel.photometric_interpretation
    kept: list[bytes | None] = []
    arrays: list[np.ndarray | None] = []
    if frame_syntaxes is not None or ds.file_meta.TransferSyntaxUID.is_compressed:
        syntaxes = list(frame_syntaxes or [source] * count)
        for number, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=count)):
            frame_syntax = syntaxes[number]
            expected = pixel_sha256[number] if pixel_sha256 else None
            if frame_syntax == syntax and syntax in ENCODERS and expected is None:
                kept.append(bytes(frame))  # already in the target syntax: keep the codestream
                arrays.append(None)
                continue
            array, photometric = decode_frame(bytes(frame), frame_syntax, pixel)
            if expected is not None:
                if hashlib.sha256(native_bytes(array, pixel)).hexdigest() != expected:
                    raise CodecError(f"frame {number + 1} does not decode to the source pixels")
                if frame_syntax == syntax and syntax in ENCODERS:
                    kept.append(bytes(frame))
                    arrays.append(None)
                    continue
            kept.append(None)
            arrays.append(array)
    else:  # native, possibly big endian: pydicom reads the values
        everything = np.asarray(ds.pixel_array)
        shape = everything.shape[-3 if pixel.samples_per_pixel > 1 else -2 :]
        arrays = list(everything.reshape(count, *shape))
        kept = [None] * count
    ds.PhotometricInterpretation = photometric
    for tag in EXTENDED_OFFSET_TABLE_TAGS:  # they describe the old encapsulation (PS3.5 A.4)
        if tag in ds:
            del ds[tag]
    if pixel.samples_per_pixel > 1:
        ds.PlanarConfiguration = 0
    if pixel.bits_allocated == 1:
        _write_bits(ds, arrays, syntax)
        return
    if syntax in ENCODERS:
        frames = [
            data if data is not None else encode_frame(_little(array), syntax, pixel)
            for data, array in zip(kept, arrays, strict=True)
        ]
        ds.PixelData = encapsulate(frames, has_bot=True)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        return
    data = np.concatenate([_little(a).reshape(-1) for a in arrays if a is not None])
    ds.PixelData = data.tobytes() + (b"\0" if data.nbytes % 2 else b"")
    ds["PixelData"].VR = "OB" if pixel.bits_allocated <= 8 else "OW"
    ds["PixelData"].is_undefined_length = False
    if syntax == RLELossless:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        try:
            ds.compress(RLELossless, encoding_plugin="pydicom")
        except (ValueError, RuntimeError) as exc:
            raise ExportError(f"cannot encode as RLE Lossless: {exc}") from exc


def _write_bits(ds: pydicom.Dataset, arrays: list[np.ndarray | None], syntax: str) -> None:
    """Pixel Data of Bits Allocated 1, packed eight pixels to a byte, the frames one after the
    other without padding to a byte boundary between them (PS3.5 8.1.1, 8.2); only the native
    transfer syntaxes hold such data (no codec we write takes single bits)."""
    if syntax not in NATIVE:
        raise CodecError(f"pixel data of Bits Allocated 1 cannot be written as {syntax}")
    bits = np.concatenate([a.reshape(-1) for a in arrays if a is not None])
    ds.PixelData = pack_bits(bits, pad=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = False


def _little(array: np.ndarray | None) -> np.ndarray:
    assert array is not None
    return array.astype(array.dtype.newbyteorder("<"))
