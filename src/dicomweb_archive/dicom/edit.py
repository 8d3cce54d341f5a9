"""Re-encode the data elements of a file's head with some attributes changed (PS3.5 7).

The head is a file's bytes before its Pixel Data value (the part an update can change).
Every element an edit does not touch keeps its bytes exactly; an edited element is encoded
in the data set's own encoding (explicit or implicit VR, byte order, Specific Character Set)
and the lengths that enclose it (defined-length sequences and items, group lengths) are
recomputed. Elements are added in tag order.

Character sets (PS3.5 6.1): a text value must be encodable in the data set's Specific
Character Set (0008,0005), whose absence means the default repertoire (ASCII). A value that is
not is encoded in UTF-8 with (0008,0005) set to ``ISO_IR 192`` when every text value the data
set holds is ASCII (their bytes, and meaning, are then the same in UTF-8); otherwise the edit
is refused with what to do.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dicomweb_archive.dicom.elements import MAX_SEQUENCE_DEPTH
from dicomweb_archive.dicom.parse import (
    LONG_HEADER_VRS,
    UNDEFINED,
    Element,
    Item,
    ParsedFile,
    parse_p10,
)
from dicomweb_archive.errors import EditRefusedError, UsageError
from dicomweb_archive.model import charset as charset_module
from dicomweb_archive.model.dicom_json import (
    BINARY_VRS,
    CHARSET_VRS,
    NUMBER_FORMATS,
    encodings_of,
)
from dicomweb_archive.model.dictionary import keyword_of
from dicomweb_archive.model.tags import SPECIFIC_CHARACTER_SET

PathStep = tuple[int, int | None]  # (tag, item index within that sequence, or None at the end)


@dataclass(frozen=True, slots=True)
class OriginalAttributes:
    """What an Original Attributes Sequence item records besides the old values."""

    modifying_system: str
    reason: str  # ReasonForTheAttributeModification: CORRECT or COERCE (PS3.3 C.12.1.1.9)
    when: str  # AttributeModificationDateTime (DT)


ORIGINAL_ATTRIBUTES_SEQUENCE = 0x04000561
MODIFIED_ATTRIBUTES_SEQUENCE = 0x04000550


@dataclass(frozen=True, slots=True)
class Edit:
    """Set (``value`` a DICOM string, backslash-separated for several values; ``""`` empties)
    or remove (``value`` None) the element at ``path`` with VR ``vr``."""

    path: tuple[PathStep, ...]
    vr: str
    value: str | None
    #: an encoded data set to append as a new item of the sequence at ``path`` (created when
    #: absent); ``value`` is then ignored
    item: bytes | None = None
    #: code items (Code Value, Coding Scheme Designator, Code Meaning; PS3.3 8.8) to append
    #: to the sequence at ``path`` (created when absent)
    codes: tuple[tuple[str, str, str], ...] = ()


def edit_head(
    head: bytes,
    edits: list[Edit],
    *,
    name: str,
    meta_edits: list[Edit] | None = None,
    clear_preamble: bool = False,
    original_attributes: OriginalAttributes | None = None,
) -> bytes:
    """The head with ``edits`` applied; bytes after the last parsed element are kept as is.

    ``meta_edits`` change the File Meta Information (explicit VR little endian, PS3.10 7.1;
    its group length is recomputed); ``clear_preamble`` zeroes the 128-byte preamble;
    ``original_attributes`` appends an item recording the previous values to the Original
    Attributes Sequence (0400,0561), PS3.3 C.12.1.
    """
    parsed = parse_p10(head, name=name)
    if parsed.inflated is not None:
        raise UsageError(f"{name}: deflated data sets cannot be edited in place")
    charset = next((e for e in parsed.dataset if e.tag == SPECIFIC_CHARACTER_SET), None)
    encodings = encodings_of(head, charset)
    declared = next(
        (e.value for e in edits if e.path == ((SPECIFIC_CHARACTER_SET, None),) and e.value), None
    )
    if declared is not None:  # values are encoded in the character set being set
        encodings = charset_module.python_encodings([t.strip() for t in declared.split("\\")])
    if _needs_utf8(head, parsed, charset=charset, encodings=encodings, edits=edits, name=name):
        encodings = ["utf_8"]
        edits = [*edits, Edit(((SPECIFIC_CHARACTER_SET, None),), "CS", "ISO_IR 192")]
    context = _Context(head, parsed, encodings)
    start = parsed.dataset_offset
    if original_attributes is not None:
        _check_original_depth(parsed, edits, name=name)
        record = context.original_attributes_edit(parsed.dataset, edits, original_attributes)
        edits = [*edits, record]
    body = context.elements(parsed.dataset, edits, depth=0)
    prefix = head[:start]
    if parsed.has_preamble and clear_preamble:
        prefix = b"\0" * 128 + prefix[128:]
    if meta_edits and parsed.meta:
        meta_start = parsed.meta[0].offset
        meta = _Context(head, parsed, ["iso8859"], implicit=False, little=True)
        prefix = prefix[:meta_start] + meta.elements(parsed.meta, meta_edits, depth=0)
    return prefix + body + head[parsed.dataset_end :]


def check_original_attributes(head: bytes, edits: list[Edit], *, name: str) -> None:
    """Refuse, with :class:`EditRefusedError`, ``edits`` whose previous values cannot be
    recorded in the Original Attributes Sequence (see :func:`_check_original_depth`)."""
    _check_original_depth(parse_p10(head, name=name), edits, name=name)


def _check_original_depth(parsed: ParsedFile, edits: list[Edit], *, name: str) -> None:
    """The Original Attributes Sequence item (PS3.3 C.12.1) holds the previous top-level
    elements in a Modified Attributes Sequence item: two sequence levels deeper than they were.
    Past ``MAX_SEQUENCE_DEPTH`` the edited instance could not be read back (``dicom/parse.py``),
    so such an edit is refused before anything changes."""
    touched = {edit.path[0][0] for edit in edits}
    for element in parsed.dataset:
        levels = _nesting(element) if element.tag in touched else 0
        if levels + 2 > MAX_SEQUENCE_DEPTH:
            raise EditRefusedError(
                f"{name}: ({element.tag >> 16:04X},{element.tag & 0xFFFF:04X}) "
                f"{keyword_of(element.tag) or 'private'} nests {levels} sequence levels; with "
                f"--original-attributes its previous value would be {levels + 2} levels deep, "
                f"more than the {MAX_SEQUENCE_DEPTH} an instance may have: edit it without "
                "--original-attributes"
            )


def _nesting(element: Element) -> int:
    """How many sequence levels an element holds (0: it is no sequence)."""
    if element.items is None:
        return 0
    inner = (_nesting(child) for item in element.items for child in item.elements)
    return 1 + max(inner, default=0)


def utf8_switch(head: bytes, edits: list[Edit], *, name: str) -> bool:
    """Whether :func:`edit_head` adds (0008,0005) ``ISO_IR 192`` for ``edits`` (see the module
    docstring); raises :class:`EditRefusedError` when a value fits no character set it may
    use."""
    parsed = parse_p10(head, name=name)
    charset = next((e for e in parsed.dataset if e.tag == SPECIFIC_CHARACTER_SET), None)
    encodings = encodings_of(head, charset)
    return _needs_utf8(head, parsed, charset=charset, encodings=encodings, edits=edits, name=name)


def fits(edit: Edit, *, declared: bool, encodings: list[str]) -> bool:
    """Whether the edit's text value can be written in the data set's character set
    (``declared``: the data set has a Specific Character Set element; without one only ASCII
    may be written)."""
    if not edit.value or edit.vr not in CHARSET_VRS:
        return True
    if not declared:
        return edit.value.isascii()
    try:
        if edit.vr == "PN":
            charset_module.encode_person_name(edit.value, encodings)
        else:
            charset_module.encode(edit.value, encodings)
    except (UnicodeError, LookupError, ValueError):
        return False
    return True


def _needs_utf8(
    head: bytes,
    parsed: ParsedFile,
    *,
    charset: Element | None,
    encodings: list[str],
    edits: list[Edit],
    name: str,
) -> bool:
    """Whether a text value of ``edits`` needs (0008,0005) set to ISO_IR 192 (see the module
    docstring); raises when it cannot be set."""
    if any(edit.path == ((SPECIFIC_CHARACTER_SET, None),) for edit in edits):
        return False  # the character set is being set explicitly
    unfit = [e for e in edits if not fits(e, declared=charset is not None, encodings=encodings)]
    if not unfit:
        return False
    if _all_text_ascii(head, parsed.dataset):
        return True
    tag = unfit[0].path[-1][0]
    declared = (
        head[charset.value_offset : charset.value_offset + charset.length]
        .decode("ascii", "replace")
        .strip()
        if charset is not None
        else "the default repertoire (ASCII)"
    )
    raise EditRefusedError(
        f"{name}: the value of ({tag >> 16:04X},{tag & 0xFFFF:04X}) cannot be encoded in the "
        f"instance's character set, {declared}, and the instance holds text in that character "
        "set already: write the value in that character set, or set SpecificCharacterSet first"
    )


def _all_text_ascii(head: bytes, elements: list[Element]) -> bool:
    """No text value (a character-set VR, PS3.5 6.1.2.3) holds a byte outside ASCII or an
    escape sequence (ISO 2022)."""
    for element in elements:
        if element.items is not None:
            if not all(_all_text_ascii(head, item.elements) for item in element.items):
                return False
        elif element.vr in CHARSET_VRS:
            raw = head[element.value_offset : element.value_offset + element.length]
            if not raw.isascii() or 0x1B in raw:
                return False
    return True


class _Context:
    def __init__(
        self,
        buffer: bytes,
        parsed: ParsedFile,
        encodings: list[str],
        *,
        implicit: bool | None = None,
        little: bool | None = None,
    ) -> None:
        self.buffer = buffer
        self.implicit = parsed.implicit if implicit is None else implicit
        self.little = parsed.little if little is None else little
        self.encodings = encodings
        self.prefix = "<" if self.little else ">"

    def raw(self, element: Element) -> bytes:
        return self.buffer[element.offset : element.end]

    def elements(self, elements: list[Element], edits: list[Edit], *, depth: int) -> bytes:
        """Re-encode a run of elements (a data set or an item) with the edits for it."""
        here = {edit.path[depth][0]: edit for edit in edits if len(edit.path) == depth + 1}
        deeper: dict[int, list[Edit]] = {}
        for edit in edits:
            if len(edit.path) > depth + 1:
                deeper.setdefault(edit.path[depth][0], []).append(edit)
        out: list[tuple[int, bytes]] = []
        present = set()
        changed = {tag >> 16 for tag in here} | {tag >> 16 for tag in deeper}
        for element in elements:
            present.add(element.tag)
            if element.tag in here and self.bodies(here[element.tag]):
                out.append(
                    (element.tag, self.append_items(element, self.bodies(here[element.tag])))
                )
            elif element.tag in here:
                edit = here[element.tag]
                if edit.value is not None:
                    out.append((element.tag, self.encode(element.tag, edit.vr, edit.value)))
            elif element.tag in deeper:
                out.append((element.tag, self.sequence(element, deeper[element.tag], depth)))
            else:
                out.append((element.tag, self.raw(element)))
        for tag, edit in here.items():
            if tag not in present and self.bodies(edit):
                out.append((tag, self.new_sequence(tag, self.bodies(edit))))
            elif tag not in present and edit.value is not None:
                out.append((tag, self.encode(tag, edit.vr, edit.value)))
        for tag in deeper:
            if tag not in present:
                raise UsageError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is not in the data set")
        out.sort(key=lambda pair: pair[0])
        return self.group_lengths(out, changed)

    def group_lengths(self, encoded: list[tuple[int, bytes]], changed: set[int]) -> bytes:
        """Recompute the group length elements (gggg,0000, PS3.5 7.2) of changed groups."""
        sizes: dict[int, int] = {}
        for tag, data in encoded:
            if tag & 0xFFFF:
                sizes[tag >> 16] = sizes.get(tag >> 16, 0) + len(data)
        pieces = []
        for tag, data in encoded:
            if tag & 0xFFFF == 0 and tag >> 16 in changed and len(data) >= 4:
                value = struct.pack(self.prefix + "I", sizes.get(tag >> 16, 0))
                pieces.append(data[:-4] + value)
            else:
                pieces.append(data)
        return b"".join(pieces)

    def sequence(self, element: Element, edits: list[Edit], depth: int) -> bytes:
        """A sequence with edits inside some of its items; lengths recomputed where defined."""
        if element.items is None:
            raise UsageError(
                f"({element.tag >> 16:04X},{element.tag & 0xFFFF:04X}) is not a sequence"
            )
        by_item: dict[int, list[Edit]] = {}
        for edit in edits:
            index = edit.path[depth][1]
            if index is None or index >= len(element.items):
                raise UsageError(f"item {index} of the sequence does not exist")
            by_item.setdefault(index, []).append(edit)
        items = b"".join(
            self.item(item, by_item[index], depth + 1) if index in by_item else self.raw_item(item)
            for index, item in enumerate(element.items)
        )
        header_end = element.value_offset
        header = self.buffer[element.offset : header_end]
        if element.undefined_length:
            delimiter = self.buffer[element.value_offset + element.length : element.end]
            return header + items + delimiter
        return self.with_length(header, len(items)) + items

    def _item_bytes(self, body: bytes) -> bytes:
        """An item of undefined length (PS3.5 7.5.2)."""
        item = struct.pack(self.prefix + "HHI", 0xFFFE, 0xE000, UNDEFINED)
        return item + body + struct.pack(self.prefix + "HHI", 0xFFFE, 0xE00D, 0)

    def bodies(self, edit: Edit) -> list[bytes]:
        """The items an edit appends: its raw item, or its codes encoded here."""
        if edit.item is not None:
            return [edit.item]
        return [
            self.encode(0x00080100, "SH", value)  # CodeValue
            + self.encode(0x00080102, "SH", scheme)  # CodingSchemeDesignator
            + self.encode(0x00080104, "LO", meaning)  # CodeMeaning
            for value, scheme, meaning in edit.codes
        ]

    def new_sequence(self, tag: int, bodies: list[bytes]) -> bytes:
        """A sequence of undefined length holding these items."""
        packed_tag = struct.pack(self.prefix + "HH", tag >> 16, tag & 0xFFFF)
        if self.implicit:
            header = packed_tag + struct.pack(self.prefix + "I", UNDEFINED)
        else:
            header = packed_tag + b"SQ\0\0" + struct.pack(self.prefix + "I", UNDEFINED)
        delimiter = struct.pack(self.prefix + "HHI", 0xFFFE, 0xE0DD, 0)
        return header + b"".join(self._item_bytes(b) for b in bodies) + delimiter

    def append_items(self, element: Element, bodies: list[bytes]) -> bytes:
        """An existing sequence with more items at its end."""
        if element.items is None:
            tag = element.tag
            raise UsageError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is not a sequence here")
        items = b"".join(self.raw_item(item) for item in element.items)
        items += b"".join(self._item_bytes(body) for body in bodies)
        header = self.buffer[element.offset : element.value_offset]
        if element.undefined_length:
            delimiter = self.buffer[element.value_offset + element.length : element.end]
            return header + items + delimiter
        return self.with_length(header, len(items)) + items

    def original_attributes_edit(
        self, elements: list[Element], edits: list[Edit], record: OriginalAttributes
    ) -> Edit:
        """The Original Attributes Sequence item for ``edits`` (PS3.3 C.12.1): the previous
        top-level elements the edits change, as they were encoded, and who/when/why."""
        touched = {edit.path[0][0] for edit in edits}
        old = b"".join(self.raw(e) for e in elements if e.tag in touched)
        modified = self.new_sequence(MODIFIED_ATTRIBUTES_SEQUENCE, [old])
        body = (
            modified
            + self.encode(0x04000562, "DT", record.when)
            + self.encode(0x04000563, "LO", record.modifying_system)
            + self.encode(0x04000564, "LO", "")
            + self.encode(0x04000565, "CS", record.reason)
        )
        return Edit(((ORIGINAL_ATTRIBUTES_SEQUENCE, None),), "SQ", None, body)

    def raw_item(self, item: Item) -> bytes:
        return self.buffer[item.offset : item.end]

    def item(self, item: Item, edits: list[Edit], depth: int) -> bytes:
        body = self.elements(item.elements, edits, depth=depth)
        header = self.buffer[item.offset : item.offset + 8]
        if item.length == UNDEFINED:
            return header + body + self.buffer[item.end - 8 : item.end]
        return header[:4] + struct.pack(self.prefix + "I", len(body)) + body

    def with_length(self, header: bytes, length: int) -> bytes:
        """An element header with its length field replaced."""
        if self.implicit or header[4:6].decode("latin-1") in LONG_HEADER_VRS:
            return header[:-4] + struct.pack(self.prefix + "I", length)
        return header[:-2] + struct.pack(self.prefix + "H", length)

    def encode(self, tag: int, vr: str, value: str) -> bytes:
        """Header and value of an element in this data set's encoding."""
        data = self.value(vr, value)
        packed_tag = struct.pack(self.prefix + "HH", tag >> 16, tag & 0xFFFF)
        if self.implicit:
            return packed_tag + struct.pack(self.prefix + "I", len(data)) + data
        if vr in LONG_HEADER_VRS:
            length = struct.pack(self.prefix + "I", len(data))
            return packed_tag + vr.encode() + b"\0\0" + length + data
        if len(data) > 0xFFFF:
            raise UsageError(f"a {vr} value cannot be longer than 65534 bytes")
        return packed_tag + vr.encode() + struct.pack(self.prefix + "H", len(data)) + data

    def value(self, vr: str, value: str) -> bytes:
        return encode_value(vr, value, self.encodings, little=self.little)


