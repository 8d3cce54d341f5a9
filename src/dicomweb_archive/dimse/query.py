"""C-FIND (PS3.4 C.4.1) on the Patient Root and Study Root information models, answered from
the index.

Levels (Query/Retrieve Level (0008,0052)): PATIENT (Patient Root only), STUDY, SERIES, IMAGE.
Each attribute of the identifier is a key (PS3.4 C.2.2.1):

- a matching key the index holds (``index/queries.py``: PatientName, PatientID, StudyDate,
  StudyTime, AccessionNumber, StudyDescription, StudyID, ReferringPhysicianName,
  StudyInstanceUID, ModalitiesInStudy; Modality, SeriesInstanceUID, SeriesNumber,
  SeriesDescription, SeriesDate; SOPInstanceUID, SOPClassUID, InstanceNumber) is matched by the
  index: single value matching, ``*`` and ``?`` wildcards (C.2.2.2.4), case-insensitive for
  person names, range matching of dates and times (C.2.2.2.5), lists of UIDs (C.2.2.2.2);
  keys of the levels above are matched too (as relational queries, C.4.1.2.2.2, would);
- another key with a value is matched against the attribute as the level's stored query object
  holds it, by the same rules (an attribute the object does not hold matches nothing);
- a sequence key (C.2.2.2.6) holds one item whose keys are matched, by these rules (sequence
  matching too, recursively), against each item of the stored sequence: the object matches when
  one item matches them all (the series' Request Attributes Sequence (0040,0275), for example);
  a sequence key without an item, or with an item without values, matches universally;
- every key is returned: filled from the stored metadata of the match's level, empty (zero
  length) when that level does not hold it. A sequence key returns the stored items its item's
  keys match, each with those keys only (C.2.2.2.6); without an item, or with an empty item, every
  stored item whole. PATIENT level answers each Patient ID once, with the attributes of its
  first study and Number of Patient Related Studies, Series and Instances (0020,1200-1204).

Responses are in UTF-8 (Specific Character Set ISO_IR 192). A C-CANCEL stops the answers
(status 0xFE00). An identifier without a valid level is 0xA900 (Identifier does not match SOP
Class); an index that cannot answer, 0xC000 (Unable to process).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicomweb_archive.index.conditions import All, Match
from dicomweb_archive.index.protocol import Index
from dicomweb_archive.index.queries import INSTANCE_KEYS, SERIES_KEYS, STUDY_KEYS

#: The Query/Retrieve information models (PS3.4 C.6.1, C.6.2; PS3.6 Table A-1)
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
#: Query/Retrieve Level -> the index's level
LEVELS = {"PATIENT": "study", "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
_PATIENT_KEYS = {k: STUDY_KEYS[k] for k in ("PatientName", "PatientID")}
INDEX_KEYS = {
    "PATIENT": _PATIENT_KEYS,
    "STUDY": STUDY_KEYS,
    "SERIES": STUDY_KEYS | SERIES_KEYS,
    "IMAGE": STUDY_KEYS | SERIES_KEYS | INSTANCE_KEYS,
}
SPECIFIC_CHARACTER_SET = 0x00080005
QUERY_RETRIEVE_LEVEL = 0x00080052
RETRIEVE_AE_TITLE = 0x00080054
PATIENT_ID = "00100020"
#: Number of Patient Related Studies, Series, Instances; the study's Series and Instances
PATIENT_COUNTS = {"00201200": None, "00201202": "00201206", "00201204": "00201208"}
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000


class QueryRefusedError(Exception):
    """An identifier that cannot be answered, with the failure status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Query:
    """A C-FIND identifier, taken apart."""

    level: str
    condition: All = field(default_factory=All)
    #: other matching keys: tag (8 hex digits) -> (VR, value); a sequence key's value is its
    #: item's matching keys, in this form
    others: dict[str, tuple[str, Any]] = field(default_factory=dict)
    #: every key of the identifier: tag -> VR
    keys: dict[int, str] = field(default_factory=dict)
    #: the item of each sequence key (None: none): the attributes its items return
    items: dict[int, Dataset | None] = field(default_factory=dict)


