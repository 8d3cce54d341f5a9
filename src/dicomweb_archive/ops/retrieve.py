"""An instance as WADO-RS retrieves it (PS3.18 10.4.1.1.1): a PS3.10 file, in the transfer
syntax asked for.

- As stored (``transfer-syntax=*``): the file as received, byte for byte, except that a data
  set received without File Meta Information gets it, and a file without preamble gets one
  (PS3.10 7.1: a file that pydicom and DCMTK read without ``force``); an original in Implicit
  VR Little Endian or Explicit VR Big Endian, which PS3.18 8.7.3 does not allow in web
  services, comes in Explicit VR Little Endian. An instance whose compressed original was
  recompressed at ingest comes in its stored syntax (``ops/reconstruct.py``).
- In another transfer syntax: transcoded losslessly, as ``export --transfer-syntax`` does
  (``ops/transcode.py``, with every compressed frame checked against its pixels); the instance
  is then held in memory while it is rewritten. An incomplete instance (its received file ends
  inside Pixel Data) is never transcoded: it is sent as received, as export gives it.

The store keeps the original as received; only what is given out is made conformant.
"""

from __future__ import annotations

from collections.abc import Iterator

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import ExportError
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.syntax import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_2000_LOSSLESS,
    JPEG_LS_LOSSLESS,
    RLE_LOSSLESS,
)
from dicomweb_archive.ops.reconstruct import generate_instance, generate_p10
from dicomweb_archive.store.instance import InstanceKey, read_info

#: ``transfer-syntax=*``: whatever the instance is stored in (PS3.18 8.7.3.5.1)
AS_STORED = "*"
#: Transfer syntaxes PS3.18 8.7.3 does not allow in web services
NOT_FOR_THE_WEB = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN})
#: What any instance can be transcoded to (the targets of ``ops/transcode.py`` the web allows)
TRANSCODE_TARGETS = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    JPEG_LS_LOSSLESS,
    JPEG_2000_LOSSLESS,
    HTJ2K_LOSSLESS,
    RLE_LOSSLESS,
)
PREAMBLE_SIZE = 132  # 128 bytes and "DICM"
SOP_CLASS_UID_KEY = "00080016"  # (0008,0016) SOPClassUID, in the metadata as received
LOSSY_IMAGE_COMPRESSION_KEY = "00282110"  # (0028,2110) LossyImageCompression
#: Lossy transfer syntaxes (PS3.5 A.4, PS3.6 Table A-1): JPEG baseline and extended,
#: JPEG-LS near-lossless, JPEG 2000, HTJ2K, MPEG and HEVC video, JPEG XL
LOSSY_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.203",
        *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),
        "1.2.840.10008.1.2.4.111",
        "1.2.840.10008.1.2.4.112",
    }
)


def stored_syntax(info: InfoRecord) -> str:
    """The transfer syntax an instance is sent in as stored: its original's (Explicit VR Little
    Endian for one PS3.18 8.7.3 does not allow, unless the instance is incomplete), or for an
    instance recompressed at ingest its frames' one lossless syntax, else Explicit VR Little
    Endian (``ops/reconstruct.py``)."""
    if info.rebuilds_original():
        original = info.original.transfer_syntax_uid
        if original in NOT_FOR_THE_WEB and not is_incomplete(info):
            return EXPLICIT_VR_LITTLE_ENDIAN
        return original
    from dicomweb_archive.dicom.codecs import ENCODERS  # noqa: PLC0415 - numpy, imagecodecs

    syntaxes = {info.frame_syntax(n) for n in range(1, len(info.frames) + 1)}
    only = syntaxes.pop() if len(syntaxes) == 1 else None
    return only if only in ENCODERS else EXPLICIT_VR_LITTLE_ENDIAN


def is_lossy(info: InfoRecord) -> bool:
    """Whether the instance's pixel data were received lossy compressed: Lossy Image
    Compression (0028,2110) is 01, or the original's transfer syntax is a lossy one. PS3.18
    8.7.3.4 lets those be sent as stored where Explicit VR Little Endian is the default."""
    flag = ((info.metadata or {}).get(LOSSY_IMAGE_COMPRESSION_KEY, {}).get("Value") or [""])[0]
    return flag == "01" or info.original.transfer_syntax_uid in LOSSY_SYNTAXES


def is_incomplete(info: InfoRecord) -> bool:
    """Whether the received file ends inside Pixel Data (``model/incomplete.py``): such an
    instance is sent as received only, never transcoded (as export does)."""
    return incomplete_frame(info.skeleton) is not None


def generate_retrieved(
    archive: Archive,
    key: InstanceKey,
    syntax: str,
    *,
    info: InfoRecord | None = None,
    check_parts: bool = False,
) -> Iterator[bytes | memoryview]:
    """The PS3.10 bytes of an instance in ``syntax`` (a UID, or :data:`AS_STORED`: see
    :func:`stored_syntax`); streamed (memory bounded by a frame) when no transcoding is
    needed. ``check_parts`` checks every frame and bulk-data object against its SHA-256 on the
    way (``ops/reconstruct.py``).

    Raises ExportError (or CodecError) when the instance cannot be transcoded to ``syntax``.
    """
    info = info if info is not None else read_info(archive.storage, archive.keys, key)
    if syntax == AS_STORED:
        syntax = stored_syntax(info)
    if is_incomplete(info) and syntax != stored_syntax(info):
        raise ExportError(
            "the received file ends inside Pixel Data: it is not transcoded (ask for "
            "transfer-syntax=* to get it as received)"
        )
    if not info.rebuilds_original():
        return generate_instance(archive, key, info=info, syntax=syntax, check_parts=check_parts)
    chunks = _with_file_meta(generate_p10(archive, key, info=info, check_parts=check_parts), info)
    if syntax == info.original.transfer_syntax_uid:
        return chunks
    from dicomweb_archive.ops.transcode import transcode  # noqa: PLC0415 - pydicom, numpy

    return iter([transcode(b"".join(chunks), syntax)])


def _with_file_meta(
    chunks: Iterator[bytes | memoryview], info: InfoRecord
) -> Iterator[bytes | memoryview]:
    """``chunks`` of a file as received, with the preamble and File Meta Information it lacks
    (PS3.10 7.1); a received preamble is kept."""
    original = info.original
    if original.has_file_meta and original.has_preamble:
        return chunks
    return _prefixed(chunks, info)


def _prefixed(
    chunks: Iterator[bytes | memoryview], info: InfoRecord
) -> Iterator[bytes | memoryview]:
    from dicomweb_archive.dicom.file_meta import PREAMBLE, file_meta_bytes  # noqa: PLC0415

    original = info.original
    skip = PREAMBLE_SIZE if original.has_preamble else 0
    received = bytearray()  # the preamble and "DICM" of a data set received without meta
    started = False
    for data in chunks:
        chunk = data
        if len(received) < skip:
            take = skip - len(received)
            received += chunk[:take]
            chunk = chunk[take:]
            if len(received) < skip:
                continue
        if not started:
            started = True
            yield bytes(received) or PREAMBLE
            if not original.has_file_meta:
                sop_class = (
                    (info.metadata or {}).get(SOP_CLASS_UID_KEY, {}).get("Value") or [None]
                )[0]
                yield file_meta_bytes(
                    sop_class_uid=sop_class,
                    sop_instance_uid=info.sop_instance_uid,
                    transfer_syntax_uid=original.transfer_syntax_uid,
                )
        if chunk:
            yield chunk
