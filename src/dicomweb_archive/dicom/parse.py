"""Byte-level parsing of DICOM Part 10 files into an element tree with exact offsets.

pydicom reads values; we also need to know *where* every header, value, item and delimiter sits,
so that the info record can keep the file as a skeleton (``docs/spec/info-record.md``) and the
file can be rebuilt byte for byte. This module is a small, strict-when-it-must, tolerant-when-it-can
walker over the encodings of PS3.5 section 7:

- explicit VR (PS3.5 7.1.2) and implicit VR (7.1.3) data elements, little and big endian;
- sequences and items of defined and undefined length (PS3.5 7.5);
- UN values of undefined length, which hold an implicit VR little endian sequence (PS3.5 6.2.2);
- encapsulated pixel data, as the list of its items (PS3.5 A.4);
- the File Meta Information (PS3.10 7.1), which is always explicit VR little endian.

It never copies values: every offset points into the caller's buffer (``bytes``, ``mmap``).
"""

from __future__ import annotations

import mmap
import struct
import zlib
from dataclasses import dataclass, field

from dicomweb_archive.errors import NotDicomError, TruncatedError
from dicomweb_archive.model.dictionary import vr_of
from dicomweb_archive.model.syntax import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from dicomweb_archive.model.tags import PIXEL_DATA

ITEM = 0xFFFEE000  # (FFFE,E000) Item
ITEM_DELIMITER = 0xFFFEE00D  # (FFFE,E00D) Item Delimitation Item
SEQUENCE_DELIMITER = 0xFFFEE0DD  # (FFFE,E0DD) Sequence Delimitation Item
UNDEFINED = 0xFFFFFFFF

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


_LE_TAG = struct.Struct("<HH")
_BE_TAG = struct.Struct(">HH")
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


@dataclass(slots=True)
class ParsedFile:
    """The element tree of one P10 file, with the facts the skeleton needs.

    For deflated files (PS3.5 A.5) ``dataset`` offsets point into ``inflated`` rather than
    into the file buffer.
    """

    buffer: Buffer
    has_preamble: bool
    meta: list[Element]
    dataset_offset: int
    dataset: list[Element]
    dataset_end: int
    transfer_syntax: str
    implicit: bool
    little: bool
    inflated: bytes | None = None
    #: Why parsing stopped before the end of the data (truncation, unparsable bytes), if it did.
    stop_reason: str | None = None
    warnings: list[str] = field(default_factory=list)


