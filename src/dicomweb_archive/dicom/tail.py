"""The elements after Pixel Data (the tail) of an edited instance (PS3.5 7.1, 7.5, A.4).

A file may hold an attribute twice: in the head and again after Pixel Data (out of tag order).
pydicom reads the later copy, and so does ingest: the metadata holds the tail copy's value
(``dicom/parts.py``). An edit changes every copy (``docs/spec/update.md``): the head by the
edit steps (``dicom/steps.py``), and in the tail each element of an attribute the steps
changed is replaced by the edited head's element (the same data set: the same transfer syntax
and character set), or removed when the edited head no longer has it.

The tail is found in the stream of bytes after the head without holding the pixel data: the
Pixel Data value (its defined length, or its items up to the sequence delimiter) passes through
as it comes, and only the bytes after it are held (as ingest holds them, ``_read_tail``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from dicomweb_archive.dicom.parse import ITEM, SEQUENCE_DELIMITER, parse_dataset, parse_p10
from dicomweb_archive.dicom.parts import pixel_element

Chunk = bytes | memoryview


class TailSplitter:
    """Passes the Pixel Data value of a stream of the bytes after ``head`` (which ends with the
    Pixel Data element's header, or some bytes of its value) through and holds the bytes after
    it in :attr:`tail` (empty while the value has not ended: a file that ends inside Pixel
    Data, or an instance without Pixel Data)."""

    def __init__(self, head: bytes, *, name: str) -> None:
        parsed = parse_p10(head, name=name)
        pixel = pixel_element(parsed, head)
        self.found = pixel is not None
        #: the tag of the Pixel Data element (0: none)
        self.tag = pixel.tag if pixel is not None else 0
        self.remaining: int | None = None
        if pixel is not None and not pixel.undefined_length:
            self.remaining = pixel.length
        self.item_format = "<HHI" if parsed.little else ">HHI"
        self.tail = bytearray()
        self.ended = False
        self._header = bytearray()  # an item header being assembled across chunks
        self._skip = 0  # bytes of the current item's value still to pass
        if pixel is not None and pixel.value_offset < len(head):
            # the head's literal segments may hold the start of the value (offset table,
            # item headers): it is passed already
            self._value_end(memoryview(head)[pixel.value_offset :])
            if self.ended:  # the whole value, and the tail, are in the head: edited with it
                self.found = False

    def split(self, chunks: Iterable[Chunk], *, through: bool = False) -> Iterator[Chunk]:
        """Yield the Pixel Data value's bytes of ``chunks``; the rest goes to :attr:`tail`
        (and is yielded too with ``through``)."""
        for chunk in chunks:
            if not self.found:
                yield chunk
                continue
            if self.ended:
                self.tail += chunk
                if through:
                    yield chunk
                continue
            view = memoryview(chunk).cast("B")
            end = self._value_end(view)
            if end:
                yield view[:end]
            if self.ended:
                self.tail += view[end:]
                if through and end < len(view):
                    yield view[end:]

    def _value_end(self, view: memoryview) -> int:
        """How much of ``view`` belongs to the Pixel Data value (sets :attr:`ended`)."""
        if self.remaining is not None:  # a defined length (PS3.5 7.1.1)
            take = min(self.remaining, len(view))
            self.remaining -= take
            self.ended = self.remaining == 0
            return take
        position = 0  # items up to the sequence delimiter (PS3.5 A.4)
        while position < len(view):
            if self._skip:
                step = min(self._skip, len(view) - position)
                position += step
                self._skip -= step
                continue
            piece = view[position : position + 8 - len(self._header)]
            self._header += piece
            position += len(piece)
            if len(self._header) < 8:
                break
            group, element, length = struct.unpack(self.item_format, self._header)
            self._header.clear()
            tag = group << 16 | element
            if tag == SEQUENCE_DELIMITER:
                self.ended = True
                break
            if tag != ITEM:  # not items: no tail was read after it at ingest either
                self.found = False
                return len(view)
            self._skip = length
        return position


def changed_copies(
    tail: bytes, *, head: bytes, changed: set[int], name: str, previous: int
) -> bytes:
    """The tail with each top-level element of a ``changed`` attribute replaced by the element
    of the edited ``head`` (removed when ``head`` has none); other bytes as they are.
    ``previous`` is the tag of the Pixel Data element the tail follows."""
    if not tail or not changed:
        return tail
    parsed = parse_p10(head, name=name)
    pixel = pixel_element(parsed, head)
    in_head = {e.tag: e for e in parsed.dataset if pixel is None or e.offset < pixel.offset}
    top = parse_dataset(
        tail, implicit=parsed.implicit, little=parsed.little, previous=previous, name=name
    )
    out = bytearray()
    position = 0
    for element in top.elements:
        if element.tag not in changed:
            continue
        out += tail[position : element.offset]
        replacement = in_head.get(element.tag)
        if replacement is not None:
            out += head[replacement.offset : replacement.end]
        position = element.end
    out += tail[position:]
    return bytes(out)


def generate_edited_rest(
    chunks: Iterable[Chunk], *, original: bytes, head: bytes, changed: set[int], name: str
) -> Iterator[Chunk]:
    """The bytes after the head of an edited instance: ``chunks`` (its received bytes after
    the ``original`` head, without trailing bytes) with the changed copies in the tail
    replaced (:func:`changed_copies`); the pixel data streams through."""
    splitter = TailSplitter(original, name=name)
    yield from splitter.split(chunks)
    if splitter.tail:
        yield changed_copies(
            bytes(splitter.tail),
            head=head,
            changed=changed,
            name=name,
            previous=splitter.tag,
        )
