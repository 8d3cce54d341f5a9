"""C-STORE (PS3.4 B.2): each data set received goes through the ingest of files.

pynetdicom writes the data set, as the association delivers it, to a temporary file
(``_config.STORE_RECV_CHUNKED_DATASET``: nothing is held in memory). The P10 file the store
keeps is that data set byte for byte behind a preamble and the File Meta Information a storage
SCP writes (PS3.10 7.1): Media Storage SOP Class and Instance UIDs from the request, the
presentation context's Transfer Syntax UID, pynetdicom's Implementation Class UID and Version
Name, and the sender's AE title as Source Application Entity Title (0002,0016). It is ingested
by :func:`dicomweb_archive.ops.ingest.write_streams` with ``mkdicomweb``'s options and the
store's recorded recompression; the group and study stages run when the association ends
(``server.py``), as ``mkdicomweb`` runs them after its batch. The response is sent once the
instance is committed to the store and the storage's ``barrier`` has made what was put durable.

Statuses (PS3.4 Table B.2-1; the reason in Error Comment (0000,0902)):

- 0x0000: stored, or stored already from the same bytes;
- 0xA700 (Refused: Out of Resources): the store is full, or its index does not answer (send
  it again later);
- 0xC001 (Cannot understand): the data set cannot be read (not DICOM, cut short, malformed);
- 0xC002 (Cannot understand): another instance with this SOP Instance UID is stored (a network
  peer never replaces one; ``mkdicomweb --replace`` does);
- 0xC000 (Cannot understand): any other failure to store it.
"""

from __future__ import annotations

import io
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pynetdicom.dsutils import split_dataset

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import (
    DuplicateInstanceError,
    IndexUnavailableError,
    InputError,
    StoreFullError,
)
from dicomweb_archive.ops.ingest import write_streams
from dicomweb_archive.ops.ingest_types import FileResult, PipelineOptions

LOG = logging.getLogger("dicomweb_archive.dimse")
PREAMBLE = b"\0" * 128 + b"DICM"
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
UNREADABLE = 0xC001
DUPLICATE = 0xC002
CANNOT_STORE = 0xC000
#: the Error Comment of a store or query the index cannot take now (no server address)
INDEX_UNAVAILABLE = "the index does not answer; try again later"
#: Error Comment (0000,0902) is LO: 64 characters at most
COMMENT_LENGTH = 64


class _Chained(io.RawIOBase):
    """``prefix`` then the rest of ``file``, as one readable stream."""

    def __init__(self, prefix: bytes, file: io.BufferedReader) -> None:
        self._prefix = memoryview(prefix)
        self._file = file

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            size = min(len(view), len(self._prefix))
            view[:size] = self._prefix[:size]
            self._prefix = self._prefix[size:]
            return size
        return self._file.readinto(view)


def file_meta_prefix(event: Any) -> bytes:
    """The preamble and File Meta Information of a received data set (the module docstring)."""
    meta = event.file_meta
    meta.SourceApplicationEntityTitle = event.assoc.requestor.ae_title
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta)
    return PREAMBLE + buffer.getvalue()


def store_received(
    archive: Archive, event: Any, *, options: PipelineOptions
) -> tuple[int, FileResult]:
    """Ingest the data set of a C-STORE request (``event``: pynetdicom's EVT_C_STORE event)
    without the later stages; returns the status to answer and what ingest said."""
    calling = event.assoc.requestor.ae_title
    sop = event.request.AffectedSOPInstanceUID
    name = f"C-STORE from {calling} (SOPInstanceUID {sop})"
    path = Path(event.dataset_path)
    _, offset = split_dataset(path)
    stage_1 = replace(options, group=False, study=False)
    with path.open("rb") as file:  # pynetdicom's temporary file, not the store's
        file.seek(offset)
        stream = io.BufferedReader(_Chained(file_meta_prefix(event), file), 1 << 20)
        result = write_streams(archive, [(name, stream)], options=stage_1).results[0]
    archive.storage.barrier()  # what was put is durable before the response says so
    return status_of(result), result


def status_of(result: FileResult) -> int:
    """The C-STORE status of an ingest result (the module docstring)."""
    if result.status != "failed":
        return SUCCESS
    if isinstance(result.exception, StoreFullError | IndexUnavailableError):
        return OUT_OF_RESOURCES
    if isinstance(result.exception, DuplicateInstanceError):
        return DUPLICATE
    if isinstance(result.exception, InputError):
        return UNREADABLE
    return CANNOT_STORE


def error_comment(result: FileResult) -> str:
    """The reason of a failure, short enough for Error Comment (0000,0902), without the
    file name ingest puts first."""
    if isinstance(result.exception, DuplicateInstanceError):
        return "another instance with this SOP Instance UID is stored"
    if isinstance(result.exception, IndexUnavailableError):
        return INDEX_UNAVAILABLE
    reason = (result.error or "not stored").removeprefix(f"{result.path}: ")
    return reason[: COMMENT_LENGTH - 3] + "..." if len(reason) > COMMENT_LENGTH else reason
