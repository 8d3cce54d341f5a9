"""Walking encoded data elements (PS3.5 7): headers, values, sequences, items and
encapsulated items, located by byte offset in a buffer (``dicom/parse.py`` reads files with it).

- explicit VR (PS3.5 7.1.2) and implicit VR (7.1.3) data elements, little and big endian;
- sequences and items of defined and undefined length (PS3.5 7.5), at most
  :data:`MAX_SEQUENCE_DEPTH` levels deep;
- UN values of undefined length, which hold an implicit VR little endian sequence (PS3.5 6.2.2);
- encapsulated pixel data, as the list of its items (PS3.5 A.4).

It never copies values: every offset points into the caller's buffer (``bytes``, ``mmap``).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

from dicomweb_archive.model.dictionary import vr_of
from dicomweb_archive.model.tags import PIXEL_DATA

ITEM = 0xFFFEE000  # (FFFE,E000) Item
ITEM_DELIMITER = 0xFFFEE00D  # (FFFE,E00D) Item Delimitation Item
SEQUENCE_DELIMITER = 0xFFFEE0DD  # (FFFE,E0DD) Sequence Delimitation Item
UNDEFINED = 0xFFFFFFFF
#: Sequences nested deeper than this are refused (PS3.5 7.5 sets no limit; real files nest a
#: few levels). It keeps the DICOM JSON of an instance within the 254 nested arrays and objects
#: that its JSON writer (orjson) accepts: every sequence level is three of them.
MAX_SEQUENCE_DEPTH = 64

#: What the parser reads: file bytes, or a memory map of a large file.
Buffer = bytes | memoryview | mmap.mmap

#: VRs whose explicit-VR header has 2 reserved bytes and a 4-byte length (PS3.5 Table 7.1-1).
LONG_HEADER_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
#: Every VR of PS3.5 Table 6.2-1.
KNOWN_VRS = LONG_HEADER_VRS | frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL", "SS"}
    | {"ST", "TM", "UI", "UL", "US"}
)


LE_TAG = struct.Struct("<HH")
BE_TAG = struct.Struct(">HH")
_LE_U16 = struct.Struct("<H")
_BE_U16 = struct.Struct(">H")
_LE_U32 = struct.Struct("<I")
_BE_U32 = struct.Struct(">I")


@dataclass(slots=True)
class Item:
    """One item of a sequence (PS3.5 7.5): its header offset, its elements, and where it ends."""

    offset: int
    length: int  # UNDEFINED when delimited by (FFFE,E00D)
    elements: list[Element]
    end: int


@dataclass(slots=True)
class Element:
    """One data element, located in the buffer.

    ``vr`` is the VR used to interpret the value: the explicit VR from the file, or for implicit
    VR the dictionary VR (``UN`` when unknown). ``length`` is the value length in bytes; for an
    undefined-length element it is the span up to (not including) its delimiter.
    """

    tag: int
    vr: str
    explicit: bool
    little: bool
    offset: int
    value_offset: int
    length: int
    undefined_length: bool
    end: int
    items: list[Item] | None = None
    fragments: list[tuple[int, int]] | None = None  # (value offset, length) of each item

    @property
    def group(self) -> int:
        return self.tag >> 16

    @property
    def is_private(self) -> bool:
        return bool(self.group & 1)


class EndsInsideError(Exception):
    """The buffer ends inside the element at ``offset`` (the parser words it for users)."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


