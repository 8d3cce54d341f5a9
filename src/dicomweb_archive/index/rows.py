"""Index rows from store files: the mapping from DICOM JSON and info records to SQL columns.

Reindex and ingest both build rows here, so the index rebuilt from the files equals the one
ingest wrote by construction, and a test checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.query import as_text, first_value
from dicomweb_archive.model.uid import is_conformant_uid

JsonObject = dict[str, Any]
Row = dict[str, Any]


def _text(obj: JsonObject, key: str) -> str | None:
    value = first_value(obj, key)
    return None if value is None else as_text(value)  # PN: the Alphabetic group (PS3.18 F.2.4)


def _all_text(obj: JsonObject, key: str) -> str | None:
    values = obj.get(key, {}).get("Value")
    return "\\".join(as_text(v) for v in values if v is not None) if values else None


def _int(obj: JsonObject, key: str) -> int | None:
    value = first_value(obj, key)
    return value if isinstance(value, int) else None


def study_row(query: JsonObject, path: str) -> Row:
    return {
        "study_instance_uid": _text(query, "0020000D"),
        "patient_id": _text(query, "00100020") or "",
        "patient_name": _text(query, "00100010"),
        "patient_birth_date": _text(query, "00100030"),
        "patient_sex": _text(query, "00100040"),
        "study_date": _text(query, "00080020"),
        "study_time": _text(query, "00080030"),
        "accession_number": _text(query, "00080050"),
        "study_id": _text(query, "00200010"),
        "study_description": _text(query, "00081030"),
        "referring_physician_name": _text(query, "00080090"),
        "modalities_in_study": _all_text(query, "00080061"),
        "number_of_series": _int(query, "00201206"),
        "number_of_instances": _int(query, "00201208"),
        "path": path,
        "query_json": query,
    }


def series_row(query: JsonObject, path: str) -> Row:
    return {
        "series_instance_uid": _text(query, "0020000E"),
        "study_instance_uid": _text(query, "0020000D"),
        "modality": _text(query, "00080060"),
        "series_number": _int(query, "00200011"),
        "series_description": _text(query, "0008103E"),
        "series_date": _text(query, "00080021"),
        "number_of_instances": _int(query, "00201209"),
        "path": path,
        "query_json": query,
    }


@dataclass(frozen=True, slots=True)
class Facts:
    """What an instance's row holds besides its query object: from its info record, or from
    its row (an edit, which never changes the info record)."""

    study: str
    series: str
    sop: str
    number_of_frames: int
    original_transfer_syntax_uid: str
    stored_transfer_syntax_uid: str
    original_sha256: str
    original_size: int
    #: the received file ends inside Pixel Data (``model/incomplete.py``)
    incomplete: bool = False

    @classmethod
    def from_info(cls, info: InfoRecord) -> Facts:
        return cls(
            info.study_instance_uid,
            info.series_instance_uid,
            info.sop_instance_uid,
            len(info.frames),
            info.original.transfer_syntax_uid,
            info.stored.transfer_syntax_uid,
            info.original.sha256,
            info.original.size,
            incomplete_frame(info.skeleton) is not None,
        )

    @classmethod
    def from_row(cls, row: Row) -> Facts:
        return cls(
            row["study_instance_uid"],
            row["series_instance_uid"],
            row["sop_instance_uid"],
            row["number_of_frames"],
            row["original_transfer_syntax_uid"],
            row["stored_transfer_syntax_uid"],
            row["original_sha256"],
            row["original_size"],
            bool(row["incomplete"]),
        )

    @property
    def nonconformant_uid(self) -> bool:
        """A Study, Series or SOP Instance UID is stored although PS3.5 9.1 does not allow it."""
        return not all(map(is_conformant_uid, (self.study, self.series, self.sop)))


def instance_row(query: JsonObject, facts: Facts, path: str) -> Row:
    return {
        "sop_instance_uid": facts.sop,
        "series_instance_uid": facts.series,
        "study_instance_uid": facts.study,
        "sop_class_uid": _text(query, "00080016"),
        "instance_number": _int(query, "00200013"),
        "rows": _int(query, "00280010"),
        "columns": _int(query, "00280011"),
        "number_of_frames": facts.number_of_frames,
        "original_transfer_syntax_uid": facts.original_transfer_syntax_uid,
        "stored_transfer_syntax_uid": facts.stored_transfer_syntax_uid,
        "original_sha256": facts.original_sha256,
        "original_size": facts.original_size,
        "path": path,
        "query_json": query,
        "nonconformant_uid": int(facts.nonconformant_uid),
        "incomplete": int(facts.incomplete),
    }
