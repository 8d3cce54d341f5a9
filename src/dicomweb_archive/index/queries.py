"""QIDO-style matching keys and the conditions they make (PS3.4 C.2.2.2), without SQL.

Matching keys, by keyword or tag: PatientName, PatientID, StudyDate, StudyTime,
AccessionNumber, StudyDescription, StudyID, ReferringPhysicianName, StudyInstanceUID and
ModalitiesInStudy.

- Single value matching; ``*`` and ``?`` wildcards (C.2.2.2.4), case-insensitive for PN;
- range matching for dates and times, ``from-to``, ``from-`` or ``-to`` (C.2.2.2.5);
- list of UID matching, UIDs separated by ``\\`` or ``,`` (C.2.2.2.2);
- ModalitiesInStudy matches when any of the study's modalities matches any of the key's
  values (separated by ``\\`` or ``,``).
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomweb_archive.errors import BadQueryError
from dicomweb_archive.index.conditions import All, Match


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
        known = ", ".join(STUDY_KEYS)
        if not sep:  # what was typed may be a value alone (patient data): shown with -v only
            raise BadQueryError(
                f"a query without '=': use KEY=VALUE with KEY one of {known}", phi=repr(pair)
            )
        if key not in STUDY_KEYS:
            raise BadQueryError(f"query key {key!r}: use KEY=VALUE with KEY one of {known}")
        filters[key] = value
    return filters


def study_condition(filters: dict[str, str]) -> All:
    """The condition of study-level filters (keywords of :data:`STUDY_KEYS`)."""
    return All(
        tuple(
            Match("study", STUDY_KEYS[k].column, STUDY_KEYS[k].kind, v) for k, v in filters.items()
        )
    )


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


def keyword_of(key: str) -> str:
    """A query key given as keyword or tag (GGGGEEEE), as keyword."""
    upper = key.upper()
    return TAGS.get(upper) or SERIES_TAGS.get(upper) or INSTANCE_TAGS.get(upper) or key


def qido_condition(
    level: str,
    filters: dict[str, str],
    *,
    study: str | None = None,
    series: str | None = None,
) -> All:
    """The condition of a QIDO-RS search at ``level`` (PS3.18 10.6.1.2): filters on the
    levels above are matched too (10.6.1.3); ``study``/``series`` are the path's UIDs."""
    keys: dict[str, tuple[str, _Key]] = {k: ("study", v) for k, v in STUDY_KEYS.items()}
    if level in ("series", "instance"):
        keys |= {k: ("series", v) for k, v in SERIES_KEYS.items()}
    if level == "instance":
        keys |= {k: ("instance", v) for k, v in INSTANCE_KEYS.items()}
    parts: list[Match] = []
    for keyword, value in filters.items():
        if keyword not in keys:
            raise BadQueryError(f"{keyword} is not a matching key at the {level} level")
        owner, key = keys[keyword]
        parts.append(Match(owner, key.column, key.kind, value))
    if study is not None:
        parts.append(Match("study", "study_instance_uid", "exact", study))
    if series is not None:
        parts.append(Match("series", "series_instance_uid", "exact", series))
    return All(tuple(parts))
