"""DICOMDIR files given as input: recognising them, and the files they reference.

A DICOMDIR (Media Storage Directory, PS3.10 8.6; its records PS3.3 F.3) is an index of the
files of a medium, not an instance. Each directory record that references a file names it by
its Referenced File ID (0004,1500): path components relative to the folder holding the
DICOMDIR (PS3.10 8.2, 8.5). With ``--follow-dicomdir`` they are ingested as if they had been
given one by one; a reference that would leave that folder is refused.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from dicomweb_archive.errors import DicomdirError

#: Media Storage Directory Storage (PS3.4 Annex B; the SOP Class of a DICOMDIR)
MEDIA_STORAGE_DIRECTORY = b"1.2.840.10008.1.3.10"
#: DirectoryRecordSequence (0004,1220), as a DICOM JSON key
DIRECTORY_RECORD_SEQUENCE_KEY = "00041220"
#: Bytes of a file :func:`is_dicomdir` needs
SNIFF = 1024
_SOP_CLASS_HEADER = b"\x02\x00\x02\x00UI"  # (0002,0002) UI, explicit VR little endian


def is_dicomdir(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first kilobyte will do) is a DICOMDIR: its
    File Meta Information (explicit VR little endian, PS3.10 7.1) names Media Storage
    Directory Storage as Media Storage SOP Class UID (0002,0002)."""
    at = head.find(_SOP_CLASS_HEADER)
    if at < 0 or at + 8 > len(head):
        return False
    (length,) = struct.unpack_from("<H", head, at + 6)
    value = head[at + 8 : at + 8 + length]
    return value.rstrip(b"\0 ") == MEDIA_STORAGE_DIRECTORY


def read_referenced_file_ids(stream: BinaryIO, *, name: str) -> list[list[str]]:
    """The Referenced File ID (0004,1500) of every directory record that has one, in record
    order: path components relative to the DICOMDIR's folder (PS3.10 8.5).

    Raises:
        DicomdirError: the DICOMDIR's records cannot be read.
    """
    import pydicom  # noqa: PLC0415 - pydicom only when a DICOMDIR is followed
    from pydicom.errors import InvalidDicomError  # noqa: PLC0415

    try:
        ds = pydicom.dcmread(stream, force=True)
        records = list(ds.get("DirectoryRecordSequence") or [])
        ids = [record.get("ReferencedFileID") for record in records]
    except (InvalidDicomError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DicomdirError(f"{name}: the DICOMDIR's records cannot be read") from exc
    return [
        [file_id] if isinstance(file_id, str) else [str(p) for p in file_id]
        for file_id in ids
        if file_id
    ]


def unsafe_file_id(parts: list[str]) -> bool:
    """Whether a Referenced File ID has a component that is empty, ``.`` or ``..``, or holds
    a path separator or a null: it could name a file outside the DICOMDIR's folder."""
    return any(not p or p in (".", "..") or "/" in p or "\\" in p or "\0" in p for p in parts)
