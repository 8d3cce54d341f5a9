"""Byte-level parsing of DICOM Part 10 files into an element tree with exact offsets.

pydicom reads values; we also need to know *where* every header, value, item and delimiter sits,
so that the info record can keep the file as a skeleton (``docs/spec/info-record.md``) and the
file can be rebuilt byte for byte. This module is a small, strict-when-it-must, tolerant-when-it-can
reader of files: the File Meta Information (PS3.10 7.1, always explicit VR little endian), the
transfer syntax, the deflated data set (PS3.5 A.5), files without preamble or meta; the elements
themselves are walked by ``dicom/elements.py`` (PS3.5 7).

Where the top-level data set stops being data elements (zero padding, bytes that are no element
header, a tag that cannot follow the one before), the rest of the file is its **trailing
bytes**: not part of the data set, kept as they are (``docs/spec/info-record.md``). Sequences
nest at most ``elements.MAX_SEQUENCE_DEPTH`` levels deep. Every other failure is an
:class:`~dicomweb_archive.errors.InputError` naming the file and the byte offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dicomweb_archive.dicom.elements import (
    BE_TAG,
    ITEM,
    ITEM_DELIMITER,
    KNOWN_VRS,
    LE_TAG,
    LONG_HEADER_VRS,
    SEQUENCE_DELIMITER,
    UNDEFINED,
    Buffer,
    Element,
    EndsInsideError,
    Item,
    NotAnElementError,
    Walker,
    element_header,
)
from dicomweb_archive.dicom.inflate import inflate
from dicomweb_archive.errors import MalformedElementError, NotDicomError, TruncatedError
from dicomweb_archive.model.syntax import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from dicomweb_archive.model.uid import is_safe_uid

__all__ = [  # the element walker's names, read from here by the modules that parse files
    "ITEM",
    "ITEM_DELIMITER",
    "LONG_HEADER_VRS",
    "SEQUENCE_DELIMITER",
    "UNDEFINED",
    "Buffer",
    "Element",
    "Item",
    "ParsedFile",
    "TopLevel",
    "element_header",
    "parse_dataset",
    "parse_p10",
]


#: Groups no data set element has after the File Meta Information: command (0000) and meta
#: (0002) groups, the odd groups PS3.5 7.1 forbids, and delimiters (FFFE).
_NOT_DATA_SET_GROUPS = frozenset({0x0000, 0x0001, 0x0002, 0x0003, 0x0005, 0x0007, 0xFFFE, 0xFFFF})


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
    where: str = "",
) -> TopLevel:
    """Parse top-level data elements from ``pos``, after an element with tag ``previous``.

    ``base`` is the offset of ``buf[0]`` and ``where`` what it is an offset in (for
    messages: the file, or `` of the inflated data set``); ``partial``: more bytes may follow
    ``buf`` (trailing bytes are then only recognised on a whole element header).
    """
    walker = Walker(buf)
    return _parse_top(
        walker,
        pos,
        implicit=implicit,
        little=little,
        previous=previous,
        name=name,
        base=base,
        partial=partial,
        where=where,
    )


def _parse_top(
    walker: Walker,
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
        left = walker.size - pos
        zeros = buf[pos : pos + 8] == bytes(min(left, 8)) and (left >= 8 or not partial)
        if zeros and last is not None and last >> 16:  # (a tag may start with a zero byte)
            return TopLevel(out, pos, trailing="zero bytes")
        try:
            elements, _ = walker.elements(
                pos, pos + 1, implicit=implicit, little=little, in_item=False
            )
        except (EndsInsideError, NotAnElementError) as exc:
            undecided = partial and walker.size - pos < 12  # the next bytes may tell
            # an element out of order is read (PS3.5 7.1 asks for order; files break it):
            # only when it cannot be read either are its bytes taken for trailing bytes
            ends = partial and isinstance(exc, EndsInsideError)  # more bytes may complete it
            trailing = (
                _trailing_reason(buf, pos, last, implicit=implicit, little=little, order=not ends)
                if last is not None and not undecided
                else None
            )
            if trailing is not None:
                return TopLevel(out, pos, trailing=trailing)
            if isinstance(exc, EndsInsideError) or undecided:
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
    buf: Buffer, pos: int, previous: int, *, implicit: bool, little: bool, order: bool
) -> str | None:
    """Why the bytes at ``pos`` (after an element with tag ``previous``) are no data element
    but trailing bytes; None when they start like one (it is then truncated or damaged).
    ``order``: a tag not above ``previous`` is a reason too."""
    left = len(buf) - pos
    if left < 8:
        return f"{left} bytes, too few for a data element header"
    header = element_header(buf, pos, implicit=implicit, little=little)
    if header is None:
        return "bytes that are no data element header"
    if header.group in _NOT_DATA_SET_GROUPS:
        return f"({header.group:04X},{header.tag & 0xFFFF:04X}) cannot be a data set's element"
    if order and header.tag <= previous:
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
    walker = Walker(buf)
    meta: list[Element] = []
    if size >= pos + 8 and LE_TAG.unpack_from(buf, pos)[0] == 0x0002:
        meta_implicit = not _looks_explicit(buf, pos)
        while pos + 8 <= size and LE_TAG.unpack_from(buf, pos)[0] == 0x0002:
            try:
                elements, pos = walker.elements(
                    pos, pos + 1, implicit=meta_implicit, little=True, in_item=False
                )
            except EndsInsideError as exc:
                raise TruncatedError(
                    f"{name}: the File Meta Information ends inside the element at byte "
                    f"{exc.offset}"
                ) from exc
            except NotAnElementError as exc:
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
    if tsyntax and not is_safe_uid(tsyntax):  # PS3.5 9.1; it names the frames' media type
        warnings.append("the Transfer Syntax UID is not a UID")
        tsyntax = ""
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
        dataset_walker = Walker(inflated)
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
    for tag_struct in (LE_TAG, BE_TAG):
        group, _ = tag_struct.unpack_from(buf, 0)
        if group in (0x0000, 0x0008) and _first_elements_parse(buf, tag_struct is LE_TAG):
            return True
    return False


def _first_elements_parse(buf: Buffer, little: bool) -> bool:
    walker = Walker(buf)
    implicit = not _looks_explicit(buf, 0)
    try:
        elements, _ = walker.elements(
            0, min(len(buf), 256), implicit=implicit, little=little, in_item=False
        )
    except (EndsInsideError, NotAnElementError):
        return False
    tags = [e.tag for e in elements]
    return len(tags) >= 2 and tags == sorted(tags)


def _guess_transfer_syntax(buf: Buffer, pos: int) -> str:
    """Guess the encoding of a data set without a Transfer Syntax UID (as pydicom does)."""
    if pos + 8 > len(buf):
        return IMPLICIT_VR_LITTLE_ENDIAN
    explicit = _looks_explicit(buf, pos)
    group_le = LE_TAG.unpack_from(buf, pos)[0]
    if explicit and group_le > 0x00FF:
        return EXPLICIT_VR_BIG_ENDIAN
    return EXPLICIT_VR_LITTLE_ENDIAN if explicit else IMPLICIT_VR_LITTLE_ENDIAN
