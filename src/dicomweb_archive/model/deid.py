"""De-identification rules: PS3.15 Annex E, Basic Application Level Confidentiality Profile.

Actions come from Table E.1-1 (``standard_tables.CONFIDENTIALITY_PROFILE``, edition noted
there), with the profile options of Table E.1-1's columns. Where the table offers a choice that
depends on the attribute's Type in the IOD (``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``, ``X/Z/U*``),
we keep the attribute when we can (Type 1 and 2 attributes must stay): ``X/Z`` -> Z,
``X/D``, ``Z/D``, ``X/Z/D`` -> D, ``X/Z/U*`` -> U. ``C`` (clean) is applied as D (a dummy value
known not to identify), except dates under Retain Longitudinal Temporal Information with
Modified Dates, which are shifted by a per-patient offset. Private attributes are removed.

UIDs are replaced by ``2.25.<128 bits of HMAC-SHA-256(key, uid)>`` (PS3.5 B.2): the same UID
always maps to the same new UID under the same key, across runs and studies, so references
stay consistent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

from dicomweb_archive.model.standard_tables import CONFIDENTIALITY_PROFILE

#: command-line option -> Table E.1-1 column
OPTIONS = {
    "retain-uids": "rtnUIDsOpt",
    "retain-device-identity": "rtnDevIdOpt",
    "retain-institution-identity": "rtnInstIdOpt",
    "retain-patient-characteristics": "rtnPatCharsOpt",
    "retain-full-dates": "rtnLongFullDatesOpt",
    "retain-modified-dates": "rtnLongModifDatesOpt",
    "clean-descriptors": "cleanDescOpt",
}
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
}


@dataclass(frozen=True, slots=True)
class Profile:
    """The chosen profile options and the key of the UID map and date shifts."""

    key: bytes
    options: frozenset[str] = frozenset()

    def method_codes(self) -> tuple[tuple[str, str, str], ...]:
        """De-identification Method Code Sequence items (0012,0064) for this profile."""
        return (BASIC_PROFILE_CODE, *(OPTION_CODES[o] for o in sorted(self.options)))

    def action(self, tag: int) -> str | None:
        """The action for an attribute: X, Z, D, U, K, C, or None (not in the table: keep)."""
        if tag >> 16 & 1:
            return "X"
        entry = _lookup(tag)
        if entry is None:
            return None
        basic, columns = entry
        for option in sorted(self.options):
            column = OPTIONS[option]
            if column in columns:
                return columns[column]
        return CHOICES.get(basic, basic)

    def uid(self, value: str) -> str:
        """The replacement of a UID (consistent under one key)."""
        digest = hmac.new(self.key, value.encode("ascii"), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

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
        return value


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
