"""A P10 byte stream -> its DICOMweb parts, with memory bounded by one frame.

:func:`generate_parts` reads a file object (no seeking needed: a pipe will do) and yields, in
order:

1. :class:`InstanceHeader`: the DICOM JSON of every element before Pixel Data (the UIDs that
   place the instance are there), before any frame is read;
2. :class:`BulkPart` and :class:`FramePart` as they are met, one frame in memory at a time;
3. :class:`InstanceEnd`: the complete metadata (PS3.18 F.2) and the info record
   (``docs/spec/info-record.md``) whose skeleton rebuilds the stream byte for byte.

Everything before Pixel Data is read into memory (headers and small values; a large bulk value
there is held once). Native frames are read one at a time, encapsulated fragments one at a time
and joined per frame. The rare layouts whose frames cannot be skeleton holes (single-bit frames
that straddle bytes, big endian OW frames off a word boundary) and deflated files are read
whole. Nothing is written anywhere: the caller decides.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import struct
from collections.abc import Callable, Generator, Iterator
from typing import Any, BinaryIO

from dicomweb_archive.dicom.elements import KNOWN_VRS, LONG_HEADER_VRS
from dicomweb_archive.dicom.frames import PIXEL_DATA_TAGS
from dicomweb_archive.dicom.parse import (
    Element,
    ParsedFile,
    TopLevel,
    element_header,
    parse_dataset,
    parse_p10,
)
from dicomweb_archive.dicom.parts_model import (
    BulkPart,
    FramePart,
    InlineLimits,
    InstanceEnd,
    InstanceHeader,
    Part,
    Reader,
    State,
)
from dicomweb_archive.dicom.pixel_stream import (
    BULK_PLACEHOLDER,
    ENDS_INSIDE,
    FRAMES_PLACEHOLDER,
    incomplete_segment,
    read_pixel_data,
    us_value,
)
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.dicom.skeleton import Hole, Segment, build_segments, deflate_segments, literal
from dicomweb_archive.errors import ArchiveError, TruncatedError, UnreadableInputError
from dicomweb_archive.model.dicom_json import (
    NUMBER_FORMATS,
    SWAP_WIDTH,
    JsonContext,
    JsonObject,
    encodings_of,
    resolve_vr,
    swap_bytes,
    to_json_dataset,
)
from dicomweb_archive.model.incomplete import INCOMPLETE, incomplete_frame
from dicomweb_archive.model.info import INFO_VERSION, InfoRecord, Trailing
from dicomweb_archive.model.syntax import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, media_type
from dicomweb_archive.model.tags import (
    AVAILABLE_TRANSFER_SYNTAX_UID_KEY,
    PIXEL_REPRESENTATION,
    SERIES_INSTANCE_UID_KEY,
    SOP_INSTANCE_UID_KEY,
    SPECIFIC_CHARACTER_SET,
    STUDY_INSTANCE_UID_KEY,
)

__all__ = [
    "BulkPart",
    "FramePart",
    "InlineLimits",
    "InstanceEnd",
    "InstanceHeader",
    "Part",
    "generate_parts",
]

_FIRST_CHUNK = 1 << 16
#: Trailing bytes up to this many are kept in the info record (a literal segment) ...
TRAILING_INLINE = 1 << 16
#: ... more are stored as bulk-data objects of this many bytes each (zero padding: one object).
TRAILING_CHUNK = 1 << 20


UriHook = Callable[[JsonObject], str]
BulkUriHook = Callable[[JsonObject, str], str]


def generate_parts(
    stream: BinaryIO,
    *,
    limits: InlineLimits | None = None,
    frames_uri: UriHook,
    bulk_uri: BulkUriHook,
    name: str = "<stream>",
    sha256: str | None = None,
    recompression: Recompression | None = None,
) -> Generator[Part, None, None]:
    """Decompose a P10 stream into DICOMweb parts (see the module docstring).

    ``sha256``, when the caller already hashed the whole stream, saves hashing it again.
    ``recompression`` recompresses frames as they pass (None: frames as received).

    Raises:
        InputError: the stream cannot be read as a DICOM file; the message names ``name``
            and says where. A failure no other error names is an
            :class:`~dicomweb_archive.errors.UnreadableInputError` (its cause is chained).
    """
    reader = Reader(stream, known_sha256=sha256)
    try:
        yield from _decompose(
            reader,
            State(limits or InlineLimits(), recompression=recompression),
            frames_uri=frames_uri,
            bulk_uri=bulk_uri,
            name=name,
        )
    except (ArchiveError, OSError):  # worded already (the caller words a failed read)
        raise
    except Exception as exc:  # the boundary: no internal exception reaches the user
        where = reader.size - len(reader.pending)
        raise UnreadableInputError(
            f"{name}: cannot be read: {_in_words(exc)}, after byte {where} (an internal error "
            "of dicomweb-archive; --verbose shows it)"
        ) from exc


def _in_words(exc: Exception) -> str:
    """What kind of failure ``exc`` is, in words (never its class name)."""
    if isinstance(exc, RecursionError):
        return "its structure nests too deep to follow"
    if isinstance(exc, MemoryError):
        return "it needs more memory than there is"
    if isinstance(exc, UnicodeError):
        return "text in it cannot be decoded"
    return "bytes in it could not be interpreted"


def _decompose(
    reader: Reader,
    state: State,
    *,
    frames_uri: UriHook,
    bulk_uri: BulkUriHook,
    name: str,
) -> Generator[Part, None, None]:
    parsed, buffer = _read_head(reader, name)
    deflated = parsed.inflated is not None
    if parsed.inflated is not None:  # deflated: the data set is in memory already
        reader.pending = b""
        data: bytes = parsed.inflated
        inner_reader = Reader(io.BytesIO())
    else:
        data = buffer
        inner_reader = reader
    top = {e.tag: e for e in parsed.dataset}
    pixel = pixel_element(parsed, data)
    cut_header = pixel is None and _cut_pixel_header(parsed, data)
    trailing = None if pixel is not None or cut_header else parsed.trailing
    if pixel is not None:
        head_end = pixel.value_offset
    elif trailing is not None or cut_header:
        head_end = parsed.dataset_end
    else:
        head_end = len(data)
    inner_reader.pending = bytes(data[head_end:])
    head = bytes(data[:head_end])
    head_elements = [e for e in parsed.dataset if e.offset < (pixel.offset if pixel else head_end)]
    state.pixel_representation = us_value(head, top.get(PIXEL_REPRESENTATION)) or 0
    encodings = encodings_of(head, top.get(SPECIFIC_CHARACTER_SET))
    metadata, segments = _region(head, head_elements, state, encodings)
    if pixel is None and not cut_header:
        _check_header_whole(parsed, metadata, name)
    yield InstanceHeader(dict(sorted(metadata.items())))
    yield from _flush_bulk(state)
    stored_ts = parsed.transfer_syntax
    frame_media_type = ""
    stop_reason = None if pixel is not None else parsed.stop_reason
    trailing_at = head_end
    if cut_header:  # no byte of the value arrived: the header's bytes are what is not whole
        segments.append(incomplete_segment(state, inner_reader.rest()))
        stop_reason = ENDS_INSIDE
    if pixel is not None:
        pixel_segments, pixel_json, stop_reason, stored_ts = yield from read_pixel_data(
            pixel, inner_reader, head=head, top=top, parsed=parsed, state=state
        )
        segments += pixel_segments
        metadata[f"{pixel.tag:08X}"] = pixel_json
        if state.frames:
            frame_media_type = media_type(stored_ts)
        if stop_reason is None:
            base = (len(data) if deflated else inner_reader.size) - len(inner_reader.pending)
            tail, tail_top = _read_tail(
                inner_reader, parsed, pixel.tag, name=name, base=base, deflated=deflated
            )
            stop_reason, trailing = tail_top.stop_reason, tail_top.trailing
            region = tail if trailing is None else tail[: tail_top.end]
            tail_json, tail_segments = _region(region, tail_top.elements, state, encodings)
            metadata.update(tail_json)
            segments += tail_segments
            yield from _flush_bulk(state)
            inner_reader.pending = bytes(tail[tail_top.end :]) if trailing is not None else b""
            trailing_at = base + tail_top.end
        else:
            segments.append(literal(inner_reader.rest()))
    file_trailing: Trailing | None = None
    if trailing is not None:
        record = yield from _read_trailing(inner_reader, state, trailing_at, trailing)
        if deflated:  # inside the deflate stream: part of the inflated data set's skeleton
            segments += record.segments
        else:
            file_trailing = record
    if parsed.inflated is not None and parsed.deflate_end is not None:
        deflate_end = parsed.deflate_end
        cut = incomplete_frame(segments)
        segments = deflate_segments(
            memoryview(buffer)[:deflate_end], parsed.dataset_offset, parsed.inflated, segments
        )
        if cut is not None and incomplete_frame(segments) is None:  # kept literal, whole
            segments[-1][INCOMPLETE] = cut
        if deflate_end < len(buffer):
            reader.pending = bytes(buffer[deflate_end:])
            file_trailing = yield from _read_trailing(
                reader, state, deflate_end, "bytes after the deflated data set"
            )
    if not state.frames:
        stored_ts = parsed.transfer_syntax
    if stop_reason:
        state.warnings.append(stop_reason)
    info = InfoRecord.from_json(
        {
            "version": INFO_VERSION,
            "study_instance_uid": _uid(metadata, STUDY_INSTANCE_UID_KEY) or "",
            "series_instance_uid": _uid(metadata, SERIES_INSTANCE_UID_KEY) or "",
            "sop_instance_uid": _uid(metadata, SOP_INSTANCE_UID_KEY) or "",
            "original": {
                "sha256": reader.hexdigest(),
                "size": reader.size,
                "transfer_syntax_uid": parsed.transfer_syntax,
                "has_preamble": parsed.has_preamble,
                "has_file_meta": bool(parsed.meta),
            },
            "stored": _stored(state, stored_ts, frame_media_type),
            "frames": state.frames,
            "bulkdata": [{"sha256": sha, "size": size} for sha, size in sorted(state.bulk.items())],
            "skeleton": segments,
            "warnings": [*parsed.warnings, *state.warnings],
        }
    )
    info.trailing = file_trailing
    metadata[AVAILABLE_TRANSFER_SYNTAX_UID_KEY] = {"vr": "UI", "Value": info.stored_syntaxes()}
    metadata = dict(sorted(metadata.items()))
    _fill_uris(metadata, frames_uri(metadata), lambda sha: bulk_uri(metadata, sha))
    info.metadata = metadata
    yield InstanceEnd(metadata, info, stop_reason)


def _read_tail(
    reader: Reader, parsed: ParsedFile, previous: int, *, name: str, base: int, deflated: bool
) -> tuple[bytes, TopLevel]:
    """Read and parse the elements after Pixel Data (``previous``: its tag), up to the end of
    the stream or the start of trailing bytes (which are left unread)."""
    buffer = b""
    chunk = _FIRST_CHUNK
    while True:
        data = reader.read(chunk)
        buffer += data
        eof = len(data) < chunk
        top = parse_dataset(
            buffer,
            implicit=parsed.implicit,
            little=parsed.little,
            previous=previous,
            name=name,
            base=base,
            partial=not eof,
            where=" of the inflated data set" if deflated else "",
        )
        if eof or top.trailing is not None:
            return buffer, top
        chunk *= 2


def _read_trailing(
    reader: Reader, state: State, offset: int, reason: str
) -> Generator[BulkPart, None, Trailing]:
    """Read the trailing bytes (from file offset ``offset`` to the end): one literal segment
    when they are few, else bulk-data segments of :data:`TRAILING_CHUNK` bytes each, yielded
    one at a time (memory bounded by one chunk)."""
    segments: list[Segment] = []
    size = 0
    pieces = _pieces(reader)
    first = next(pieces, b"")
    if len(first) <= TRAILING_INLINE and len(first) < TRAILING_CHUNK:
        segments.append(literal(first))
        size = len(first)
    else:
        for piece in itertools.chain([first], pieces):
            sha = hashlib.sha256(piece).hexdigest()
            if sha not in state.bulk:
                state.bulk[sha] = len(piece)
                yield BulkPart(sha, piece)
            segments.append({"bulk": sha})
            size += len(piece)
    state.warnings.append(
        f"{size} bytes after the last data element (from byte {offset}) are kept as trailing "
        f"bytes: {reason}"
    )
    return Trailing(offset, size, segments)


def _pieces(reader: Reader) -> Iterator[bytes]:
    """The rest of ``reader`` in pieces of :data:`TRAILING_CHUNK` bytes (the last shorter)."""
    while piece := reader.read(TRAILING_CHUNK):
        yield piece
        if len(piece) < TRAILING_CHUNK:
            return


def _stored(state: State, syntax: str, frame_media_type: str) -> dict[str, Any]:
    stored: dict[str, Any] = {"transfer_syntax_uid": syntax, "media_type": frame_media_type}
    recompressor = state.recompressor
    if recompressor is not None and recompressor.pixel is not None and state.frames:
        stored["pixel"] = recompressor.pixel.to_json()
    return stored


def _read_head(reader: Reader, name: str) -> tuple[ParsedFile, bytes]:
    """Read until the top-level Pixel Data header, the start of trailing bytes, or the end,
    and parse what was read (a deflated file is read whole)."""
    buffer = b""
    chunk = _FIRST_CHUNK
    while True:
        data = reader.raw(chunk)
        buffer += data
        eof = not data
        try:
            parsed = parse_p10(buffer, name=name, partial=not eof)
        except TruncatedError:
            if eof:
                raise
            chunk *= 2
            continue
        if parsed.transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN and not eof:
            buffer += reader.rest()
            return parse_p10(buffer, name=name), buffer
        if eof or parsed.trailing is not None or pixel_element(parsed, buffer) is not None:
            return parsed, buffer
        chunk *= 2


def pixel_element(parsed: ParsedFile, data: bytes) -> Element | None:
    """The top-level pixel data element: complete in ``data``, or its header where reading
    stopped."""
    for element in parsed.dataset:
        if element.tag in PIXEL_DATA_TAGS:
            return element
    if parsed.stop_reason is None:
        return None
    header = element_header(
        data, parsed.dataset_end, implicit=parsed.implicit, little=parsed.little
    )
    if header is not None and header.tag in PIXEL_DATA_TAGS:
        return header
    return None


#: the UIDs that place an instance in the store, in the order ingest checks them
_PLACING_UIDS = (
    (STUDY_INSTANCE_UID_KEY, "StudyInstanceUID"),
    (SERIES_INSTANCE_UID_KEY, "SeriesInstanceUID"),
    (SOP_INSTANCE_UID_KEY, "SOPInstanceUID"),
)


def _check_header_whole(parsed: ParsedFile, metadata: JsonObject, name: str) -> None:
    """A data set whose bytes end (or stop being data elements) before the UIDs that place it
    is a file cut short, said so, rather than a file without those UIDs (PS3.10 7.1: a whole
    data set holds them).

    Raises:
        TruncatedError: a UID is missing and the data set ends inside an element, or in a
            few bytes too short for an element's header.
    """
    missing = next(
        (keyword for k, keyword in _PLACING_UIDS if not (metadata.get(k) or {}).get("Value")),
        None,
    )
    if missing is None:
        return
    reason = parsed.stop_reason
    if (
        reason is None
        and parsed.trailing
        and "too few for a data element header" in parsed.trailing
    ):
        reason = f"file is truncated inside the element at byte {parsed.dataset_end}"
    if reason is not None:
        raise TruncatedError(
            f"{name}: the file ends inside its header, before its {missing} ({reason})"
        )


def _cut_pixel_header(parsed: ParsedFile, data: bytes) -> bool:
    """Whether the data set ends inside the header of a top-level pixel data element
    (PS3.5 7.1.2: tag, in explicit VR a VR, then the length): its tag is whole, is (7FE0,0010),
    (7FE0,0008) or (7FE0,0009), follows the last element, and the VR, where it arrived, is one."""
    rest = data[parsed.dataset_end :]
    if len(rest) < 4 or len(rest) >= 12 or not parsed.dataset:
        return False
    tag_format = "<HH" if parsed.little else ">HH"
    group, elem = struct.unpack_from(tag_format, rest)
    tag = group << 16 | elem
    if tag not in PIXEL_DATA_TAGS or tag <= parsed.dataset[-1].tag:
        return False
    if parsed.implicit:
        return len(rest) < 8
    vr = rest[4:6].decode("latin-1")
    return len(rest) < 6 or (vr in KNOWN_VRS and len(rest) < (12 if vr in LONG_HEADER_VRS else 8))


def _region(
    buffer: bytes, elements: list[Element], state: State, encodings: list[str]
) -> tuple[JsonObject, list[Segment]]:
    """JSON and skeleton segments of a run of elements held in ``buffer``."""
    holes: list[Hole] = []

    def bulk_hook(element: Element, _path: tuple[int, ...]) -> str | None:
        limit = state.limits.private if element.is_private else state.limits.public
        if element.length <= limit:
            return None
        vr = resolve_vr(element, state.pixel_representation)
        swap = 1 if element.little or element.fragments is not None else SWAP_WIDTH.get(vr, 1)
        raw = buffer[element.value_offset : element.value_offset + element.length]
        value = swap_bytes(raw, swap) if swap > 1 and len(raw) % swap == 0 else raw
        if len(raw) % swap:
            swap = 1
        sha = hashlib.sha256(value).hexdigest()
        if sha not in state.bulk:
            state.bulk[sha] = len(value)
            state.pending_bulk.append(BulkPart(sha, bytes(value)))
        segment: Segment = {"bulk": sha}
        if swap > 1:
            segment["swap"] = swap
        holes.append(Hole(element.value_offset, element.value_offset + element.length, segment))
        return BULK_PLACEHOLDER + sha

    context = JsonContext(buffer, bulk_hook, state.pixel_representation)
    metadata = to_json_dataset(elements, context, encodings=encodings)
    state.warnings += _partial_numbers(elements, state.pixel_representation)
    return metadata, build_segments(buffer, holes)


def _partial_numbers(elements: list[Element], pixel_representation: int) -> list[str]:
    """Warnings for binary number values whose length is no whole number of values (a US
    value of 1 byte, say: PS3.5 6.2 and 7.1.1 want 2 per value). pydicom reads them; they are
    stored as received (the skeleton keeps their bytes), their metadata holds the whole values
    (``model/dicom_json.py``). No value is repeated (PHI)."""
    warnings = []
    for element in elements:
        for item in element.items or []:
            warnings += _partial_numbers(item.elements, pixel_representation)
        vr = resolve_vr(element, pixel_representation)
        size = struct.calcsize(NUMBER_FORMATS[vr]) if vr in NUMBER_FORMATS else 0
        partial = size and element.length % size and element.vr != "UN"
        if element.items is None and partial:
            tag, length = element.tag, element.length
            warnings.append(
                f"({tag >> 16:04X},{tag & 0xFFFF:04X}): its {vr} value has {length} "
                f"byte{'s' if length != 1 else ''}, not a whole number of {size}-byte values; "
                "kept as received (the metadata holds the whole values)"
            )
    return warnings


def _flush_bulk(state: State) -> Iterator[BulkPart]:
    while state.pending_bulk:
        yield state.pending_bulk.pop(0)


def _fill_uris(node: object, frames: str, bulk: Callable[[str], str]) -> None:
    """Replace the placeholders left for bulk-data URIs once the UIDs are known."""
    if isinstance(node, dict):
        uri = node.get("BulkDataURI")
        if isinstance(uri, str):
            if uri == FRAMES_PLACEHOLDER:
                node["BulkDataURI"] = frames
            elif uri.startswith(BULK_PLACEHOLDER):
                node["BulkDataURI"] = bulk(uri[len(BULK_PLACEHOLDER) :])
        children: Any = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return
    for child in children:
        if isinstance(child, dict | list):
            _fill_uris(child, frames, bulk)


def _uid(metadata: JsonObject, key: str) -> str | None:
    values = metadata.get(key, {}).get("Value")
    return values[0] if values and isinstance(values[0], str) else None


def decompose_head(
    head: bytes, *, limits: InlineLimits, name: str
) -> tuple[JsonObject, list[Segment], list[BulkPart]]:
    """Metadata of the elements before Pixel Data, the head's skeleton segments, and its bulk
    data, exactly as :func:`generate_parts` derives them (bulk-data URIs as placeholders)."""
    _parsed, elements, state, encodings = _head_context(head, limits=limits, name=name)
    metadata, segments = _region(head, elements, state, encodings)
    return metadata, segments, list(state.pending_bulk)


def decompose_tail(
    head: bytes, tail: bytes, *, previous: int, limits: InlineLimits, name: str
) -> JsonObject:
    """Metadata of the elements after Pixel Data (``tail``, after the element of tag
    ``previous``) of a file whose head is ``head``, as :func:`generate_parts` derives them:
    with the head's character set and Pixel Representation (bulk-data URIs as placeholders)."""
    parsed, _elements, state, encodings = _head_context(head, limits=limits, name=name)
    top = parse_dataset(
        tail, implicit=parsed.implicit, little=parsed.little, previous=previous, name=name
    )
    metadata, _segments = _region(tail, top.elements, state, encodings)
    return metadata


def _head_context(
    head: bytes, *, limits: InlineLimits, name: str
) -> tuple[ParsedFile, list[Element], State, list[str]]:
    """A head parsed: its elements before Pixel Data, a reading state with its Pixel
    Representation, and its character set's encodings."""
    parsed = parse_p10(head, name=name)
    pixel = pixel_element(parsed, head)
    end = pixel.offset if pixel is not None else len(head)
    elements = [e for e in parsed.dataset if e.offset < end]
    top = {e.tag: e for e in elements}
    state = State(limits)
    state.pixel_representation = us_value(head, top.get(PIXEL_REPRESENTATION)) or 0
    return parsed, elements, state, encodings_of(head, top.get(SPECIFIC_CHARACTER_SET))


def fill_uris(metadata: JsonObject, *, frames_uri: UriHook, bulk_uri: BulkUriHook) -> None:
    """Replace the bulk-data URI placeholders of ``metadata`` (in place)."""
    _fill_uris(metadata, frames_uri(metadata), lambda sha: bulk_uri(metadata, sha))
