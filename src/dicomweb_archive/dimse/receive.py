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
- 0xC003 (Cannot understand): the request's Affected SOP Instance UID is not the data set's SOP
  Instance UID (0008,0018): the sender is wrong, and the file it would make, whose Media
  Storage SOP Instance UID (0002,0003) is the request's, is not a valid P10 file (PS3.10 7.1);
- 0xA900 (Error: Data Set does not match SOP Class): the request's Affected SOP Class UID is
  not the data set's SOP Class UID (0008,0016) (PS3.4 B.2.3, PS3.7 9.1.1.1);
- 0xC000 (Cannot understand): any other failure to store it.

The two UIDs are compared before anything is stored, from the data set's first elements; a data
set without them is left to ingest (0xC001).
"""

from __future__ import annotations

import io
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_partial
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
UID_MISMATCH = 0xC003
CLASS_MISMATCH = 0xA900
CANNOT_STORE = 0xC000
SOP_CLASS_UID, SOP_INSTANCE_UID = 0x00080016, 0x00080018
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
    mismatch = request_mismatch(event, path)
    if mismatch is not None:
        code, reason = mismatch
        error = MismatchError(reason)
        return code, FileResult(Path(name), "failed", error=f"{name}: {reason}", exception=error)
    _, offset = split_dataset(path)
    stage_1 = replace(options, group=False, study=False)
    with path.open("rb") as file:  # pynetdicom's temporary file, not the store's
        file.seek(offset)
        stream = io.BufferedReader(_Chained(file_meta_prefix(event), file), 1 << 20)
        result = write_streams(archive, [(name, stream)], options=stage_1).results[0]
    archive.storage.barrier()  # what was put is durable before the response says so
    return status_of(result), result


class MismatchError(InputError):
    """The C-STORE request's Affected SOP Class or Instance UID is not the data set's."""


def request_mismatch(event: Any, path: Path) -> tuple[int, str] | None:
    """The status and reason to refuse a C-STORE request whose Affected SOP Class or Instance
    UID is not the data set's (the module docstring), or None."""
    try:
        with path.open("rb") as file:
            ds = read_partial(file, stop_when=lambda tag, _vr, _length: tag > SOP_INSTANCE_UID)
        sop_class, sop = (_uid(ds.get(tag)) for tag in (SOP_CLASS_UID, SOP_INSTANCE_UID))
    except Exception:  # unreadable: ingest says why
        return None
    request = event.request
    if sop and sop != _uid(request.AffectedSOPInstanceUID):
        return UID_MISMATCH, "Affected SOP Instance UID is not the data set's"
    if sop_class and sop_class != _uid(request.AffectedSOPClassUID):
        return CLASS_MISMATCH, "Affected SOP Class UID is not the data set's"
    return None


def _uid(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "value"):  # a data element
        value = value.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value or "").strip(" \0")


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
