"""Checks of a value against its VR (PS3.5 6.2, Table 6.2-1): length, character repertoire,
and the formats of dates, times, numbers and UIDs.

The same rules as pydicom's writing validators (``pydicom.valuerep.validate_value``), with the
same messages, and two more from Table 6.2-1: IS values are 32-bit signed integers, and text
values hold no control character but ESC (and CR, LF, FF, TAB in LT, ST, UT). Ours so that an
edit is checked without importing pydicom; ``tests/test_vr.py`` compares both on many values.
"""

from __future__ import annotations

import re
from functools import cache

#: Maximum length in characters (Table 6.2-1).
MAX_LENGTH = {
    "AE": 16,
    "CS": 16,
    "DS": 16,
    "IS": 12,
    "LO": 64,
    "LT": 10240,
    "SH": 16,
    "ST": 1024,
    "UI": 64,
}


def _ranges(regex: str) -> str:
    """A date or time, or a range of them (PS3.4 C.2.2.2.5)."""
    return rf"^{regex}$|^\-{regex} ?$|^{regex}\- ?$|^{regex}\-{regex} ?$"


_PATTERNS = {
    "AE": r"^[\x20-\x7e]*$",
    "AS": r"^\d\d\d[DWMY]$",
    "CS": r"^[A-Z0-9 _]*$",
    "DS": r"^ *[+\-]?(\d+|\d+\.\d*|\.\d+)([eE][+\-]?\d+)? *$",
    "IS": r"^ *[+\-]?\d+ *$",
    "DA": _ranges(r"\d{4}(0[1-9]|1[0-2])([0-2]\d|3[01])"),
    "DT": _ranges(
        r"\d{4}((0[1-9]|1[0-2])(([0-2]\d|3[01])(([01]\d|2[0-3])"
        r"([0-5]\d((60|[0-5]\d)(\.\d{1,6} ?)?)?)?)?)?)?([+-][01]\d\d\d)?"
    ),
    "TM": _ranges(r"([01]\d|2[0-3])([0-5]\d((60|[0-5]\d)(\.\d{1,6} ?)?)?)?"),
    "UI": r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$",
    "UR": r"^[A-Za-z_\d:/?#\[\]@!$&'()*+,;=%\-.~]* *$",
}


@cache
def _regex(vr: str) -> re.Pattern[str] | None:
    """The compiled pattern of a VR (compiled on first use: an import stays cheap)."""
    pattern = _PATTERNS.get(vr)
    return re.compile(pattern) if pattern is not None else None


#: Control characters a text value of these VRs may hold besides ESC (PS3.5 6.1.3).
_TEXT_CONTROLS = {"LT": "\t\n\f\r", "ST": "\t\n\f\r", "UT": "\t\n\f\r"}
_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_INT32 = (-(2**31), 2**31 - 1)
_SEE = (
    " Please see <https://dicom.nema.org/medical/dicom/current/output/html/part05.html"
    "#table_6.2-1> for allowed values for each VR."
)


def validate(vr: str, value: str) -> None:
    """Raise ValueError when the string ``value`` (one value, not backslash-joined ones) is not
    a valid value of ``vr``."""
    if not value:
        return
    if vr == "PN":
        _person_name(value)
    problems = [p for p in (_length(vr, value), _pattern(vr, value)) if p]
    if problems:
        extra = _SEE if vr in MAX_LENGTH and vr in _PATTERNS else ""
        raise ValueError(" ".join(problems) + extra)
    if vr == "IS" and not _INT32[0] <= int(value) <= _INT32[1]:
        raise ValueError(f"Invalid value for VR IS: {value!r} is not a 32-bit signed integer.")
    if vr in _TEXT_VRS:
        allowed = _TEXT_CONTROLS.get(vr, "") + "\x1b"
        bad = next((c for c in value if ord(c) < 0x20 and c not in allowed), None)
        if bad is not None:
            raise ValueError(f"Invalid value for VR {vr}: control character {bad!r} in {value!r}.")


def _length(vr: str, value: str) -> str:
    limit = MAX_LENGTH.get(vr, 0)
    if limit and len(value) > limit:
        return (
            f"The value length ({len(value)}) exceeds the maximum length of {limit} "
            f"allowed for VR {vr}."
        )
    return ""


def _pattern(vr: str, value: str) -> str:
    regex = _regex(vr)
    if regex is not None and (not regex.match(value) or value.endswith("\n")):
        return f"Invalid value for VR {vr}: {value!r}."
    return ""


def _person_name(value: str) -> None:
    groups = value.split("=")
    if len(groups) > 3:
        raise ValueError(
            f"The number of PN components length ({len(groups)}) exceeds the maximum allowed "
            "number of 3."
        )
    for group in groups:
        if len(group) > 64:
            raise ValueError(
                f"The PN component length ({len(group)}) exceeds the maximum allowed length of 64."
            )
