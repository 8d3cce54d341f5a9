"""Index rows from store files: the mapping from DICOM JSON and info records to SQL columns.

Reindex and ingest both build rows here, so the index rebuilt from the files equals the one
ingest wrote by construction, and a test checks it.
"""

from __future__ import annotations

from typing import Any

from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.query import as_text, first_value

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


def instance_row(query: JsonObject, info: InfoRecord, path: str) -> Row:
    original = info.original
    return {
        "sop_instance_uid": info.sop_instance_uid,
        "series_instance_uid": info.series_instance_uid,
        "study_instance_uid": info.study_instance_uid,
        "sop_class_uid": _text(query, "00080016"),
        "instance_number": _int(query, "00200013"),
        "rows": _int(query, "00280010"),
        "columns": _int(query, "00280011"),
        "number_of_frames": len(info.frames),
        "original_transfer_syntax_uid": original.transfer_syntax_uid,
        "stored_transfer_syntax_uid": info.stored.transfer_syntax_uid,
        "original_sha256": original.sha256,
        "original_size": original.size,
        "path": path,
        "query_json": query,
    }
