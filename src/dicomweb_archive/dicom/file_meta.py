"""File Meta Information (PS3.10 7.1) for an instance received without it.

A PS3.10 file is a 128-byte preamble, ``DICM`` and the group 0002 elements, in Explicit VR
Little Endian with their File Meta Information Group Length (0002,0000). What the store keeps
of a data set received bare stays as received; this group is made only where a conformant file
is given out (``ops/retrieve.py``).
"""

from __future__ import annotations

import struct

from pydicom import __version__ as pydicom_version
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

PREAMBLE = b"\0" * 128 + b"DICM"


def file_meta_bytes(
    *, sop_class_uid: str | None, sop_instance_uid: str, transfer_syntax_uid: str
) -> bytes:
    """The encoded group 0002 (from its group length on, without preamble): File Meta
    Information Version, Media Storage SOP Class and Instance UIDs, Transfer Syntax UID and
    pydicom's Implementation Class UID and Version Name (PS3.10 Table 7.1-1). A data set
    without SOP Class UID gets an empty Media Storage SOP Class UID (pydicom reads it)."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class_uid or "")
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom_version}"[:16]
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=False)  # a bare data set may lack its class
    elements = buffer.getvalue()
    # (0002,0000) File Meta Information Group Length, UL: the bytes of the elements after it
    return b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", len(elements)) + elements