class _TruncatedError(Exception):
    """Internal: the buffer ends inside the element at ``offset``."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


class _MalformedError(Exception):
    """Internal: bytes at ``offset`` are not a valid element encoding."""

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
    tag_struct = _LE_TAG if little else _BE_TAG
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


class _Walker:
    __slots__ = ("buf", "size")

    def __init__(self, buf: Buffer) -> None:
        self.buf = buf
        self.size = len(buf)

    def elements(
        self, pos: int, end: int, *, implicit: bool, little: bool, in_item: bool
    ) -> tuple[list[Element], int]:
        """Parse elements from ``pos`` up to ``end`` or an item delimiter (when ``in_item``).

        Returns the elements and the offset just past the last one (the delimiter's offset when
        one stopped the walk).
        """
        buf = self.buf
        tag_struct = _LE_TAG if little else _BE_TAG
        u16 = _LE_U16 if little else _BE_U16
        u32 = _LE_U32 if little else _BE_U32
        out: list[Element] = []
        while pos < end:
            if pos + 8 > self.size:
                raise _TruncatedError(pos)
            group, elem = tag_struct.unpack_from(buf, pos)
            tag = group << 16 | elem
            if tag == ITEM_DELIMITER and in_item:
                return out, pos
            if group == 0xFFFE:
                raise _MalformedError(
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
                    raise _MalformedError(pos, f"invalid VR {raw_vr!r}")
                explicit = True
                if vr in LONG_HEADER_VRS:
                    if pos + 12 > self.size:
                        raise _TruncatedError(pos)
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
                    raise _TruncatedError(pos)
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
                raise _MalformedError(element.offset, f"undefined length for VR {element.vr}")
            element.items, found = self.items(pos, self.size, implicit=implicit, little=little)
            element.vr = "SQ"
            if found is None:
                raise _TruncatedError(element.offset)
            delimiter = found
        element.length = delimiter - pos
        element.end = delimiter + 8

    def items(
        self, pos: int, end: int, *, implicit: bool, little: bool
    ) -> tuple[list[Item], int | None]:
        """Parse the items of a sequence; returns them and the sequence delimiter offset."""
        buf = self.buf
        tag_struct = _LE_TAG if little else _BE_TAG
        u32 = _LE_U32 if little else _BE_U32
        out: list[Item] = []
        while pos < end:
            if pos + 8 > self.size:
                raise _TruncatedError(pos)
            group, elem = tag_struct.unpack_from(buf, pos)
            tag = group << 16 | elem
            length = u32.unpack_from(buf, pos + 4)[0]
            if tag == SEQUENCE_DELIMITER:
                return out, pos
            if tag != ITEM:
                raise _MalformedError(pos, f"expected an item, found ({group:04X},{elem:04X})")
            if length == UNDEFINED:
                elements, stop = self.elements(
                    pos + 8, self.size, implicit=implicit, little=little, in_item=True
                )
                if stop + 8 > self.size:
                    raise _TruncatedError(pos)
                item_end = stop + 8
            else:
                # An item longer than its sequence is read up to the sequence's end, as
                # pydicom does; the skeleton keeps the bytes as they are either way.
                item_end = min(pos + 8 + length, end)
                if item_end > self.size:
                    raise _TruncatedError(pos)
                elements, _ = self.elements(
                    pos + 8, item_end, implicit=implicit, little=little, in_item=False
                )
            out.append(Item(pos, length, elements, item_end))
            pos = item_end
        return out, None

    def fragments(self, pos: int, *, little: bool) -> tuple[list[tuple[int, int]], int]:
        """Parse encapsulated items (PS3.5 A.4): (offset, length) pairs and the delimiter."""
        tag_struct = _LE_TAG if little else _BE_TAG
        u32 = _LE_U32 if little else _BE_U32
        out: list[tuple[int, int]] = []
        while True:
            if pos + 8 > self.size:
                raise _TruncatedError(pos)
            group, elem = tag_struct.unpack_from(self.buf, pos)
            tag = group << 16 | elem
            length = u32.unpack_from(self.buf, pos + 4)[0]
            if tag == SEQUENCE_DELIMITER:
                return out, pos
            if tag != ITEM or length == UNDEFINED:
                raise _MalformedError(pos, "malformed encapsulated pixel data item")
            if pos + 8 + length > self.size:
                raise _TruncatedError(pos)
            out.append((pos + 8, length))
            pos += 8 + length


def parse_dataset(
    buf: Buffer, pos: int = 0, *, implicit: bool, little: bool
) -> tuple[list[Element], int, str | None]:
    """Parse top-level data elements from ``pos``: (elements, where parsing stopped, why)."""
    return _parse_top(_Walker(buf), pos, implicit=implicit, little=little)


def _parse_top(
    walker: _Walker, pos: int, *, implicit: bool, little: bool
) -> tuple[list[Element], int, str | None]:
    """Parse the top-level data set element by element.

    Stops cleanly where the bytes end inside an element or stop being data elements; the
    reason is returned so that the caller keeps the rest as trailing bytes.
    """
    out: list[Element] = []
    while pos < walker.size:
        try:
            elements, _ = walker.elements(
                pos, pos + 1, implicit=implicit, little=little, in_item=False
            )
        except _TruncatedError:
            return out, pos, f"file is truncated inside the element at byte {pos}"
        except _MalformedError as exc:
            if not out:
                raise
            return out, pos, f"unparsable bytes from byte {pos}: {exc.reason}"
        out.extend(elements)
        pos = elements[-1].end
    return out, pos, None


def _looks_explicit(buf: Buffer, pos: int) -> bool:
    return bytes(buf[pos + 4 : pos + 6]).decode("latin-1") in KNOWN_VRS


def parse_p10(buf: Buffer, *, name: str = "<buffer>") -> ParsedFile:
    """Parse a DICOM file (PS3.10 7.1) or a bare data set into an element tree.

    Accepts files without preamble or without File Meta Information, as pydicom does with
    ``force=True``, but only when the first element looks like DICOM; anything else raises
    :class:`NotDicomError`.
    """
    size = len(buf)
    has_preamble = size >= 132 and bytes(buf[128:132]) == b"DICM"
    pos = 132 if has_preamble else 0
    walker = _Walker(buf)
    meta: list[Element] = []
    if size >= pos + 8 and _LE_TAG.unpack_from(buf, pos)[0] == 0x0002:
        meta_implicit = not _looks_explicit(buf, pos)
        while pos + 8 <= size and _LE_TAG.unpack_from(buf, pos)[0] == 0x0002:
            try:
                elements, pos = walker.elements(
                    pos, pos + 1, implicit=meta_implicit, little=True, in_item=False
                )
            except (_TruncatedError, _MalformedError) as exc:
                raise TruncatedError(f"{name}: the File Meta Information is damaged") from exc
            meta.extend(elements)
    elif not has_preamble and not _plausible_bare_dataset(buf):
        raise NotDicomError(f"{name}: not a DICOM file (no 'DICM' prefix, no DICOM data set)")

    tsyntax = ""
    for element in meta:
        if element.tag == 0x00020010:  # TransferSyntaxUID
            raw = bytes(buf[element.value_offset : element.value_offset + element.length])
            tsyntax = raw.decode("ascii", "replace").rstrip("\0 ")
    warnings: list[str] = []
    if not tsyntax:
        tsyntax = _guess_transfer_syntax(buf, pos)
        warnings.append(f"no Transfer Syntax UID; read as {tsyntax}")
    little = tsyntax != EXPLICIT_VR_BIG_ENDIAN
    implicit = tsyntax == IMPLICIT_VR_LITTLE_ENDIAN

    inflated: bytes | None = None
    dataset_walker = walker
    start = pos
    if tsyntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        try:
            inflated = zlib.decompress(bytes(buf[pos:]), -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise TruncatedError(f"{name}: the deflated data set cannot be inflated") from exc
        dataset_walker = _Walker(inflated)
        start = 0
    data = dataset_walker.buf
    if start + 8 <= len(data) and not implicit and not _looks_explicit(data, start):
        # The Transfer Syntax says explicit, the bytes say implicit: read what is there, as
        # pydicom does.
        implicit = True
        warnings.append("data set is implicit VR despite its Transfer Syntax UID")
    try:
        dataset, end, stop_reason = _parse_top(
            dataset_walker, start, implicit=implicit, little=little
        )
    except _MalformedError as exc:
        raise NotDicomError(
            f"{name}: malformed data element at byte {exc.offset}: {exc.reason}"
        ) from exc
    if not dataset and not meta:
        raise NotDicomError(f"{name}: not a DICOM file (no data elements)")
    return ParsedFile(
        buffer=buf,
        has_preamble=has_preamble,
        meta=meta,
        dataset_offset=pos,
        dataset=dataset,
        dataset_end=end,
        transfer_syntax=tsyntax,
        implicit=implicit,
        little=little,
        inflated=inflated,
        stop_reason=stop_reason,
        warnings=warnings,
    )


def _plausible_bare_dataset(buf: Buffer) -> bool:
    """A data set without preamble starts with a low group number and sane first elements."""
    if len(buf) < 16:
        return False
    for tag_struct in (_LE_TAG, _BE_TAG):
        group, _ = tag_struct.unpack_from(buf, 0)
        if group in (0x0000, 0x0008) and _first_elements_parse(buf, tag_struct is _LE_TAG):
            return True
    return False


def _first_elements_parse(buf: Buffer, little: bool) -> bool:
    walker = _Walker(buf)
    implicit = not _looks_explicit(buf, 0)
    try:
        elements, _ = walker.elements(
            0, min(len(buf), 256), implicit=implicit, little=little, in_item=False
        )
    except (_TruncatedError, _MalformedError):
        return False
    tags = [e.tag for e in elements]
    return len(tags) >= 2 and tags == sorted(tags)


def _guess_transfer_syntax(buf: Buffer, pos: int) -> str:
    """Guess the encoding of a data set without a Transfer Syntax UID (as pydicom does)."""
    if pos + 8 > len(buf):
        return IMPLICIT_VR_LITTLE_ENDIAN
    explicit = _looks_explicit(buf, pos)
    group_le = _LE_TAG.unpack_from(buf, pos)[0]
    if explicit and group_le > 0x00FF:
        return EXPLICIT_VR_BIG_ENDIAN
    return EXPLICIT_VR_LITTLE_ENDIAN if explicit else IMPLICIT_VR_LITTLE_ENDIAN
