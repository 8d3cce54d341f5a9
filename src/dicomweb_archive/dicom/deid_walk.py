"""Byte-level pieces of de-identification: the File Meta Information rebuilt, a bare data set
edited, and the elements after the head of a file (those after Pixel Data included) walked as
a stream.

- PS3.10 7.1: the File Meta Information is explicit VR little endian, its group length
  (0002,0000) counts the bytes of the group after it.
- PS3.5 7.1, 7.5: element headers, sequences and items of defined or undefined length; PS3.5
  A.4: encapsulated Pixel Data is a sequence of items ended by (FFFE,E0DD).

Pixel Data (7FE0,0010), Float Pixel Data (7FE0,0008) and Double Float Pixel Data (7FE0,0009)
pass through chunk by chunk (never held whole); every other element found in the stream is
collected with its neighbours into a run that the caller edits (a few bytes: elements after
Pixel Data, or values the skeleton keeps as bulk data before it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from dicomweb_archive.dicom.edit import Edit, edit_head, encode_value
from dicomweb_archive.dicom.parse import (
    ITEM_DELIMITER,
    LONG_HEADER_VRS,
    UNDEFINED,
    Element,
)
from dicomweb_archive.errors import TruncatedError

PIXEL_DATA = 0x7FE00010
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})
SEQUENCE_DELIMITER = 0xFFFEE0DD
GROUP_LENGTH = 0x00020000
TRANSFER_SYNTAX_UID = 0x00020010
Chunk = bytes | memoryview


def rebuild_meta(
    head: bytes, meta: list[Element], *, keep: frozenset[int], values: dict[int, str]
) -> bytes:
    """The File Meta Information with only the ``keep`` elements, those in ``values`` set to
    these UI values (added when absent), and its group length recomputed (PS3.10 7.1)."""
    pieces: dict[int, bytes] = {}
    for element in meta:
        if element.tag in keep and element.tag != GROUP_LENGTH:
            pieces[element.tag] = head[element.offset : element.end]
    for tag, value in values.items():
        data = encode_value("UI", value, ["iso8859"], little=True)
        pieces[tag] = struct.pack("<HH2sH", 0x0002, tag & 0xFFFF, b"UI", len(data)) + data
    body = b"".join(pieces[tag] for tag in sorted(pieces))
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def edit_dataset(data: bytes, edits: list[Edit], *, syntax: str, name: str) -> bytes:
    """A bare data set encoded in ``syntax`` (not deflated) with ``edits`` applied."""
    if not edits:
        return data
    prefix = (
        b"\0" * 128
        + b"DICM"
        + rebuild_meta(b"", [], keep=frozenset(), values={TRANSFER_SYNTAX_UID: syntax})
    )
    return edit_head(prefix + data, edits, name=name)[len(prefix) :]


class _Reader:
    """Bytes from a chunk iterator: small reads buffered, long values passed through as views
    of the chunks (never copied whole)."""

    def __init__(self, first: bytes, chunks: Iterator[Chunk], *, little: bool, name: str) -> None:
        self.pending = memoryview(first)
        self.chunks = chunks
        self.prefix = "<" if little else ">"
        self.name = name

    def at_end(self) -> bool:
        while not self.pending:
            chunk = next(self.chunks, None)
            if chunk is None:
                return True
            self.pending = memoryview(chunk)
        return False

    def _fill(self, size: int) -> None:
        """At least ``size`` bytes pending (``size`` is a header's: a few bytes)."""
        while len(self.pending) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                raise TruncatedError(f"{self.name}: the stored data set ends inside an element")
            self.pending = memoryview(bytes(self.pending) + bytes(chunk))

    def take(self, size: int) -> bytes:
        if size <= len(self.pending):
            out = bytes(self.pending[:size])
            self.pending = self.pending[size:]
            return out
        return b"".join(self.stream(size))

    def stream(self, size: int) -> Iterator[Chunk]:
        while size > 0:
            if self.at_end():
                raise TruncatedError(f"{self.name}: the stored data set ends inside an element")
            piece, self.pending = self.pending[:size], self.pending[size:]
            size -= len(piece)
            yield piece

    def rest(self) -> Iterator[Chunk]:
        """Every byte not read yet (a header that could not be completed included)."""
        if self.pending:
            yield self.pending
            self.pending = memoryview(b"")
        yield from self.chunks

    def tag(self) -> int:
        """The next element's tag, not consumed."""
        self._fill(4)
        group, element = struct.unpack(self.prefix + "HH", self.pending[:4])
        return int(group) << 16 | int(element)

    def header(self, *, implicit: bool) -> tuple[int, str, int, bytes]:
        """(tag, VR or "" when implicit, value length, the header's bytes)."""
        self._fill(8)  # the whole header is there before any of it is consumed
        group, element = struct.unpack(self.prefix + "HH", self.pending[:4])
        tag = int(group) << 16 | int(element)
        if implicit or group == 0xFFFE:
            raw = self.take(8)
            return tag, "", int(struct.unpack(self.prefix + "I", raw[4:])[0]), raw
        vr = bytes(self.pending[4:6]).decode("latin-1")
        if vr in LONG_HEADER_VRS:
            self._fill(12)
            raw = self.take(12)
            return tag, vr, int(struct.unpack(self.prefix + "I", raw[8:])[0]), raw
        raw = self.take(8)
        return tag, vr, int(struct.unpack(self.prefix + "H", raw[6:8])[0]), raw


def walk_rest(
    first: bytes,
    chunks: Iterator[Chunk],
    *,
    implicit: bool,
    little: bool,
    edit_run: Callable[[bytes], bytes],
    name: str,
    pixel_data: Callable[[bytes], Iterator[Chunk]] | None = None,
) -> Iterator[Chunk]:
    """The top-level elements of ``first`` and then ``chunks``: pixel data passed through,
    each run of other elements replaced by ``edit_run(run)``. With ``pixel_data``, Pixel Data
    (7FE0,0010) is read through unused and ``pixel_data(its header)`` written instead (its
    frames written anew: cleaned, or as stored)."""
    reader = _Reader(first, chunks, little=little, name=name)
    run = bytearray()
    while not reader.at_end():
        tag = reader.tag()
        if tag not in PIXEL_TAGS:
            run += _element(reader, implicit=implicit)
            continue
        if run:
            yield edit_run(bytes(run))
            run = bytearray()
        if pixel_data is not None and tag == PIXEL_DATA:
            element = _pixel_element(reader, implicit=implicit)
            header = bytes(next(element))
            for _chunk in element:
                pass
            yield from pixel_data(header)
            continue
        try:
            yield from _pixel_element(reader, implicit=implicit)
        except TruncatedError:  # an incomplete instance: its file ends inside Pixel Data
            yield from reader.rest()  # (model/incomplete.py); what was received goes on as is
            return
    if run:
        yield edit_run(bytes(run))


def _pixel_element(reader: _Reader, *, implicit: bool) -> Iterator[Chunk]:
    """One pixel data element, passed through (native, or encapsulated up to its sequence
    delimiter, PS3.5 A.4)."""
    _tag, _vr, length, header = reader.header(implicit=implicit)
    yield header
    if length != UNDEFINED:
        yield from reader.stream(length)
        return
    while True:
        item, _vr, length, header = reader.header(implicit=True)
        yield header
        if item == SEQUENCE_DELIMITER:
            return
        yield from reader.stream(length)


def _element(reader: _Reader, *, implicit: bool) -> bytes:
    """One whole element (nested items of undefined length included), read."""
    _tag, vr, length, header = reader.header(implicit=implicit)
    if length != UNDEFINED:
        return header + reader.take(length)
    inner = implicit or vr == "UN"  # PS3.5 6.2.2: UN of undefined length is implicit VR
    out = bytearray(header)
    while True:
        item, _vr, item_length, item_header = reader.header(implicit=True)
        out += item_header
        if item == SEQUENCE_DELIMITER:
            return bytes(out)
        if item_length != UNDEFINED:
            out += reader.take(item_length)
            continue
        while reader.tag() != ITEM_DELIMITER:
            out += _element(reader, implicit=inner)
        out += reader.take(8)
