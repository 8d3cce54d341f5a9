"""De-identification rules: PS3.15 Annex E, Basic Application Level Confidentiality Profile.

Actions come from Table E.1-1 (``standard_tables.CONFIDENTIALITY_PROFILE``, edition noted
there), with the profile options of Table E.1-1's columns. Where the table offers a choice
that depends on the attribute's Type in the IOD (``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``,
``X/Z/U*``), we keep the attribute when we can (Type 1 and 2 attributes must stay): ``X/Z`` ->
Z, ``X/D``, ``Z/D``, ``X/Z/D`` -> D, ``X/Z/U*`` -> U. ``C`` (clean) is applied as D (a dummy
value known not to identify), except dates under Retain Longitudinal Temporal Information with
Modified Dates, which are shifted by a per-patient offset. Where two chosen options' columns
give one row different actions (Retain Device Identity K and Modified Dates C on calibration
and manufacture dates and times, rows added since 2020b), the more protective one wins (C: the
date is shifted with the patient's other dates, not kept as it was while they are shifted).
Private attributes are removed, except, with Retain Safe Private (PS3.15 E.3.10), those Table
E.3.10-1 lists for their block's private creator (``standard_tables.SAFE_PRIVATE``) and the
creator elements of their blocks.

Dates and times (PS3.15 E.3.6, Retain Longitudinal Temporal Information Options): every DA,
DT and TM attribute the table does not name (or names in a row whose option columns are not
known here), and every one of a safe private attribute kept by Retain Safe Private, follows
the temporal option chosen: without one it gets a dummy value (D); with
``retain-modified-dates`` DA and DT values are shifted back by the patient's keyed offset and
TM values kept (a shift by whole days leaves the time of day); with ``retain-full-dates`` it
is kept. This holds inside sequences too.

Patients (PS3.15 E.1.1, dummy values that keep patients apart): Patient ID (0010,0020) and
Patient's Name (0010,0010) are replaced by keyed pseudonyms, ``DEID-<20 hex digits of
HMAC-SHA-256(key, "patient:" + original Patient ID)>`` (the name ``DEID^<same digits>``), or
by the values a patient map gives: one de-identified patient per original patient.

UIDs are replaced by ``2.25.<128 bits of HMAC-SHA-256(key, uid)>`` (PS3.5 B.2): the same UID
always maps to the same new UID under the same key, across runs and studies, so references
stay consistent.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dicomweb_archive.errors import ArchiveError, UsageError
from dicomweb_archive.model.standard_tables import (
    CONFIDENTIALITY_PROFILE,
    ROWS_WITHOUT_OPTION_COLUMNS,
    SAFE_PRIVATE,
)

if TYPE_CHECKING:  # the rules are parsed only where a command is given a rules file
    from dicomweb_archive.model.pixel_rules import PixelRules

#: command-line option -> Table E.1-1 column
OPTIONS = {
    "retain-uids": "rtnUIDsOpt",
    "retain-device-identity": "rtnDevIdOpt",
    "retain-institution-identity": "rtnInstIdOpt",
    "retain-patient-characteristics": "rtnPatCharsOpt",
    "retain-full-dates": "rtnLongFullDatesOpt",
    "retain-modified-dates": "rtnLongModifDatesOpt",
    "clean-descriptors": "cleanDescOpt",
    "clean-structured-content": "cleanStructContOpt",
    "retain-safe-private": "rtnSafePrivOpt",
}
TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
#: actions from the most protective to the least, for options whose columns disagree
PROTECTIVE = ("X", "Z", "D", "C", "K")
CHOICES = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}
DUMMY = {
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": "ANONYMOUS",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": "ANONYMOUS",
    "LT": "ANONYMOUS",
    "PN": "ANONYMOUS",
    "SH": "ANONYMOUS",
    "ST": "ANONYMOUS",
    "TM": "000000",
    "UC": "ANONYMOUS",
    "UT": "ANONYMOUS",
    "UR": "ANONYMOUS",
    "FD": "0",
    "FL": "0",
    "SL": "0",
    "SS": "0",
    "UL": "0",
    "US": "0",
}
DEIDENTIFICATION_METHOD = "PS3.15 E.1 Basic Application Level Confidentiality Profile"
#: PS3.16 CID 7050 De-identification Method: the profile and each option applied
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
#: PS3.16 CID 7050: rectangles of burned-in text blanked (PS3.15 E.3.1)
CLEAN_PIXEL_DATA_CODE = ("113101", "DCM", "Clean Pixel Data Option")
OPTION_CODES = {
    "retain-uids": ("113110", "DCM", "Retain UIDs Option"),
    "retain-device-identity": ("113109", "DCM", "Retain Device Identity Option"),
    "retain-institution-identity": ("113112", "DCM", "Retain Institution Identity Option"),
    "retain-patient-characteristics": ("113108", "DCM", "Retain Patient Characteristics Option"),
    "retain-full-dates": (
        "113106",
        "DCM",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    "retain-modified-dates": (
        "113107",
        "DCM",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "clean-descriptors": ("113105", "DCM", "Clean Descriptors Option"),
    "clean-structured-content": ("113104", "DCM", "Clean Structured Content Option"),
    "retain-safe-private": ("113111", "DCM", "Retain Safe Private Option"),
}
#: VRs of free text (PS3.5 6.2): values a person typed, which may repeat a removed value
FREE_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
#: Code Value, Coding Scheme Designator and Version, Code Meaning, Long Code Value, URN Code
#: Value (PS3.3 8.8): the coded concepts a cleaned sequence keeps
CODE_ATTRIBUTES = frozenset(
    {0x00080100, 0x00080102, 0x00080103, 0x00080104, 0x00080119, 0x00080120}
)


def text_values(element: Mapping[str, object]) -> set[str]:
    """The values of a DICOM JSON (PS3.18 F.2) element as compared for free text: stripped
    and case-folded, each component group of a person name on its own; empty ones left out."""
    out: set[str] = set()
    values = element.get("Value")
    for value in values if isinstance(values, list) else []:
        parts = list(value.values()) if isinstance(value, dict) else [value]
        out.update(str(part).strip().casefold() for part in parts if str(part).strip())
    return out


#: Modalities whose pixels often carry burned-in text (PS3.3 C.7.3.1.1.1): ultrasound, X-ray
#: angiography and fluoroscopy, endoscopy, photographs, documents and other or secondary capture
BURNED_IN_MODALITIES = frozenset({"US", "IVUS", "XA", "RF", "ES", "XC", "GM", "DOC", "OT"})
#: SOP classes whose pixels often carry burned-in text (PS3.4 B.5): secondary capture (single
#: and multi-frame), ultrasound, X-ray angiography and fluoroscopy, VL endoscopic and
#: photographic images and video, encapsulated PDF (a scanned document)
BURNED_IN_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
        "1.2.840.10008.5.1.4.1.1.6.1",
        "1.2.840.10008.5.1.4.1.1.6.2",
        "1.2.840.10008.5.1.4.1.1.3.1",
        "1.2.840.10008.5.1.4.1.1.12.1",
        "1.2.840.10008.5.1.4.1.1.12.2",
        "1.2.840.10008.5.1.4.1.1.77.1.1",
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",
        "1.2.840.10008.5.1.4.1.1.77.1.4",
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",
        "1.2.840.10008.5.1.4.1.1.104.1",
    }
)


def burned_in_review(burned: str | None, modality: str | None, sop_class: str | None) -> str:
    """Why an instance's pixels need review for burned-in text, or ``""``: Burned In
    Annotation (0028,0301) is ``YES``, or it is absent or neither YES nor NO and the SOP class
    or modality is one where burned-in text is common (``BURNED_IN_SOP_CLASSES``,
    ``BURNED_IN_MODALITIES``). Worded without values of the instance."""
    if burned == "YES":
        return "Burned In Annotation (0028,0301) is YES: check the pixels for text"
    if burned == "NO":
        return ""
    if sop_class in BURNED_IN_SOP_CLASSES or modality in BURNED_IN_MODALITIES:
        return (
            "Burned In Annotation (0028,0301) is not given, and its SOP class or modality "
            "often carries burned-in text: check the pixels for text"
        )
    return ""


@dataclass(frozen=True, slots=True)
class Profile:
    """The chosen profile options, the key of the UID map, pseudonyms and date shifts, and the
    patient map (original Patient ID -> (new Patient ID, new Patient's Name)) when given."""

    key: bytes
    options: frozenset[str] = frozenset()
    patients: Mapping[str, tuple[str, str]] | None = field(default=None, compare=False)
    #: pixel cleaning rules (``--clean-pixels``), None when pixels are not cleaned
    pixel_rules: PixelRules | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        unknown = sorted(self.options - OPTIONS.keys())
        if unknown:
            raise UsageError(f"unknown de-identification option: {', '.join(unknown)}")
        if {"retain-full-dates", "retain-modified-dates"} <= self.options:
            # PS3.15 E.3.6: one way of retaining longitudinal temporal information; the two
            # option columns give every temporal row different actions (K and C)
            raise UsageError(
                "retain-full-dates and retain-modified-dates exclude each other: choose one"
            )

    def method_codes(self, *, cleaned: bool = False) -> tuple[tuple[str, str, str], ...]:
        """De-identification Method Code Sequence items (0012,0064) for this profile, with
        Clean Pixel Data Option (113101) for an instance whose pixels were ``cleaned``."""
        options = (OPTION_CODES[o] for o in sorted(self.options))
        return (BASIC_PROFILE_CODE, *options, *([CLEAN_PIXEL_DATA_CODE] if cleaned else []))

    def temporal_information(self) -> str:
        """Longitudinal Temporal Information Modified (0028,0303) for this profile (PS3.3
        C.12.1, PS3.15 E.3.6): ``UNMODIFIED`` with Full Dates, ``MODIFIED`` with Modified
        Dates, ``REMOVED`` when no temporal option is applied (dates removed or dummied)."""
        if "retain-full-dates" in self.options:
            return "UNMODIFIED"
        if "retain-modified-dates" in self.options:
            return "MODIFIED"
        return "REMOVED"

    def action(self, tag: int, vr: str = "", *, safe: bool = False) -> str | None:
        """The action for an attribute of VR ``vr``: X, Z, D, U, K, C, or None (not in the
        table: keep); see the module docstring for dates and times. ``safe``: a private
        attribute :func:`safe_private` names, kept with Retain Safe Private (PS3.15 E.3.10)."""
        private = tag >> 16 & 1
        if private and not (safe and "retain-safe-private" in self.options):
            return "X"
        entry = None if private else _lookup(tag)
        if vr in TEMPORAL_VRS and (entry is None or f"{tag:08X}" in ROWS_WITHOUT_OPTION_COLUMNS):
            if "retain-full-dates" in self.options:
                return "K"
            if "retain-modified-dates" in self.options:
                return "C"
            if entry is None:
                return "D"
        if private:
            return "K"  # a safe private attribute, kept (its dates and times: as above)
        if entry is None:
            return None
        basic, columns = entry
        letters = {columns[OPTIONS[o]] for o in self.options if OPTIONS[o] in columns}
        if letters:  # two options disagreeing: the more protective action (module docstring)
            return min(letters, key=PROTECTIVE.index)
        return CHOICES.get(basic, basic)

    def uid(self, value: str) -> str:
        """The replacement of a UID (consistent under one key)."""
        digest = hmac.new(self.key, value.encode("utf-8"), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def patient(self, patient_id: str) -> tuple[str, str]:
        """The new (Patient ID, Patient's Name) of a patient: from the patient map when one is
        given (raises :class:`ArchiveError` for a patient it does not name), else
        keyed pseudonyms (consistent under one key, distinct for distinct patients)."""
        if self.patients is not None:
            if patient_id not in self.patients:
                raise ArchiveError(  # its Patient ID is not repeated (no PHI in the output)
                    "the instance's Patient ID is not in the patient map: add it to the map"
                )
            return self.patients[patient_id]
        message = f"patient:{patient_id}".encode()
        digits = hmac.new(self.key, message, hashlib.sha256).hexdigest()[:20].upper()
        return f"DEID-{digits}", f"DEID^{digits}"

    def date_offset(self, patient_id: str) -> int:
        """Days to shift a patient's dates back by (1 to 3650, consistent under one key)."""
        digest = hmac.new(self.key, f"date:{patient_id}".encode(), hashlib.sha256).digest()
        return 1 + int.from_bytes(digest[:4], "big") % 3650

    def shift(self, vr: str, value: str, days: int) -> str:
        """A DA or DT value moved back by ``days`` (other VRs unchanged)."""
        if vr == "DA" and len(value) == 8 and value.isdigit():
            moved = dt.date(int(value[:4]), int(value[4:6]), int(value[6:])) - dt.timedelta(days)
            return moved.strftime("%Y%m%d")
        if vr == "DT" and len(value) >= 8 and value[:8].isdigit():
            return self.shift("DA", value[:8], days) + value[8:]
        if vr in ("DA", "DT"):  # not a value that can be shifted: not kept either
            return DUMMY[vr]
        return value


def safe_private(dataset: Mapping[str, Mapping[str, object]]) -> frozenset[int]:
    """The tags of one level of a DICOM JSON data set (PS3.18 F.2) that PS3.15 Table E.3.10-1
    lists as safe: each private attribute (gggg,xxEE) whose block's Private Creator (gggg,00xx)
    (PS3.5 7.8.1) is listed with the offset EE, and the creator element of every block that
    has one. An attribute whose block has no creator here is not safe."""
    creators: dict[int, str] = {}
    for key, element in dataset.items():
        tag = int(key, 16)
        values = element.get("Value")
        if tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF and isinstance(values, list) and values:
            creators[tag] = str(values[0]).strip()
    out: set[int] = set()
    for key in dataset:
        tag = int(key, 16)
        group, number = tag >> 16, tag & 0xFFFF
        if not group & 1 or number < 0x1000:
            continue
        creator = group << 16 | number >> 8
        if (group, creators.get(creator, ""), number & 0xFF) in SAFE_PRIVATE:
            out |= {tag, creator}
    return frozenset(out)


MAP_HEADER = ("original_patient_id", "patient_id", "patient_name")


def read_patient_map(text: str, *, name: str) -> dict[str, tuple[str, str]]:
    """A patient map from CSV text (as RSNA CTP's lookup tables): one row per patient, the
    original Patient ID, the new Patient ID, and optionally the new Patient's Name (default:
    the new Patient ID); a first row ``original_patient_id,patient_id,patient_name`` is a
    header. Two rows for one patient, or two patients given one new Patient ID (they would
    become one patient), raise :class:`UsageError` naming the line."""
    out: dict[str, tuple[str, str]] = {}
    taken: dict[str, str] = {}
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or (number == 1 and tuple(cells) == MAP_HEADER[: len(cells)]):
            continue
        where = f"{name}, line {number}"
        if len(cells) not in (2, 3) or not cells[1]:
            raise UsageError(f"{where}: give original Patient ID, new Patient ID[, new name]")
        new_id = cells[1]
        new_name = cells[2] if len(cells) == 3 and cells[2] else new_id
        if len(new_id) > 64 or "\\" in new_id + new_name:  # LO (PS3.5 6.2), one value each
            raise UsageError(f"{where}: a Patient ID of at most 64 characters, no backslash")
        if cells[0] in out:
            raise UsageError(f"{where}: Patient ID {cells[0]!r} is mapped twice")
        if new_id in taken:
            raise UsageError(
                f"{where}: Patient ID {new_id!r} is given to {taken[new_id]!r} already"
            )
        out[cells[0]] = (new_id, new_name)
        taken[new_id] = cells[0]
    return out


def _lookup(tag: int) -> tuple[str, dict[str, str]] | None:
    key = f"{tag:08X}"
    entry = CONFIDENTIALITY_PROFILE.get(key)
    if entry is not None:
        return entry
    if 0x5000 <= tag >> 16 <= 0x50FF and tag >> 16 & 1 == 0:
        return CONFIDENTIALITY_PROFILE.get("50xxxxxx")
    if 0x6000 <= tag >> 16 <= 0x60FF and tag >> 16 & 1 == 0:
        return CONFIDENTIALITY_PROFILE.get(f"60xx{tag & 0xFFFF:04X}")
    return None
