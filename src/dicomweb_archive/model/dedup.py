"""Deduplication of instance metadata: patient, study and series attribute groups stored once.

An instance's DICOM JSON is split into *extracts* (the attributes of the Patient, Study and
Series levels, PS3.3 C.7.1-C.7.3 and C.7.5 for equipment) and a *remainder*. Every instance of
a series shares the same extracts, so a study's group file stores each extract once, by the
SHA-256 of its canonical JSON. Splitting is lossless by construction: combining the extracts
and the remainder gives back exactly the instance's metadata (a test checks it on every
corpus file). Which attribute goes to which level only affects how much is shared.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

JsonObject = dict[str, Any]

#: Patient Module (PS3.3 C.7.1.1) attributes shared by every instance of a patient.
PATIENT_TAGS = frozenset(
    {
        "00100010",  # PatientName
        "00100020",  # PatientID
        "00100021",  # IssuerOfPatientID
        "00100022",  # TypeOfPatientID
        "00100024",  # IssuerOfPatientIDQualifiersSequence
        "00100030",  # PatientBirthDate
        "00100032",  # PatientBirthTime
        "00100040",  # PatientSex
        "00101000",  # OtherPatientIDs
        "00101001",  # OtherPatientNames
        "00101002",  # OtherPatientIDsSequence
        "00102160",  # EthnicGroup
        "00104000",  # PatientComments
        "00120062",  # PatientIdentityRemoved
        "00120063",  # DeidentificationMethod
    }
)
#: General Study and Patient Study Modules (PS3.3 C.7.2.1, C.7.2.2).
STUDY_TAGS = frozenset(
    {
        "00080020",  # StudyDate
        "00080030",  # StudyTime
        "00080050",  # AccessionNumber
        "00080051",  # IssuerOfAccessionNumberSequence
        "00080090",  # ReferringPhysicianName
        "00080096",  # ReferringPhysicianIdentificationSequence
        "00081030",  # StudyDescription
        "00081032",  # ProcedureCodeSequence
        "00081048",  # PhysiciansOfRecord
        "00081060",  # NameOfPhysiciansReadingStudy
        "00081110",  # ReferencedStudySequence
        "0020000D",  # StudyInstanceUID
        "00200010",  # StudyID
        "00101010",  # PatientAge
        "00101020",  # PatientSize
        "00101030",  # PatientWeight
        "00102000",  # MedicalAlerts
        "00102110",  # Allergies
        "001021B0",  # AdditionalPatientHistory
        "001021C0",  # PregnancyStatus
    }
)
#: General Series, Frame of Reference and General Equipment Modules (C.7.3.1, C.7.4.1, C.7.5.1).
SERIES_TAGS = frozenset(
    {
        "00080021",  # SeriesDate
        "00080031",  # SeriesTime
        "00080060",  # Modality
        "00080070",  # Manufacturer
        "00080080",  # InstitutionName
        "00080081",  # InstitutionAddress
        "00081010",  # StationName
        "0008103E",  # SeriesDescription
        "00081040",  # InstitutionalDepartmentName
        "00081050",  # PerformingPhysicianName
        "00081070",  # OperatorsName
        "00081090",  # ManufacturerModelName
        "00181000",  # DeviceSerialNumber
        "00181020",  # SoftwareVersions
        "00181030",  # ProtocolName
        "00185100",  # PatientPosition
        "0020000E",  # SeriesInstanceUID
        "00200011",  # SeriesNumber
        "00200052",  # FrameOfReferenceUID
        "00200060",  # Laterality
        "00201040",  # PositionReferenceIndicator
        "00400244",  # PerformedProcedureStepStartDate
        "00400245",  # PerformedProcedureStepStartTime
        "00400253",  # PerformedProcedureStepID
        "00400254",  # PerformedProcedureStepDescription
        "00400275",  # RequestAttributesSequence
    }
)
LEVELS = (("patient", PATIENT_TAGS), ("study", STUDY_TAGS), ("series", SERIES_TAGS))


def canonical_json(value: Any) -> bytes:
    """The one JSON text of a value: sorted keys, no spaces, UTF-8."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def content_hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def split(metadata: JsonObject) -> tuple[dict[str, JsonObject], JsonObject]:
    """Split instance metadata into {level: extract} and the remainder.

    An extract is ``{"kind": level, "attributes": {...}}``; a level with no attribute present
    has no extract.
    """
    extracts: dict[str, JsonObject] = {}
    remainder = dict(metadata)
    for level, tags in LEVELS:
        attributes = {key: remainder.pop(key) for key in sorted(tags) if key in remainder}
        if attributes:
            extracts[level] = {"kind": level, "attributes": attributes}
    return extracts, remainder


def combine(extracts: list[JsonObject], remainder: JsonObject) -> JsonObject:
    """The instance metadata back from its extracts and remainder (tags in order)."""
    merged = dict(remainder)
    for extract in extracts:
        merged.update(extract["attributes"])
    return dict(sorted(merged.items()))