def encode_value(vr: str, value: str, encodings: list[str], *, little: bool) -> bytes:
    """The bytes of a value written as text (``\\`` between values), padded to even length
    (PS3.5 6.2, 7.1.1): numbers packed in the byte order, text in the character set."""
    if value == "":
        return b""
    prefix = "<" if little else ">"
    if vr == "SQ":
        raise UsageError("a sequence can be emptied or removed, not set to a value")
    if vr in NUMBER_FORMATS:
        fmt = prefix + NUMBER_FORMATS[vr]
        numbers = [float(v) if vr in ("FL", "FD") else int(v) for v in value.split("\\")]
        return b"".join(struct.pack(fmt, n) for n in numbers)
    if vr == "AT":
        words = []
        for item in value.split("\\"):
            words += [int(item[:4], 16), int(item[4:], 16)]
        return struct.pack(prefix + f"{len(words)}H", *words)
    if vr in NUMBER_FORMATS or vr in BINARY_VRS:
        raise UsageError(f"values of VR {vr} cannot be edited")
    try:
        if vr == "PN":
            data = charset_module.encode_person_name(value, encodings)
        elif vr in CHARSET_VRS:
            data = charset_module.encode(value, encodings)
        else:
            data = value.encode("ascii")
    except UnicodeError as exc:
        raise EditRefusedError(
            f"the {vr} value given cannot be written in the character set of the data set "
            "(Specific Character Set, or ASCII without one; -v shows the value)",
            phi=f"value {value!r}",
        ) from exc
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return data
