"""DICOMDIR media written by export: directory records made from an instance's head.

A File-set (PS3.10 8) is laid out by pydicom's ``FileSet``, but the records of the DICOMDIR
(PS3.10 8.6, PS3.3 F.3) are made from a small data set read from the head of the exported
file, never from pydicom's reading of the whole file: the file on the media is the exported
file itself, byte for byte (bytes after its last data element included, which pydicom would
read as an element and write back changed).

The four-level records (PATIENT, STUDY, SERIES, then IMAGE or another leaf; PS3.3 F.5) have
Type 1 keys that a stored instance may lack or leave empty. The record, never the file, then
holds a placeholder (:data:`PLACEHOLDERS`, ``docs/spec/export-verify.md``).
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet

from dicomweb_archive.errors import ExportError

#: Values too long for a directory record are not read from the head (a record's keys are short)
RECORD_VALUE_LIMIT = 64 * 1024

#: Type 1 keys of the PATIENT, STUDY and SERIES records (PS3.3 F.5.1, F.5.2, F.5.3) given a
#: placeholder in the record when the instance has none or an empty one (Patient ID gets its
#: own, see :func:`patient_id_placeholder`; Instance Number, the IMAGE record's key, F.5.18,
#: is the instance's position in its series on the media)
PLACEHOLDERS = {
    "StudyDate": "19000101",
    "StudyTime": "000000",
    "StudyID": "0",
    "Modality": "OT",  # Other (PS3.3 C.7.3.1.1.1)
    "SeriesNumber": "0",
}

_MISSING = re.compile(
    r"The instance's (\(\w{4},\w{4}\)) '([^']*)' element (is missing|cannot be empty)"
)


def patient_id_placeholder(study: str) -> str:
    """The Patient ID of the PATIENT record (PS3.3 F.5.1, Type 1) of an instance without one:
    ``NO-PATIENT-ID-`` and 12 hex digits of the SHA-256 of its Study Instance UID, so that
    instances of different studies without an ID are never put under one patient."""
    return "NO-PATIENT-ID-" + hashlib.sha256(study.encode()).hexdigest()[:12].upper()


class _Bounded(io.RawIOBase):
    """The first ``limit`` bytes of a file (its data set without its trailing bytes)."""

    def __init__(self, handle: io.BufferedReader, limit: int) -> None:
        self.handle, self.limit = handle, limit

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.handle.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            return self.handle.seek(self.limit + offset)
        return self.handle.seek(offset, whence)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        room = max(0, self.limit - self.handle.tell())
        view = memoryview(buffer)[: min(len(buffer), room)]
        return self.handle.readinto(view)


def read_record_head(
    handle: io.BufferedReader, *, data_set_end: int, uids: dict[str, str]
) -> Dataset:
    """The data set directory records are made from: an exported file's (``handle``, at its
    start) File Meta Information and
    top-level elements before Pixel Data, up to ``data_set_end`` (where trailing bytes start),
    values longer than :data:`RECORD_VALUE_LIMIT` left out; ``uids`` (Study, Series and SOP
    Instance UID, as the store indexed them) fill those that are absent."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings about values are not ours to show
        read = dcmread(
            _Bounded(handle, data_set_end),
            force=True,
            stop_before_pixels=True,
            defer_size=RECORD_VALUE_LIMIT,
        )
        head = Dataset()
        for tag in list(read.keys()):
            element = read.get_item(tag)
            deferred = isinstance(element, RawDataElement) and element.value is None
            if not deferred and element is not None:
                head[tag] = element
    head.file_meta = FileMetaDataset(read.file_meta)
    for keyword, value in uids.items():
        if not head.get(keyword):
            setattr(head, keyword, value)
    if "SOPClassUID" not in head and "MediaStorageSOPClassUID" in head.file_meta:
        head.SOPClassUID = head.file_meta.MediaStorageSOPClassUID
    return head


def fill_record_keys(head: Dataset, *, instance_number: int) -> None:
    """Give ``head`` the Type 1 record keys it lacks or has empty (:data:`PLACEHOLDERS`); its
    file on the media is not this data set but the exported file."""
    if not head.get("PatientID"):
        head.PatientID = patient_id_placeholder(str(head.StudyInstanceUID))
    for keyword, value in PLACEHOLDERS.items():
        if not head.get(keyword):
            setattr(head, keyword, value)
    if head.get("InstanceNumber") in (None, ""):
        head.InstanceNumber = str(instance_number)


def add_record(fileset: FileSet, head: Dataset) -> None:
    """Add the directory records of ``head`` to ``fileset`` (pydicom stages ``head`` as the
    instance's file; the exported file replaces it once the media is written).

    Raises:
        ExportError: a key its record needs (PS3.3 F.5) is missing and has no placeholder.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fileset.add(head)
        except ValueError as exc:
            found = _MISSING.search(str(exc))
            if found is None:
                raise
            tag, name, how = found.groups()
            state = "missing" if how == "is missing" else "empty"
            raise ExportError(
                f"not added to the DICOMDIR: its directory record needs {tag} "
                f"{name.replace(' ', '')}, which is {state} (PS3.3 F.5; export it without "
                "--dicomdir)"
            ) from exc


def media_files(fileset: FileSet) -> dict[str, Path]:
    """Where each instance of a written File-set is, by SOP Instance UID."""
    return {str(instance.SOPInstanceUID): Path(instance.path) for instance in fileset}


def write_media(fileset: FileSet, out: Path) -> None:
    """Write the File-set's DICOMDIR and files under ``out`` (PS3.10 8)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fileset.write(str(out))
