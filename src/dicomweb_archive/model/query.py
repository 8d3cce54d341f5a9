"""QIDO-RS result objects (PS3.18 10.6.3, Tables 10.6.3-3 to 10.6.3-5) built from metadata.

The study, series and instance query objects hold the attributes a QIDO-RS search returns by
default, plus those viewers ask for with ``includefield`` (OHIF asks for StudyDescription,
Modality, ReferringPhysicianName, PatientBirthDate). Counts and ModalitiesInStudy are computed.
RetrieveURL (0008,1190) depends on where the store is served and is added by the server.
"""

from __future__ import annotations

from typing import Any

from dicomweb_archive.model.tags import (
    SERIES_INSTANCE_UID_KEY,
    SOP_INSTANCE_UID_KEY,
    SPECIFIC_CHARACTER_SET_KEY,
    STUDY_INSTANCE_UID_KEY,
)

JsonObject = dict[str, Any]

SPECIFIC_CHARACTER_SET = SPECIFIC_CHARACTER_SET_KEY
INSTANCE_AVAILABILITY = "00080056"
MODALITY = "00080060"
MODALITIES_IN_STUDY = "00080061"
TIMEZONE_OFFSET = "00080201"
STUDY_INSTANCE_UID = STUDY_INSTANCE_UID_KEY
SERIES_INSTANCE_UID = SERIES_INSTANCE_UID_KEY
SOP_INSTANCE_UID = SOP_INSTANCE_UID_KEY
INSTANCE_NUMBER = "00200013"
NUMBER_OF_STUDY_RELATED_SERIES = "00201206"
NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
NUMBER_OF_SERIES_RELATED_INSTANCES = "00201209"

#: PS3.18 Table 10.6.3-3 (study), plus StudyDescription and the Patient Study attributes.
STUDY_ATTRIBUTES = (
    SPECIFIC_CHARACTER_SET,
    "00080020",  # StudyDate
    "00080030",  # StudyTime
    "00080050",  # AccessionNumber
    "00080090",  # ReferringPhysicianName
    TIMEZONE_OFFSET,
    "00081030",  # StudyDescription
    "00100010",  # PatientName
    "00100020",  # PatientID
    "00100021",  # IssuerOfPatientID
    "00100030",  # PatientBirthDate
    "00100040",  # PatientSex
    STUDY_INSTANCE_UID,
    "00200010",  # StudyID
)
#: PS3.18 Table 10.6.3-4 (series), plus SeriesDate/SeriesTime and the study's UID.
SERIES_ATTRIBUTES = (
    SPECIFIC_CHARACTER_SET,
    "00080021",  # SeriesDate
    "00080031",  # SeriesTime
    MODALITY,
    TIMEZONE_OFFSET,
    "0008103E",  # SeriesDescription
    STUDY_INSTANCE_UID,
    SERIES_INSTANCE_UID,
    "00200011",  # SeriesNumber
    "00400244",  # PerformedProcedureStepStartDate
    "00400245",  # PerformedProcedureStepStartTime
    "00400275",  # RequestAttributesSequence
)
#: PS3.18 Table 10.6.3-5 (instance), plus the image attributes viewers sort and lay out by.
INSTANCE_ATTRIBUTES = (
    SPECIFIC_CHARACTER_SET,
    "00080016",  # SOPClassUID
    SOP_INSTANCE_UID,
    TIMEZONE_OFFSET,
    "00083002",  # AvailableTransferSyntaxUID
    STUDY_INSTANCE_UID,
    SERIES_INSTANCE_UID,
    INSTANCE_NUMBER,
    "00280008",  # NumberOfFrames
    "00280010",  # Rows
    "00280011",  # Columns
    "00280100",  # BitsAllocated
)


def first_value(obj: JsonObject, key: str) -> Any:
    values = obj.get(key, {}).get("Value")
    return values[0] if values else None


def as_text(value: Any) -> str:
    """A JSON value as text, whatever VR it came with: a PN object (a value encoded with VR PN
    where the dictionary says CS, say) gives its Alphabetic group (PS3.18 F.2.2)."""
    if isinstance(value, dict):
        return str(value.get("Alphabetic", ""))
    return "" if value is None else str(value)


def instance_sort_key(obj: JsonObject) -> tuple[int, int, str]:
    """Instances in InstanceNumber order, then by SOP Instance UID (deterministic)."""
    number = first_value(obj, INSTANCE_NUMBER)
    uid = str(first_value(obj, SOP_INSTANCE_UID) or "")
    if isinstance(number, int):
        return (0, number, uid)
    return (1, 0, uid)


def _pick(obj: JsonObject, keys: tuple[str, ...]) -> JsonObject:
    return {key: obj[key] for key in keys if key in obj}


def _online() -> JsonObject:
    return {"vr": "CS", "Value": ["ONLINE"]}


def _count(value: int) -> JsonObject:
    return {"vr": "IS", "Value": [value]}


def instance_query(metadata: JsonObject) -> JsonObject:
    out = _pick(metadata, INSTANCE_ATTRIBUTES)
    out[INSTANCE_AVAILABILITY] = _online()
    return dict(sorted(out.items()))


def series_query(instances: list[JsonObject]) -> JsonObject:
    """Series query object from the series' instance metadata (sorted, non-empty)."""
    out = _pick(instances[0], SERIES_ATTRIBUTES)
    out[INSTANCE_AVAILABILITY] = _online()
    out[NUMBER_OF_SERIES_RELATED_INSTANCES] = _count(len(instances))
    return dict(sorted(out.items()))


def study_query(series: list[list[JsonObject]]) -> JsonObject:
    """Study query object from the study's series (each a sorted, non-empty instance list)."""
    out = _pick(series[0][0], STUDY_ATTRIBUTES)
    modalities = sorted({m for s in series if (m := as_text(first_value(s[0], MODALITY)))})
    out[INSTANCE_AVAILABILITY] = _online()
    if modalities:
        out[MODALITIES_IN_STUDY] = {"vr": "CS", "Value": modalities}
    out[NUMBER_OF_STUDY_RELATED_SERIES] = _count(len(series))
    out[NUMBER_OF_STUDY_RELATED_INSTANCES] = _count(sum(len(s) for s in series))
    return dict(sorted(out.items()))