def read_query(identifier: Dataset, model: str) -> Query:
    """The query of a C-FIND identifier under ``model`` (a Find SOP Class UID)."""
    level = key_text(identifier, QUERY_RETRIEVE_LEVEL, []).strip().upper()
    if level not in LEVELS or (level == "PATIENT" and model != PATIENT_ROOT_FIND):
        raise QueryRefusedError(
            IDENTIFIER_DOES_NOT_MATCH,
            f"Query/Retrieve Level {level!r} is not one of this information model's",
        )
    encodings = convert_encodings(key_text(identifier, SPECIFIC_CHARACTER_SET, []) or "")
    query = Query(level)
    parts: list[Match] = []
    index_keys = INDEX_KEYS[level]
    for tag in list(identifier.keys()):
        if tag.group in (0x0000, 0x0002) or tag in (SPECIFIC_CHARACTER_SET, QUERY_RETRIEVE_LEVEL):
            continue
        vr = _vr(identifier, tag)
        query.keys[int(tag)] = vr
        if vr == "SQ":
            item = _sequence_item(identifier, tag)
            query.items[int(tag)] = item
            wanted = _item_keys(item, encodings) if item is not None else {}
            if wanted:
                query.others[f"{int(tag):08X}"] = ("SQ", wanted)
            continue
        value = key_text(identifier, tag, encodings)
        if value in ("", "*"):  # universal matching (C.2.2.2.3)
            continue
        keyword = keyword_for_tag(tag)
        if keyword in index_keys:
            key = index_keys[keyword]
            owner = "study" if keyword in STUDY_KEYS else LEVELS[level]
            owner = "series" if keyword in SERIES_KEYS else owner
            parts.append(Match(owner, key.column, key.kind, value))
        else:
            query.others[f"{int(tag):08X}"] = (vr, value)
    query.condition = All(tuple(parts))
    return query


def _sequence_item(identifier: Dataset, tag: Any) -> Dataset | None:
    """The one item of a sequence key, None for an empty sequence; QueryRefusedError for
    more (PS3.4 C.2.2.2.6: "structured as a Sequence of Items with a single Item")."""
    items = identifier[tag].value or []
    if len(items) > 1:
        raise QueryRefusedError(
            IDENTIFIER_DOES_NOT_MATCH,
            f"sequence key {Tag(tag)} has {len(items)} items; a "
            "sequence key has one (PS3.4 C.2.2.2.6)",
        )
    return items[0] if items else None


def _item_keys(item: Dataset, encodings: list[str]) -> dict[str, tuple[str, Any]]:
    """The matching keys of a sequence key's item: tag -> (VR, value), a nested sequence key's
    value its own item's keys; keys without a value (universal matching) left out."""
    keys: dict[str, tuple[str, Any]] = {}
    for tag in list(item.keys()):
        vr = _vr(item, tag)
        if vr == "SQ":
            inner = _sequence_item(item, tag)
            nested = _item_keys(inner, encodings) if inner is not None else {}
            if nested:
                keys[f"{int(tag):08X}"] = ("SQ", nested)
            continue
        value = key_text(item, tag, encodings)
        if value not in ("", "*"):
            keys[f"{int(tag):08X}"] = (vr, value)
    return keys


def find_matches(index: Index, query: Query) -> list[dict[str, Any]]:
    """The stored query objects matching ``query`` (one per patient at PATIENT level)."""
    found = index.search(LEVELS[query.level], query.condition)
    found = [item for item in found if _matches_others(item, query.others)]
    return _patients(found) if query.level == "PATIENT" else found


