"""QIDO-RS searches (PS3.18 10.6), answered from the index.

- Matching keys (keywords or tags) as ``index/queries.py`` lists them; each value is checked
  against its VR first (PS3.4 C.2.2.2: a date is ``YYYYMMDD`` or a range of them, a time
  ``HHMMSS.FFFFFF`` or a range, a UID list holds UIDs, a number is a number): a bad value is 400
  with a sentence, never an empty answer.
- A DICOM attribute that is not one of those keys is ignored, and the answer says so in a
  ``Warning: 299`` header (RFC 9111 5.5, as PS3.18 8.3.4.2 does for fuzzy matching); a name that
  is neither a keyword, a tag nor a parameter of PS3.18 8.3.4 is 400.
- ``limit`` and ``offset`` (PS3.18 8.3.4.4) are integers from 0 to :data:`MAX_PAGE_VALUE`.
- ``fuzzymatching=true`` (PS3.18 8.3.4.2): Person Name keys match by PS3.4 C.2.2.2.1.1 fuzzy
  semantic matching as this server defines it: every word of the value (words are separated by
  ``^``, spaces or commas; ``*`` and ``?`` allowed) matches the beginning of some word of the
  name's Alphabetic group, case-insensitive, in any order (``doe j`` finds ``DOE^JANE``).
- ``includefield`` (PS3.18 8.3.4.3): keywords, tags or ``all``, repeated or comma-separated;
  see ``web/includefield.py``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from dicomweb_archive.errors import BadQueryError
from dicomweb_archive.index.conditions import All, Match
from dicomweb_archive.index.queries import (
    INSTANCE_KEYS,
    SERIES_KEYS,
    STUDY_KEYS,
    keyword_of,
    qido_condition,
)
from dicomweb_archive.model.dictionary import tag_of
from dicomweb_archive.model.uid import is_safe_uid
from dicomweb_archive.web.includefield import add_fields, parse_includefield
from dicomweb_archive.web.responses import JsonObject

if TYPE_CHECKING:
    from dicomweb_archive.web.app import Server

CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
RETRIEVE_URL = "00081190"
#: The largest limit or offset taken (SQLite's integers are 64-bit)
MAX_PAGE_VALUE = 2**63 - 1
#: Tags of the Person Name matching keys, for fuzzy matching of the results
PERSON_TAGS = {"PatientName": "00100010", "ReferringPhysicianName": "00080090"}
_DATE = r"\d{8}"
_TIME = r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"
_LEVEL_KEYS = {
    "study": STUDY_KEYS,
    "series": STUDY_KEYS | SERIES_KEYS,
    "instance": STUDY_KEYS | SERIES_KEYS | INSTANCE_KEYS,
}
_NUMBERS = {"SeriesNumber", "InstanceNumber"}


def search(server: Server, request: Request, level: str, **path: str) -> Response:
    """The matches of a QIDO-RS request at ``level`` (see the module docstring)."""
    params = request.query_params
    filters: dict[str, str] = {}
    ignored: list[str] = []
    for key, value in params.multi_items():
        if key.lower() in CONTROL:
            continue
        keyword = keyword_of(key)
        if keyword in _LEVEL_KEYS[level]:
            filters[keyword] = check_value(keyword, value)
        elif _is_attribute(keyword):
            ignored.append(keyword)
        else:
            raise BadQueryError(
                f"{key} is neither a matching key, a DICOM keyword or tag, nor a QIDO-RS "
                "parameter (limit, offset, includefield, fuzzymatching)"
            )
    limit = _page_value(params, "limit")
    offset = _page_value(params, "offset") or 0
    fuzzy = _fuzzy(params.get("fuzzymatching", "false"))
    fields = parse_includefield(params.getlist("includefield"))
    study = server.uid(path["study"]) if "study" in path else None
    series = server.uid(path["series"]) if "series" in path else None
    fuzzy_names = {k: v for k, v in filters.items() if fuzzy and k in PERSON_TAGS and v}
    exact = {k: v for k, v in filters.items() if k not in fuzzy_names}
    condition = qido_condition(level, exact, study=study, series=series)
    index = server.archive.index
    if fuzzy_names:
        condition &= _fuzzy_narrowing(fuzzy_names)
        found = [item for item in index.search(level, condition) if _fuzzy_match(item, fuzzy_names)]
        found = found[offset : None if limit is None else offset + limit]
    else:
        found = index.search(level, condition, limit=limit, offset=offset)
    base = server.base(request)
    if fields:
        add_fields(server, base, level, found, fields)
    for item in found:
        item[RETRIEVE_URL] = {"vr": "UR", "Value": [base + _retrieve_path(level, item)]}
    response = server.json(request, [dict(sorted(item.items())) for item in found])
    if ignored:
        names = ", ".join(dict.fromkeys(ignored))
        response.headers["Warning"] = (
            f'299 {base}: "The following matching keys are not supported and were ignored: {names}"'
        )
    return response


def check_value(keyword: str, value: str) -> str:
    """``value`` when it is a valid value of matching key ``keyword`` (PS3.4 C.2.2.2), else
    BadQueryError naming the key and the form expected."""
    kind = _LEVEL_KEYS["instance"][keyword].kind
    if value in ("", "*"):  # universal matching (C.2.2.2.3)
        return value
    if keyword == "StudyTime":
        form, pattern = "HHMMSS.FFFFFF or a range of them (from-to, from-, -to)", _TIME
    elif kind == "date":
        form, pattern = "YYYYMMDD or a range of them (from-to, from-, -to)", _DATE
    elif kind == "uid":
        if all(is_safe_uid(u) for u in re.split(r"[\\,]", value)):
            return value  # a stored UID need not be conformant (docs/spec/store-layout.md)
        raise BadQueryError(
            f"{keyword}={value!r}: give UIDs (digits and dots, or what the store accepts as a "
            "UID: letters, digits, '.', '-', '_'), separated by ,"
        )
    elif keyword in _NUMBERS and not re.fullmatch(r"[+-]?\d+", value.strip()):
        raise BadQueryError(f"{keyword}={value!r}: give an integer")
    else:
        return value
    low, dash, high = value.partition("-")
    parts = [low, high] if dash else [low]
    if all(p == "" or re.fullmatch(pattern, p) for p in parts) and any(parts):
        return value
    raise BadQueryError(f"{keyword}={value!r}: give {form}")


def _is_attribute(keyword: str) -> bool:
    return bool(re.fullmatch(r"[0-9A-Fa-f]{8}", keyword)) or tag_of(keyword) is not None


def _page_value(params: Any, name: str) -> int | None:
    if name not in params:
        return None
    text = params[name]
    if not re.fullmatch(r"\d{1,30}", text) or int(text) > MAX_PAGE_VALUE:
        raise BadQueryError(f"{name}={text[:30]!r}: give an integer from 0 to {MAX_PAGE_VALUE}")
    return int(text)


def _fuzzy(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise BadQueryError(f"fuzzymatching={text[:30]!r}: give true or false")
    return text.lower() == "true"


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[\^ ,=]+", name.upper()) if w]


def _fuzzy_narrowing(names: dict[str, str]) -> All:
    """What the index can check of fuzzy matches: each word occurs somewhere in the name."""
    parts: list[Match] = []
    for keyword, value in names.items():
        key = STUDY_KEYS[keyword]
        parts.extend(Match("study", key.column, "person", f"*{w}*") for w in _words(value))
    return All(tuple(parts))


def _fuzzy_match(item: JsonObject, names: dict[str, str]) -> bool:
    """Whether every word of each value begins a word of the item's name (PS3.4
    C.2.2.2.1.1, as the module docstring says)."""
    for keyword, value in names.items():
        values = item.get(PERSON_TAGS[keyword], {}).get("Value") or [{}]
        name = values[0].get("Alphabetic", "") if isinstance(values[0], dict) else str(values[0])
        words = _words(name)
        if not all(any(_begins(w, want) for w in words) for want in _words(value)):
            return False
    return True


def _begins(word: str, wanted: str) -> bool:
    """Whether ``word`` begins with ``wanted``, where ``*`` and ``?`` are wildcards (the
    two-pointer match: time bounded by the product of the lengths, whatever the pattern)."""
    pattern = wanted + "*"
    w = p = 0
    star, resume = -1, 0
    while w < len(word):
        if p < len(pattern) and pattern[p] in ("?", word[w]):
            w, p = w + 1, p + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, resume, p = p, w, p + 1
        elif star >= 0:
            resume += 1
            w, p = resume, star + 1
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def _retrieve_path(level: str, item: JsonObject) -> str:
    def first(tag: str) -> str:
        return str(item.get(tag, {}).get("Value", [""])[0])

    path = f"/studies/{first('0020000D')}"
    if level in ("series", "instance"):
        path += f"/series/{first('0020000E')}"
    if level == "instance":
        path += f"/instances/{first('00080018')}"
    return path