class NotAnElementError(Exception):
    """Bytes at ``offset`` are no valid element encoding (the parser words it for users)."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(offset, reason)
        self.offset = offset
        self.reason = reason


def implicit_vr(tag: int) -> str:
    """The VR of ``tag`` in an implicit VR data set (PS3.5 7.1.3): dictionary VR, else UN.

    Group lengths are UL and private creators LO (PS3.5 7.2, 7.8.1).
    """
    element = tag & 0xFFFF
    if element == 0:
        return "UL"
    if tag >> 16 & 1:
        return "LO" if 0x10 <= element <= 0xFF else "UN"
    return vr_of(tag) or "UN"


def element_header(buf: Buffer, pos: int, *, implicit: bool, little: bool) -> Element | None:
    """The header of the data element at ``pos`` (its value may lie beyond the buffer).

    Returns None when the buffer ends inside the header itself or the bytes are no header.
    """
    tag_struct = LE_TAG if little else BE_TAG
    if pos + 8 > len(buf):
        return None
    group, elem = tag_struct.unpack_from(buf, pos)
    tag = group << 16 | elem
    u32 = _LE_U32 if little else _BE_U32
    if implicit:
        length = u32.unpack_from(buf, pos + 4)[0]
        return Element(
            tag, implicit_vr(tag), False, little, pos, pos + 8, length, length == UNDEFINED, 0
        )
    vr = bytes(buf[pos + 4 : pos + 6]).decode("latin-1")
    if vr not in KNOWN_VRS:
        return None
    if vr in LONG_HEADER_VRS:
        if pos + 12 > len(buf):
            return None
        length = u32.unpack_from(buf, pos + 8)[0]
        return Element(tag, vr, True, little, pos, pos + 12, length, length == UNDEFINED, 0)
    length = (_LE_U16 if little else _BE_U16).unpack_from(buf, pos + 6)[0]
    return Element(tag, vr, True, little, pos, pos + 8, length, False, 0)


class Walker:
    __slots__ = ("buf", "depth", "size")

    def __init__(self, buf: Buffer) -> None:
        self.buf = buf
        self.size = len(buf)
        self.depth = 0

    def elements(
        self, pos: int, end: int, *, implicit: bool, little: bool, in_item: bool
    ) -> tuple[list[Element], int]:
        """Parse elements from ``pos`` up to ``end`` or an item delimiter (when ``in_item``).

        Returns the elements and the offset just past the last one (the delimiter's offset when
        one stopped the walk).
        """
        buf = self.buf
        tag_struct = LE_TAG if little else BE_TAG
        u16 = _LE_U16 if little else _BE_U16
        u32 = _LE_U32 if little else _BE_U32
        out: list[Element] = []
        while pos < end:
            if pos + 8 > self.size:
                raise EndsInsideError(pos)
            group, elem = tag_struct.unpack_from(buf, pos)
            tag = group << 16 | elem
            if tag == ITEM_DELIMITER and in_item:
                return out, pos
            if group == 0xFFFE:
                raise NotAnElementError(
                    pos, f"unexpected ({group:04X},{elem:04X}) outside a sequence"
                )
            if implicit:
                vr = implicit_vr(tag)
                explicit = False
                length = u32.unpack_from(buf, pos + 4)[0]
                value_offset = pos + 8
            else:
                raw_vr = bytes(buf[pos + 4 : pos + 6])
                vr = raw_vr.decode("latin-1")
                if vr not in KNOWN_VRS:
                    raise NotAnElementError(pos, f"invalid VR {raw_vr!r}")
                explicit = True
                if vr in LONG_HEADER_VRS:
                    if pos + 12 > self.size:
                        raise EndsInsideError(pos)
                    length = u32.unpack_from(buf, pos + 8)[0]
                    value_offset = pos + 12
                else:
                    length = u16.unpack_from(buf, pos + 6)[0]
                    value_offset = pos + 8
            element = Element(
                tag, vr, explicit, little, pos, value_offset, length, length == UNDEFINED, 0
            )
            if length == UNDEFINED:
                self._undefined(element, implicit=implicit, little=little)
            else:
                element.end = value_offset + length
                if element.end > self.size:
                    raise EndsInsideError(pos)
                if vr == "SQ":
                    element.items, _ = self.items(
                        value_offset, element.end, implicit=implicit, little=little
                    )
            out.append(element)
            pos = element.end
        return out, pos

    def _undefined(self, element: Element, *, implicit: bool, little: bool) -> None:
        """Parse an undefined-length value: a sequence or encapsulated pixel data."""
        pos = element.value_offset
        if element.tag == PIXEL_DATA or (element.vr in ("OB", "OW") and not implicit):
            element.fragments, delimiter = self.fragments(pos, little=little)
        else:
            if element.vr == "UN" and not implicit:
                # PS3.5 6.2.2: a UN value of undefined length is an implicit VR LE sequence.
                implicit, little = True, True
            elif element.vr not in ("SQ", "UN"):
                raise NotAnElementError(element.offset, f"undefined length for VR {element.vr}")
            element.items, found = self.items(pos, self.size, implicit=implicit, little=little)
            element.vr = "SQ"
            if found is None:
                raise EndsInsideError(element.offset)
            delimiter = found
        element.length = delimiter - pos
        element.end = delimiter + 8

    def items(
        self, pos: int, end: int, *, implicit: bool, little: bool
    ) -> tuple[list[Item], int | None]:
        """Parse the items of a sequence; returns them and the sequence delimiter offset."""
        if self.depth >= MAX_SEQUENCE_DEPTH:
            raise NotAnElementError(
                pos, f"sequences nest deeper than {MAX_SEQUENCE_DEPTH} levels, the most read"
            )
        self.depth += 1
        try:
            return self._items(pos, end, implicit=implicit, little=little)
        finally:
            self.depth -= 1

    def _items(
        self, pos: int, end: int, *, implicit: bool, little: bool
    ) -> tuple[list[Item], int | None]:
        buf = self.buf
        tag_struct = LE_TAG if little else BE_TAG
        u32 = _LE_U32 if little else _BE_U32
        out: list[Item] = []
        while pos < end:
            if pos + 8 > self.size:
                raise EndsInsideError(pos)
            group, elem = tag_struct.unpack_from(buf, pos)
            tag = group << 16 | elem
            length = u32.unpack_from(buf, pos + 4)[0]
            if tag == SEQUENCE_DELIMITER:
                return out, pos
            if tag != ITEM:
                raise NotAnElementError(pos, f"expected an item, found ({group:04X},{elem:04X})")
            if length == UNDEFINED:
                elements, stop = self.elements(
                    pos + 8, self.size, implicit=implicit, little=little, in_item=True
                )
                if stop + 8 > self.size:
                    raise EndsInsideError(pos)
                item_end = stop + 8
            else:
                # An item longer than its sequence is read up to the sequence's end, as
                # pydicom does; the skeleton keeps the bytes as they are either way.
                item_end = min(pos + 8 + length, end)
                if item_end > self.size:
                    raise EndsInsideError(pos)
                elements, _ = self.elements(
                    pos + 8, item_end, implicit=implicit, little=little, in_item=False
                )
            out.append(Item(pos, length, elements, item_end))
            pos = item_end
        return out, None

    def fragments(self, pos: int, *, little: bool) -> tuple[list[tuple[int, int]], int]:
        """Parse encapsulated items (PS3.5 A.4): (offset, length) pairs and the delimiter."""
        tag_struct = LE_TAG if little else BE_TAG
        u32 = _LE_U32 if little else _BE_U32
        out: list[tuple[int, int]] = []
        while True:
            if pos + 8 > self.size:
                raise EndsInsideError(pos)
            group, elem = tag_struct.unpack_from(self.buf, pos)
            tag = group << 16 | elem
            length = u32.unpack_from(self.buf, pos + 4)[0]
            if tag == SEQUENCE_DELIMITER:
                return out, pos
            if tag != ITEM or length == UNDEFINED:
                raise NotAnElementError(pos, "malformed encapsulated pixel data item")
            if pos + 8 + length > self.size:
                raise EndsInsideError(pos)
            out.append((pos + 8, length))
            pos += 8 + length