def _patients(studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One object per Patient ID: its first study's, with the patient's counts."""
    patients: dict[str, dict[str, Any]] = {}
    for study in studies:
        patient_id = str((study.get(PATIENT_ID, {}).get("Value") or [""])[0])
        patient = patients.setdefault(patient_id, dict(study) | dict.fromkeys(PATIENT_COUNTS, 0))
        for tag, source in PATIENT_COUNTS.items():
            number = (study.get(source, {}).get("Value") or [0])[0] if source else 1
            patient[tag] += int(number)
    return [
        p | {t: {"vr": "IS", "Value": [p[t]]} for t in PATIENT_COUNTS} for p in patients.values()
    ]


def to_response(item: dict[str, Any], query: Query, *, retrieve_ae_title: str) -> Dataset:
    """The C-FIND response of one match: every key of the query (the module docstring)."""
    response = _returned(item, query.keys, query.items, query.others)
    if RETRIEVE_AE_TITLE in query.keys:
        response[RETRIEVE_AE_TITLE].value = retrieve_ae_title
    response.QueryRetrieveLevel = query.level
    response.SpecificCharacterSet = "ISO_IR 192"
    return response


def _returned(
    stored: dict[str, Any],
    keys: dict[int, str],
    items: dict[int, Dataset | None],
    others: dict[str, tuple[str, Any]],
) -> Dataset:
    """``keys`` filled from the stored object (or item) ``stored``, empty where it holds none;
    a sequence key with the stored items its item matches (module docstring)."""
    held = {f"{t:08X}" for t, vr in keys.items() if vr != "SQ"}
    returned = Dataset.from_json({k: stored[k] for k in held if k in stored})
    for tag, vr in keys.items():
        if vr == "SQ":
            returned.add_new(tag, vr, _returned_items(stored, tag, items[tag], others))
        elif tag not in returned:
            returned.add_new(tag, vr, None)
    return returned


def _returned_items(
    stored: dict[str, Any], tag: int, item: Dataset | None, others: dict[str, tuple[str, Any]]
) -> list[Dataset]:
    """The items a sequence key returns (module docstring)."""
    values = (stored.get(f"{tag:08X}") or {}).get("Value") or []
    candidates = [v for v in values if isinstance(v, dict)]
    _, wanted = others.get(f"{tag:08X}", ("SQ", {}))
    if wanted:
        candidates = [c for c in candidates if _matches_others(c, wanted)]
    if item is None or not len(item):
        return [Dataset.from_json(c) for c in candidates]
    keys = {int(t): _vr(item, t) for t in list(item.keys())}
    inner = {t: _sequence_item(item, t) for t, vr in keys.items() if vr == "SQ"}
    return [_returned(c, keys, inner, wanted) for c in candidates]


def _matches_others(item: dict[str, Any], others: dict[str, tuple[str, Any]]) -> bool:
    """Whether the stored query object (or a stored item) matches the keys the index does not
    hold (a sequence key: when one of its stored items matches its item's keys)."""
    for tag, (vr, wanted) in others.items():
        stored = item.get(tag, {}).get("Value") or []
        if vr == "SQ":
            if not any(isinstance(s, dict) and _matches_others(s, wanted) for s in stored):
                return False
            continue
        values = [_stored_text(v) for v in stored]
        if not any(matches_value(vr, v, wanted) for v in values):
            return False
    return True


def matches_value(vr: str, stored: str, wanted: str) -> bool:
    """PS3.4 C.2.2.2 matching of one stored value: a list of UIDs (C.2.2.2.2), a range of
    dates or times (C.2.2.2.5), else single value matching with ``*`` and ``?`` (C.2.2.2.1,
    C.2.2.2.4), case-insensitive for person names."""
    if vr == "UI":
        return stored in wanted.split("\\")
    if vr in ("DA", "TM", "DT") and "-" in wanted:
        low, _, high = wanted.partition("-")
        return (not low or stored >= low) and (not high or stored[: len(high)] <= high)
    pattern = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in wanted.strip()
    )
    flags = re.IGNORECASE if vr == "PN" else 0
    return re.fullmatch(pattern, stored.strip(), flags | re.DOTALL) is not None


def _stored_text(value: Any) -> str:
    if isinstance(value, dict):  # a person name (PS3.18 F.2.2)
        return str(value.get("Alphabetic", ""))
    return str(value)


def _vr(identifier: Dataset, tag: Any) -> str:
    element = identifier.get_item(tag)
    vr = element.VR if element is not None else None
    if vr is None or vr in ("UN", "OB or OW", "US or SS"):
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    return str(vr).split(" or ")[0]


def key_text(identifier: Dataset, tag: int, encodings: list[str]) -> str:
    """A key's value as text, from the bytes received (no VR validation: ``*`` in an IS key
    is a wildcard, not a bad number); values of a multi-valued key joined by backslash."""
    element = identifier.get_item(tag)
    if element is None:
        return ""
    if isinstance(element, RawDataElement):
        raw = element.value or b""
        text = decode_bytes(raw, encodings or ["iso8859"], set()) if raw else ""
        return text.rstrip(" \0")
    value = element.value
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).rstrip(" \0")
