"""The DICOM JSON Model (PS3.18 Annex F.2) from a parsed element tree.

Rules we follow, by PS3.18 section:

- F.2.2: one object per data set, keys are the tag as 8 upper-case hex digits, sorted.
- F.2.3: ``vr`` always present; ``Value`` an array; an element of zero length has no ``Value``.
  An empty component of a multi-valued element is ``null`` (F.2.5).
- F.2.3.1: DS and IS are JSON numbers. A value that is not a valid DS/IS (PS3.5 Table 6.2-1)
  is kept as a JSON string rather than being guessed at, as CP-1861 permits; the exact bytes of
  every value stay in the info record either way.
- F.2.4: PN is an object with ``Alphabetic``, ``Ideographic`` and ``Phonetic`` component groups;
  empty groups are left out.
- F.2.6/F.2.7: binary VRs (OB, OD, OF, OL, OV, OW, UN) as ``InlineBinary`` (base64 of the
  little endian value) or ``BulkDataURI``. AT as an 8-hex-digit string.
- Sequences to any depth; an empty item is ``{}``.

Left out of the JSON (kept byte for byte in the info record): the File Meta Information
(group 0002), group length elements (gggg,0000; retired, PS3.5 7.2) and Data Set Trailing
Padding (FFFC,FFFC). Non-finite FL/FD values (NaN, infinity) cannot be JSON numbers: they are
written as ``null``.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dicomweb_archive.dicom.parse import Buffer, Element
from dicomweb_archive.model import charset
from dicomweb_archive.model.dictionary import vr_of
from dicomweb_archive.model.tags import SPECIFIC_CHARACTER_SET

JsonObject = dict[str, Any]

#: Character-set-sensitive VRs (PS3.5 6.1.2.3).
CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
#: String VRs whose value is a single string with no backslash splitting.
SINGLE_VALUE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
#: String VRs where leading spaces are padding too (PS3.5 Table 6.2-1).
LEADING_SPACE_VRS = frozenset({"AE", "CS", "DS", "IS", "LO", "SH"})
STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC"}
    | {"UI", "UR", "UT"}
)
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: Binary numeric VRs (PS3.5 Table 6.2-1) -> struct format character.
NUMBER_FORMATS = {
    "US": "H",
    "SS": "h",
    "UL": "I",
    "SL": "i",
    "FL": "f",
    "FD": "d",
    "SV": "q",
    "UV": "Q",
}
#: word size -> array type code of that size (C types vary by platform)
_WORD = {array(code).itemsize: code for code in "QLIH"}
#: Byte-swap width of each binary VR (PS3.5 7.3): values are little endian in JSON.
SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}

_DS = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_IS = re.compile(r"[+-]?\d+")
PN_DELIMITERS = {0x5E, 0x3D}  # '^' and '='
TEXT_DELIMITERS = {0x5C}  # '\'
PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
DEFAULT_CHARSET = [charset.DEFAULT]

#: Called for every binary value; returns a BulkDataURI to refer to it, or None to inline it.
BulkHook = Callable[[Element, tuple[int, ...]], str | None]


@dataclass(slots=True)
class JsonContext:
    """What decoding a data set needs besides its elements."""

    buffer: Buffer
    bulk_hook: BulkHook
    pixel_representation: int = 0


def tag_key(tag: int) -> str:
    return f"{tag:08X}"


def resolve_vr(element: Element, pixel_representation: int) -> str:
    """The VR to use in JSON: the explicit VR, or an implicit VR made unambiguous (PS3.5 A.1).

    An explicit UN with a known public dictionary VR is reported with that VR, as pydicom does,
    since PS3.5 6.2.2 lets a receiver decode it as such.
    """
    vr = element.vr
    if vr == "UN" and element.explicit and not element.is_private:
        known = vr_of(element.tag)
        if known is None or " or " in known or known == "SQ":
            return vr
        return known
    if " or " not in vr:
        return vr
    if vr == "US or SS":
        return "SS" if pixel_representation == 1 else "US"
    return "OW"  # OB or OW, US or OW, US or SS or OW: OW in implicit VR (PS3.5 A.1 c)


def to_json_dataset(
    elements: list[Element],
    context: JsonContext,
    *,
    encodings: list[str] | None = None,
    path: tuple[int, ...] = (),
) -> JsonObject:
    """Convert a list of elements (a data set or an item) to a DICOM JSON object."""
    out: JsonObject = {}
    encodings = encodings or DEFAULT_CHARSET
    for element in elements:
        tag = element.tag
        if tag == SPECIFIC_CHARACTER_SET:  # applies to this data set and below
            encodings = _encodings(_raw(context.buffer, element))
        if element.group == 0x0002 or tag & 0xFFFF == 0 or tag == 0xFFFCFFFC:
            continue
        out[tag_key(tag)] = to_json_element(
            element, context, encodings=encodings, path=(*path, tag)
        )
    return out


def to_json_element(
    element: Element, context: JsonContext, *, encodings: list[str], path: tuple[int, ...]
) -> JsonObject:
    """Convert one element to its JSON object (PS3.18 F.2.2)."""
    vr = resolve_vr(element, context.pixel_representation)
    if element.items is not None:
        items = [
            to_json_dataset(item.elements, context, encodings=encodings, path=path)
            for item in element.items
        ]
        return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
    if element.fragments is not None or vr in BINARY_VRS:
        return _binary(element, vr, context, path)
    if element.length == 0:
        return {"vr": vr}
    raw = _raw(context.buffer, element)
    if vr == "UN" or (element.vr == "UN" and vr != "UN" and not element.little):
        return _binary(element, "UN", context, path)
    values: list[Any]
    if vr in NUMBER_FORMATS:
        values = _numbers(raw, vr, little=element.little or element.vr == "UN")
    elif vr == "AT":
        values = _tags(raw, little=element.little or element.vr == "UN")
    elif vr == "PN":
        values = _person_names(raw, encodings)
    elif vr in STRING_VRS:
        values = _strings(raw, vr, encodings)
    else:
        return _binary(element, "UN", context, path)
    if not values or (len(values) == 1 and values[0] is None):
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _raw(buffer: Buffer, element: Element) -> bytes:
    return bytes(buffer[element.value_offset : element.value_offset + element.length])


def encodings_of(buffer: Buffer, element: Element | None) -> list[str]:
    """The Python encodings named by a SpecificCharacterSet element (default when absent)."""
    if element is None:
        return DEFAULT_CHARSET
    return _encodings(_raw(buffer, element))


def _encodings(raw: bytes) -> list[str]:
    terms = [t.strip(" \0") for t in raw.decode("ascii", "replace").split("\\")]
    return charset.python_encodings(terms)


def _decode(raw: bytes, encodings: list[str], delimiters: set[int]) -> str:
    return charset.decode(raw, encodings, delimiters)


def _strings(raw: bytes, vr: str, encodings: list[str]) -> list[Any]:
    charset = vr in CHARSET_VRS
    text = _decode(raw, encodings, TEXT_DELIMITERS) if charset else raw.decode("latin-1")
    if vr in SINGLE_VALUE_TEXT_VRS:
        return [text.rstrip(" \0")]
    out: list[Any] = []
    for part in text.split("\\"):
        value = part.rstrip(" \0")
        if vr in LEADING_SPACE_VRS:
            value = value.lstrip(" ")
        if vr == "DS":
            out.append(_ds(value))
        elif vr == "IS":
            out.append(_is(value))
        else:
            out.append(value if value else None)
    return out


def _ds(text: str) -> float | int | str | None:
    if not text:
        return None
    if _IS.fullmatch(text):
        return int(text)
    if _DS.fullmatch(text):
        number = float(text)
        return number if math.isfinite(number) else text
    return text


def _is(text: str) -> int | str | None:
    if not text:
        return None
    return int(text) if _IS.fullmatch(text) else text


def _person_names(raw: bytes, encodings: list[str]) -> list[Any]:
    text = _decode(raw, encodings, PN_DELIMITERS | TEXT_DELIMITERS)
    out: list[Any] = []
    for value in text.split("\\"):
        groups = value.rstrip(" \0").split("=")
        name = {key: group for key, group in zip(PN_GROUPS, groups, strict=False) if group}
        out.append(name or None)
    return out


def _numbers(raw: bytes, vr: str, *, little: bool) -> list[Any]:
    code = NUMBER_FORMATS[vr]
    size = struct.calcsize(code)
    count = len(raw) // size
    values: list[Any] = list(
        struct.unpack(f"{'<' if little else '>'}{count}{code}", raw[: count * size])
    )
    if vr in ("FL", "FD"):
        return [v if math.isfinite(v) else None for v in values]
    return values


def _tags(raw: bytes, *, little: bool) -> list[Any]:
    count = len(raw) // 4 * 2
    words = struct.unpack(f"{'<' if little else '>'}{count}H", raw[: count * 2])
    return [f"{words[i]:04X}{words[i + 1]:04X}" for i in range(0, len(words), 2)]


def little_endian_bytes(raw: bytes, vr: str, *, little: bool) -> bytes:
    """The value in little endian byte order (PS3.18 F.2.7), swapping by the VR's word size."""
    width = SWAP_WIDTH.get(vr, 1)
    if little or width == 1 or len(raw) % width:
        return raw
    return swap_bytes(raw, width)


def swap_bytes(raw: bytes | memoryview, width: int) -> bytes:
    """Reverse the byte order of every ``width``-byte word (an involution)."""
    words = array(_WORD[width])
    words.frombytes(raw)
    words.byteswap()
    return words.tobytes()


def _binary(element: Element, vr: str, context: JsonContext, path: tuple[int, ...]) -> JsonObject:
    uri = context.bulk_hook(element, path)
    if uri is not None:
        return {"vr": vr, "BulkDataURI": uri}
    if element.length == 0:
        return {"vr": vr}
    raw = _raw(context.buffer, element)
    if element.fragments is None:
        raw = little_endian_bytes(raw, vr, little=element.little)
    return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode("ascii")}
