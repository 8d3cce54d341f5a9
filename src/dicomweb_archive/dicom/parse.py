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

Where the top-level data set stops being data elements (zero padding, bytes that are no element
header, a tag that cannot follow the one before), the rest of the file is its **trailing
bytes**: not part of the data set, kept as they are (``docs/spec/info-record.md``). Sequences
nest at most :data:`MAX_SEQUENCE_DEPTH` levels deep. Every other failure is an
:class:`~dicomweb_archive.errors.InputError` naming the file and the byte offset.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field

from dicomweb_archive.dicom.inflate import inflate
from dicomweb_archive.errors import MalformedElementError, NotDicomError, TruncatedError
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
    #: Why parsing stopped before the end of the data (truncation), if it did.
    stop_reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: Why the bytes from ``dataset_end`` on are trailing bytes, not data elements (None: the
    #: data set runs to the end, or ``stop_reason`` says why it stopped).
    trailing: str | None = None
    #: Deflated files: where the deflate stream ends in the file (bytes after it are trailing).
    deflate_end: int | None = None


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
        if self.depth >= MAX_SEQUENCE_DEPTH:
            raise _MalformedError(
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


@dataclass(slots=True)
class TopLevel:
    """The top-level elements of a data set, where parsing stopped, and why (see
    :attr:`ParsedFile.stop_reason` and :attr:`ParsedFile.trailing`)."""

    elements: list[Element]
    end: int
    stop_reason: str | None = None
    trailing: str | None = None


def parse_dataset(
    buf: Buffer,
    pos: int = 0,
    *,
    implicit: bool,
    little: bool,
    previous: int | None = None,
    name: str = "<buffer>",
    base: int = 0,
    partial: bool = False,
) -> TopLevel:
    """Parse top-level data elements from ``pos``, after an element with tag ``previous``.

    ``base`` is the file offset of ``buf[0]`` (for messages); ``partial``: more bytes may
    follow ``buf`` (trailing bytes are then only recognised on a whole element header).
    """
    walker = _Walker(buf)
    return _parse_top(
        walker,
        pos,
        implicit=implicit,
        little=little,
        previous=previous,
        name=name,
        base=base,
        partial=partial,
    )


def _parse_top(
    walker: _Walker,
    pos: int,
    *,
    implicit: bool,
    little: bool,
    previous: int | None = None,
    name: str,
    base: int = 0,
    partial: bool = False,
    where: str = "",
) -> TopLevel:
    """Parse the top-level data set element by element (PS3.5 7.1).

    Stops cleanly where the bytes end inside an element (``stop_reason``) or stop being data
    elements (``trailing``: the rest are trailing bytes). An element that starts well but
    cannot be read raises :class:`MalformedElementError` (:class:`NotDicomError` for the first
    one).
    """
    out: list[Element] = []
    buf = walker.buf
    while pos < walker.size:
        last = out[-1].tag if out else previous
        if last is not None and last >> 16 and buf[pos : pos + 8] == bytes(8)[: walker.size - pos]:
            return TopLevel(out, pos, trailing="zero bytes")
        try:
            elements, _ = walker.elements(
                pos, pos + 1, implicit=implicit, little=little, in_item=False
            )
        except (_TruncatedError, _MalformedError) as exc:
            undecided = partial and walker.size - pos < 12  # the next bytes may tell
            trailing = (
                _trailing_reason(buf, pos, last, implicit=implicit, little=little)
                if last is not None and not undecided
                else None
            )
            if trailing is not None:
                return TopLevel(out, pos, trailing=trailing)
            if isinstance(exc, _TruncatedError) or undecided:
                return TopLevel(
                    out, pos, f"file is truncated inside the element at byte {base + pos}{where}"
                )
            message = f"the data element at byte {base + pos}{where} cannot be read: {exc.reason}"
            if last is None:
                raise NotDicomError(f"{name}: {message}") from exc
            raise MalformedElementError(f"{name}: {message}") from exc
        if last is not None and last >> 16 and not elements[0].group:
            return TopLevel(out, pos, trailing="a command group (0000) element after the data set")
        out.extend(elements)
        pos = elements[-1].end
    return TopLevel(out, pos)


def _trailing_reason(
    buf: Buffer, pos: int, previous: int, *, implicit: bool, little: bool
) -> str | None:
    """Why the bytes at ``pos`` (after an element with tag ``previous``) are no data element
    but trailing bytes; None when they start like one (it is then truncated or damaged)."""
    left = len(buf) - pos
    if left < 8:
        return f"{left} bytes, too few for a data element header"
    header = element_header(buf, pos, implicit=implicit, little=little)
    if header is None:
        return "bytes that are no data element header"
    if header.group in (0x0000, 0xFFFE):
        return f"({header.group:04X},{header.tag & 0xFFFF:04X}) cannot follow the data set"
    if header.tag <= previous:
        return (
            f"({header.group:04X},{header.tag & 0xFFFF:04X}) cannot follow "
            f"({previous >> 16:04X},{previous & 0xFFFF:04X})"
        )
    return None


def _looks_explicit(buf: Buffer, pos: int) -> bool:
    return bytes(buf[pos + 4 : pos + 6]).decode("latin-1") in KNOWN_VRS


def parse_p10(buf: Buffer, *, name: str = "<buffer>", partial: bool = False) -> ParsedFile:
    """Parse a DICOM file (PS3.10 7.1) or a bare data set into an element tree.

    Accepts files without preamble or without File Meta Information, as pydicom does with
    ``force=True``, but only when the first element looks like DICOM; anything else raises
    :class:`NotDicomError`. ``partial``: ``buf`` is the start of the file; a deflated data set
    is then not inflated (its elements are left empty).

    Raises:
        NotDicomError: the bytes are no DICOM file or data set.
        TruncatedError: the File Meta Information or the deflate stream ends early.
        MalformedElementError: a data element cannot be read (byte offset in the message).
        InflationLimitError: a deflated data set inflates beyond the limit (``inflate.py``).
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
            except _TruncatedError as exc:
                raise TruncatedError(
                    f"{name}: the File Meta Information ends inside the element at byte "
                    f"{exc.offset}"
                ) from exc
            except _MalformedError as exc:
                raise MalformedElementError(
                    f"{name}: the File Meta Information element at byte {exc.offset} cannot "
                    f"be read: {exc.reason}"
                ) from exc
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
    deflate_end: int | None = None
    dataset_walker = walker
    start = pos
    where = ""
    if tsyntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        if partial:
            return ParsedFile(
                buf, has_preamble, meta, pos, [], pos, tsyntax, False, True, warnings=warnings
            )
        result = inflate(memoryview(buf)[pos:], name=name)
        inflated = result.data
        deflate_end = pos + result.deflated_size
        dataset_walker = _Walker(inflated)
        start = 0
        where = " of the inflated data set"
    data = dataset_walker.buf
    if start + 8 <= len(data) and not implicit and not _looks_explicit(data, start):
        # The Transfer Syntax says explicit, the bytes say implicit: read what is there, as
        # pydicom does.
        implicit = True
        warnings.append("data set is implicit VR despite its Transfer Syntax UID")
    top = _parse_top(
        dataset_walker,
        start,
        implicit=implicit,
        little=little,
        name=name,
        partial=partial,
        where=where,
    )
    dataset, end = top.elements, top.end
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
        stop_reason=top.stop_reason,
        warnings=warnings,
        trailing=top.trailing,
        deflate_end=deflate_end,
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
