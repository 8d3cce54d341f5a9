"""Selecting studies and instances from the index with QIDO-style matching (PS3.4 C.2.2.2).

Matching keys, by keyword or tag: PatientName, PatientID, StudyDate, StudyTime,
AccessionNumber, StudyDescription, StudyID, ReferringPhysicianName, StudyInstanceUID and
ModalitiesInStudy.

- Single value matching; ``*`` and ``?`` wildcards (C.2.2.2.4), case-insensitive for PN;
- range matching for dates and times, ``from-to``, ``from-`` or ``-to`` (C.2.2.2.5);
- list of UID matching, UIDs separated by ``\\`` or ``,`` (C.2.2.2.2);
- ModalitiesInStudy matches when any of the study's modalities matches.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from dicomweb_archive.errors import BadQueryError
from dicomweb_archive.index.database import Index, Row


@dataclass(frozen=True, slots=True)
class _Key:
    column: str
    kind: str  # "text", "person", "date", "uid", "list"


STUDY_KEYS = {
    "PatientName": _Key("patient_name", "person"),
    "PatientID": _Key("patient_id", "text"),
    "StudyDate": _Key("study_date", "date"),
    "StudyTime": _Key("study_time", "date"),
    "AccessionNumber": _Key("accession_number", "text"),
    "StudyDescription": _Key("study_description", "text"),
    "StudyID": _Key("study_id", "text"),
    "ReferringPhysicianName": _Key("referring_physician_name", "person"),
    "StudyInstanceUID": _Key("study_instance_uid", "uid"),
    "ModalitiesInStudy": _Key("modalities_in_study", "list"),
}
TAGS = {
    "00100010": "PatientName",
    "00100020": "PatientID",
    "00080020": "StudyDate",
    "00080030": "StudyTime",
    "00080050": "AccessionNumber",
    "00081030": "StudyDescription",
    "00200010": "StudyID",
    "00080090": "ReferringPhysicianName",
    "0020000D": "StudyInstanceUID",
    "00080061": "ModalitiesInStudy",
}


def parse_filters(pairs: list[str]) -> dict[str, str]:
    """``["PatientName=DOE*", ...]`` to {keyword: value}; tags may be given as GGGGEEEE."""
    filters: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = TAGS.get(key.replace("(", "").replace(",", "").replace(")", "").upper(), key)
        if not sep or key not in STUDY_KEYS:
            known = ", ".join(STUDY_KEYS)
            raise BadQueryError(f"query {pair!r}: use KEY=VALUE with KEY one of {known}")
        filters[key] = value
    return filters


def _glob(value: str) -> str:
    """A DICOM wildcard value as an SQLite GLOB pattern (only * and ? are special)."""
    return re.sub(r"([\[\]])", r"[\1]", value)


def _condition(key: _Key, value: str) -> tuple[str, list[Any]]:
    column = key.column
    if key.kind == "uid":
        uids = [u for u in re.split(r"[\\,]", value) if u]
        return f"{column} IN ({', '.join('?' for _ in uids)})", uids
    if key.kind == "date" and "-" in value:
        low, _, high = value.partition("-")
        parts, args = [], []
        if low:
            parts.append(f"{column} >= ?")
            args.append(low)
        if high:
            parts.append(f"{column} <= ?")
            args.append(high)
        return " AND ".join(parts) or "1", args
    if key.kind == "list":
        return f"('\\' || {column} || '\\') GLOB ?", [f"*\\{_glob(value)}\\*"]
    if key.kind == "person":
        return f"upper({column}) GLOB upper(?)", [_glob(value)]
    return f"{column} GLOB ?", [_glob(value)]


def find_studies(index: Index, filters: dict[str, str]) -> list[str]:
    """StudyInstanceUIDs of the studies matching every filter, in UID order."""
    clauses, args = [], []
    for keyword, value in filters.items():
        if value in {"", "*"}:
            continue  # universal matching
        clause, values = _condition(STUDY_KEYS[keyword], value)
        clauses.append(f"({clause})")
        args.extend(values)
    where = " AND ".join(clauses) or "1"
    sql = f"SELECT study_instance_uid FROM studies WHERE {where} ORDER BY study_instance_uid"  # noqa: S608 - columns are ours, values bound
    return [row["study_instance_uid"] for row in index.db.query(sql, args)]


def find_instances(
    index: Index,
    study: str,
    series: str | None = None,
    sops: list[str] | None = None,
) -> list[Row]:
    """Instance rows of a study (optionally one series, optionally some SOP Instance UIDs),
    in series, instance number and UID order."""
    sql = (
        "SELECT i.sop_instance_uid, i.series_instance_uid, i.study_instance_uid,"
        " i.original_sha256, i.original_size FROM instances i"
        " JOIN series s ON s.series_instance_uid = i.series_instance_uid"
        " WHERE i.study_instance_uid = ?"
    )
    args: list[Any] = [study]
    if series is not None:
        sql += " AND i.series_instance_uid = ?"
        args.append(series)
    if sops:
        sql += f" AND i.sop_instance_uid IN ({', '.join('?' for _ in sops)})"
        args.extend(sops)
    sql += (
        " ORDER BY s.series_number IS NULL, s.series_number, s.series_instance_uid,"
        " i.instance_number IS NULL, i.instance_number, i.sop_instance_uid"
    )
    return list(index.db.query(sql, args))


def all_instances(index: Index) -> list[Row]:
    """Every instance row (for verify)."""
    return list(
        index.db.query(
            "SELECT sop_instance_uid, series_instance_uid, study_instance_uid, path,"
            " original_sha256, original_size, number_of_frames, query_json FROM instances"
            " ORDER BY study_instance_uid, series_instance_uid, sop_instance_uid"
        )
    )


def study_rows(index: Index) -> dict[str, Row]:
    return {
        row["study_instance_uid"]: row
        for row in index.db.query("SELECT study_instance_uid, query_json FROM studies")
    }


def series_rows(index: Index) -> dict[str, Row]:
    return {
        row["series_instance_uid"]: row
        for row in index.db.query(
            "SELECT series_instance_uid, study_instance_uid, query_json FROM series"
        )
    }


def studies_of_patient(index: Index, patient_id: str) -> list[str]:
    return [
        row["study_instance_uid"]
        for row in index.db.query(
            "SELECT study_instance_uid FROM studies WHERE patient_id = ?"
            " ORDER BY study_instance_uid",
            [patient_id],
        )
    ]


#: QIDO-RS matching keys of series and instances (PS3.18 10.6.1.2), keyword -> column.
SERIES_KEYS = {
    "Modality": _Key("modality", "text"),
    "SeriesInstanceUID": _Key("series_instance_uid", "uid"),
    "SeriesNumber": _Key("series_number", "text"),
    "SeriesDescription": _Key("series_description", "text"),
    "SeriesDate": _Key("series_date", "date"),
}
INSTANCE_KEYS = {
    "SOPInstanceUID": _Key("sop_instance_uid", "uid"),
    "SOPClassUID": _Key("sop_class_uid", "uid"),
    "InstanceNumber": _Key("instance_number", "text"),
}
SERIES_TAGS = {
    "00080060": "Modality",
    "0020000E": "SeriesInstanceUID",
    "00200011": "SeriesNumber",
    "0008103E": "SeriesDescription",
    "00080021": "SeriesDate",
}
INSTANCE_TAGS = {
    "00080018": "SOPInstanceUID",
    "00080016": "SOPClassUID",
    "00200013": "InstanceNumber",
}
LEVEL_TABLES = {"study": "studies", "series": "series", "instance": "instances"}


def keyword_of(key: str) -> str:
    """A query key given as keyword or tag (GGGGEEEE), as keyword."""
    upper = key.upper()
    return TAGS.get(upper) or SERIES_TAGS.get(upper) or INSTANCE_TAGS.get(upper) or key


def search(
    index: Index,
    level: str,
    filters: dict[str, str],
    *,
    study: str | None = None,
    series: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[Any]:
    """QIDO-RS: the query objects of ``level`` matching every filter, in a stable order.

    Filters on the levels above (study attributes for series and instances, series attributes
    for instances) are matched through joins, as PS3.18 10.6.1.3 allows.
    """
    keys: dict[str, tuple[str, _Key]] = {k: ("st", v) for k, v in STUDY_KEYS.items()}
    if level in ("series", "instance"):
        keys |= {k: ("se", v) for k, v in SERIES_KEYS.items()}
    if level == "instance":
        keys |= {k: ("i", v) for k, v in INSTANCE_KEYS.items()}
    clauses, args = [], []
    for keyword, value in filters.items():
        if keyword not in keys:
            raise BadQueryError(f"{keyword} is not a matching key at the {level} level")
        if value in {"", "*"}:
            continue
        alias, key = keys[keyword]
        clause, values = _condition(_Key(f"{alias}.{key.column}", key.kind), value)
        clauses.append(f"({clause})")
        args.extend(values)
    if study is not None:
        clauses.append("st.study_instance_uid = ?")
        args.append(study)
    if series is not None:
        clauses.append("se.series_instance_uid = ?")
        args.append(series)
    joins = {
        "study": "studies st",
        "series": "series se JOIN studies st ON st.study_instance_uid = se.study_instance_uid",
        "instance": "instances i JOIN series se ON se.series_instance_uid ="
        " i.series_instance_uid JOIN studies st ON st.study_instance_uid = i.study_instance_uid",
    }[level]
    alias = {"study": "st", "series": "se", "instance": "i"}[level]
    order = {
        "study": "st.study_date, st.study_instance_uid",
        "series": "st.study_instance_uid, se.series_number IS NULL, se.series_number,"
        " se.series_instance_uid",
        "instance": "st.study_instance_uid, se.series_number IS NULL, se.series_number,"
        " se.series_instance_uid, i.instance_number IS NULL, i.instance_number,"
        " i.sop_instance_uid",
    }[level]
    sql = f"SELECT {alias}.query_json AS q FROM {joins} WHERE {' AND '.join(clauses) or '1'}"  # noqa: S608 - names are ours, values bound
    sql += f" ORDER BY {order} LIMIT ? OFFSET ?"
    args += [limit if limit is not None else -1, offset]
    return [json.loads(row["q"]) for row in index.db.query(sql, args)]
