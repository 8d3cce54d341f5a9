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

import base64
import hashlib
import io
import struct
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from dicomweb_archive.dicom.frames import (
    EXTENDED_OFFSET_TABLE,
    PIXEL_DATA_TAGS,
    media_type,
    native_layout,
    starts_codestream,
)
from dicomweb_archive.dicom.parse import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    ITEM,
    NATIVE_TRANSFER_SYNTAXES,
    SEQUENCE_DELIMITER,
    Element,
    ParsedFile,
    element_header,
    parse_dataset,
    parse_p10,
)
from dicomweb_archive.dicom.skeleton import Hole, Segment, build_segments, deflate_segments, literal
from dicomweb_archive.errors import TruncatedError
from dicomweb_archive.model.dicom_json import (
    SWAP_WIDTH,
    JsonContext,
    JsonObject,
    encodings_of,
    resolve_vr,
    swap_bytes,
    to_json_dataset,
    to_json_element,
)

INFO_VERSION = 1
AVAILABLE_TRANSFER_SYNTAX_UID = "00083002"  # (0008,3002) AvailableTransferSyntaxUID
SPECIFIC_CHARACTER_SET = 0x00080005
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_SAMPLES_PER_PIXEL = 0x00280002
_BITS_ALLOCATED = 0x00280100
_NUMBER_OF_FRAMES = 0x00280008
_PIXEL_REPRESENTATION = 0x00280103
_PHOTOMETRIC_INTERPRETATION = 0x00280004
_FIRST_CHUNK = 1 << 16
_FRAMES_PLACEHOLDER = "\0frames"
_BULK_PLACEHOLDER = "\0bulk:"


@dataclass(slots=True, frozen=True)
class InlineLimits:
    """Binary values longer than these go to bulk data (the seed's ``-m`` and ``-M``)."""

    public: int = 131074
    private: int = 64


@dataclass(slots=True, frozen=True)
class InstanceHeader:
    """The DICOM JSON of the elements before Pixel Data (bulk data URIs not yet filled)."""

    metadata: JsonObject


@dataclass(slots=True, frozen=True)
class FramePart:
    """Stored frame ``number`` (1-based): little endian for native data, as received otherwise.

    ``media_type`` is the frame's Content-Type with its transfer-syntax parameter.
    """

    number: int
    data: bytes | memoryview
    sha256: str
    media_type: str


@dataclass(slots=True, frozen=True)
class BulkPart:
    """A bulk-data value (little endian), named by its SHA-256."""

    sha256: str
    data: bytes


@dataclass(slots=True)
class InstanceEnd:
    """The complete metadata and info record; ``stop_reason`` says why reading stopped early."""

    metadata: JsonObject
    info: dict[str, Any]
    stop_reason: str | None = None


Part = InstanceHeader | FramePart | BulkPart | InstanceEnd
UriHook = Callable[[JsonObject], str]
BulkUriHook = Callable[[JsonObject, str], str]


class _Reader:
    """Reads a stream after some bytes already read, hashing and counting every byte."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.sha = hashlib.sha256()
        self.size = 0
        self.pending = b""

    def raw(self, size: int) -> bytes:
        data = self.stream.read(size)
        self.sha.update(data)
        self.size += len(data)
        return data

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes: fewer only at the end of the stream."""
        out = self.pending[:size]
        self.pending = self.pending[size:]
        while len(out) < size:
            data = self.raw(size - len(out))
            if not data:
                break
            out += data
        return out

    def rest(self) -> bytes:
        chunks = [self.pending]
        self.pending = b""
        while data := self.raw(1 << 20):
            chunks.append(data)
        return b"".join(chunks)


@dataclass(slots=True)
class _State:
    """What the decomposition collects besides the parts it yields."""

    limits: InlineLimits
    pixel_representation: int = 0
    bulk: dict[str, int] = field(default_factory=dict)
    frames: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pending_bulk: list[BulkPart] = field(default_factory=list)
    media_type: str = ""


def generate_parts(
    stream: BinaryIO,
    *,
    limits: InlineLimits | None = None,
    frames_uri: UriHook,
    bulk_uri: BulkUriHook,
    name: str = "<stream>",
) -> Generator[Part, None, None]:
    """Decompose a P10 stream into DICOMweb parts (see the module docstring)."""
    reader = _Reader(stream)
    state = _State(limits or InlineLimits())
    parsed, buffer = _read_head(reader, name)
    if parsed.inflated is not None:  # deflated: the data set is in memory already
        reader.pending = b""
        data = parsed.inflated
        inner_reader = _Reader(io.BytesIO())
    else:
        data = buffer
        inner_reader = reader
    top = {e.tag: e for e in parsed.dataset}
    pixel = _pixel_element(parsed, data)
    head_end = pixel.value_offset if pixel is not None else len(data)
    if pixel is not None:
        inner_reader.pending = bytes(data[head_end:])
    head = data[:head_end]
    head_elements = [e for e in parsed.dataset if e.offset < (pixel.offset if pixel else head_end)]
    state.pixel_representation = _us(head, top.get(_PIXEL_REPRESENTATION)) or 0
    encodings = encodings_of(head, top.get(SPECIFIC_CHARACTER_SET))
    metadata, segments = _region(head, head_elements, state, encodings)
    yield InstanceHeader(dict(sorted(metadata.items())))
    yield from _flush_bulk(state)
    stored_ts = parsed.transfer_syntax
    frame_media_type = ""
    stop_reason = None if pixel is not None else parsed.stop_reason
    if pixel is not None:
        pixel_segments, pixel_json, stop_reason, stored_ts = yield from _pixel(
            pixel, inner_reader, head=head, top=top, parsed=parsed, state=state
        )
        segments += pixel_segments
        metadata[f"{pixel.tag:08X}"] = pixel_json
        if state.frames:
            frame_media_type = media_type(stored_ts)
        if stop_reason is None:
            tail = inner_reader.rest()
            tail_elements, _, stop_reason = parse_dataset(
                tail, implicit=parsed.implicit, little=parsed.little
            )
            tail_json, tail_segments = _region(tail, tail_elements, state, encodings)
            metadata.update(tail_json)
            segments += tail_segments
            yield from _flush_bulk(state)
        else:
            segments.append(literal(inner_reader.rest()))
    if parsed.inflated is not None:
        segments = deflate_segments(buffer, parsed.dataset_offset, parsed.inflated, segments)
    if not state.frames:
        stored_ts = parsed.transfer_syntax
    metadata[AVAILABLE_TRANSFER_SYNTAX_UID] = {"vr": "UI", "Value": [stored_ts]}
    metadata = dict(sorted(metadata.items()))
    _fill_uris(metadata, frames_uri(metadata), lambda sha: bulk_uri(metadata, sha))
    if stop_reason:
        state.warnings.append(stop_reason)
    info = {
        "version": INFO_VERSION,
        "study_instance_uid": _uid(metadata, "0020000D"),
        "series_instance_uid": _uid(metadata, "0020000E"),
        "sop_instance_uid": _uid(metadata, "00080018"),
        "original": {
            "sha256": reader.sha.hexdigest(),
            "size": reader.size,
            "transfer_syntax_uid": parsed.transfer_syntax,
            "has_preamble": parsed.has_preamble,
            "has_file_meta": bool(parsed.meta),
        },
        "stored": {"transfer_syntax_uid": stored_ts, "media_type": frame_media_type},
        "frames": state.frames,
        "bulkdata": [{"sha256": sha, "size": size} for sha, size in sorted(state.bulk.items())],
        "skeleton": segments,
        "warnings": [*parsed.warnings, *state.warnings],
    }
    yield InstanceEnd(metadata, info, stop_reason)


def _read_head(reader: _Reader, name: str) -> tuple[ParsedFile, bytes]:
    """Read until the top-level Pixel Data header (or the end) and parse what was read."""
    buffer = b""
    chunk = _FIRST_CHUNK
    while True:
        data = reader.raw(chunk)
        buffer += data
        eof = not data
        try:
            parsed = parse_p10(buffer, name=name)
        except TruncatedError:
            if eof:
                raise
            chunk *= 2
            continue
        if parsed.transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN and not eof:
            buffer += reader.rest()
            return parse_p10(buffer, name=name), buffer
        if eof or _pixel_element(parsed, buffer) is not None:
            return parsed, buffer
        chunk *= 2


def _pixel_element(parsed: ParsedFile, data: bytes) -> Element | None:
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


def _region(
    buffer: bytes, elements: list[Element], state: _State, encodings: list[str]
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
        return _BULK_PLACEHOLDER + sha

    context = JsonContext(buffer, bulk_hook, state.pixel_representation)
    metadata = to_json_dataset(elements, context, encodings=encodings)
    return metadata, build_segments(buffer, holes)


def _flush_bulk(state: _State) -> Iterator[BulkPart]:
    while state.pending_bulk:
        yield state.pending_bulk.pop(0)


PixelResult = tuple[list[Segment], JsonObject, str | None, str]


def _pixel(
    element: Element,
    reader: _Reader,
    *,
    head: bytes,
    top: dict[int, Element],
    parsed: ParsedFile,
    state: _State,
) -> Generator[Part, None, PixelResult]:
    """Read the Pixel Data value, yielding frames; returns segments, JSON, stop reason, TS."""
    frame_count = _is(head, top.get(_NUMBER_OF_FRAMES)) or 1
    vr = resolve_vr(element, state.pixel_representation)
    if element.undefined_length:
        syntax = parsed.transfer_syntax
        state.media_type = media_type(syntax)
        segments, stop = yield from _encapsulated(
            element, reader, head=head, top=top, frame_count=frame_count, state=state
        )
    elif parsed.transfer_syntax in NATIVE_TRANSFER_SYNTAXES or not parsed.meta:
        syntax = EXPLICIT_VR_LITTLE_ENDIAN
        state.media_type = media_type(syntax)
        segments, stop = yield from _native(
            element, reader, head=head, top=top, frame_count=frame_count, state=state
        )
    else:  # defined-length pixel data in a compressed transfer syntax: not frames
        syntax = parsed.transfer_syntax
        value = reader.read(element.length)
        segments = [literal(value)]
        stop = None if len(value) == element.length else "file ends inside Pixel Data"
    if state.frames:
        return segments, {"vr": vr, "BulkDataURI": _FRAMES_PLACEHOLDER}, stop, syntax
    return _unframed(element, segments, stop, parsed, state)


def _unframed(
    element: Element, segments: list[Segment], stop: str | None, parsed: ParsedFile, state: _State
) -> PixelResult:
    """Pixel data no frame could be made of: kept like any other binary value."""
    value = b"".join(base64.b64decode(s["literal"]) for s in segments)
    probe = Element(
        element.tag, element.vr, element.explicit, True, 0, 0, len(value), False, len(value)
    )
    context = JsonContext(value, lambda _e, _p: None, state.pixel_representation)
    json_value = to_json_element(probe, context, encodings=[], path=(element.tag,))
    if len(value) > state.limits.public and stop is None and not element.undefined_length:
        sha = hashlib.sha256(value).hexdigest()
        if sha not in state.bulk:
            state.bulk[sha] = len(value)
            state.pending_bulk.append(BulkPart(sha, value))
        json_value = {"vr": json_value["vr"], "BulkDataURI": _BULK_PLACEHOLDER + sha}
        segments = [{"bulk": sha}]
    return segments, json_value, stop, parsed.transfer_syntax


def _emit_frame(state: _State, data: bytes | memoryview) -> FramePart:
    sha = hashlib.sha256(data).hexdigest()
    state.frames.append({"sha256": sha, "size": len(data)})
    return FramePart(len(state.frames), data, sha, state.media_type)


def _native(
    element: Element,
    reader: _Reader,
    *,
    head: bytes,
    top: dict[int, Element],
    frame_count: int,
    state: _State,
) -> Generator[Part, None, tuple[list[Segment], str | None]]:
    """Native pixel data (PS3.5 8.1.1): one frame read at a time."""
    bits = 32 if element.tag == 0x7FE00008 else 64 if element.tag == 0x7FE00009 else None
    geometry: dict[str, Any] = {
        "rows": _us(head, top.get(_ROWS)) or 0,
        "columns": _us(head, top.get(_COLUMNS)) or 0,
        "samples_per_pixel": _us(head, top.get(_SAMPLES_PER_PIXEL)) or 1,
        "bits_allocated": bits or _us(head, top.get(_BITS_ALLOCATED)) or 0,
        "number_of_frames": frame_count,
        "photometric_interpretation": _text(head, top.get(_PHOTOMETRIC_INTERPRETATION)),
    }
    probe = Element(
        element.tag, element.vr, element.explicit, element.little, 0, 0, element.length, False, 0
    )
    layout = native_layout(probe, **geometry)
    state.warnings += layout.warnings
    if layout.keep_literal or not layout.frames:
        value = reader.read(element.length)
        for frame in layout.frames:
            yield _emit_frame(state, bytes(frame.read(value)))
        stop = None if len(value) == element.length else "file ends inside Pixel Data"
        return [literal(value)], stop
    segments: list[Segment] = []
    remaining = element.length
    for frame in layout.frames:
        size = frame.ranges[0][1]
        data = reader.read(size)
        remaining -= len(data)
        if len(data) < size:
            segments.append(literal(data))
            return segments, "file ends inside Pixel Data"
        stored = swap_bytes(data, frame.swap) if frame.swap > 1 else data
        part = _emit_frame(state, stored)
        yield part
        segment: Segment = {"frame": part.number}
        if frame.swap > 1:
            segment["swap"] = frame.swap
        segments.append(segment)
    if remaining:
        rest = reader.read(remaining)
        segments.append(literal(rest))
        if len(rest) < remaining:
            return segments, "file ends inside Pixel Data"
    return segments, None


def _encapsulated(
    element: Element,
    reader: _Reader,
    *,
    head: bytes,
    top: dict[int, Element],
    frame_count: int,
    state: _State,
) -> Generator[Part, None, tuple[list[Segment], str | None]]:
    """Encapsulated pixel data (PS3.5 A.4): fragments read one at a time, joined per frame.

    Frames are delimited by the Extended Offset Table, else the Basic Offset Table (when either
    has one offset per frame), else: all fragments form the one frame of a single-frame image;
    fragments starting with a codestream marker (JPEG SOI, JPEG 2000 SOC, JP2 signature) start
    frames; otherwise each fragment is a frame (as RLE requires, PS3.5 A.4.2).
    """
    tag_format = "<HHI" if element.little else ">HHI"
    segments: list[Segment] = []
    current: list[bytes] = []
    current_segments: list[Segment] = []
    offsets = _extended_offsets(head, top.get(EXTENDED_OFFSET_TABLE))
    strategy: str | None = None
    frame_starts: set[int] = set()
    position = 0  # offset of the next item from the first item after the offset table

    def flush() -> Iterator[FramePart]:
        if not current:
            return
        part = _emit_frame(state, b"".join(current))
        if len(current) == 1:
            current_segments[-1] = {"frame": part.number}
        else:
            for segment in current_segments:
                if "frame" in segment:
                    segment["frame"] = part.number
        segments.extend(current_segments)
        current.clear()
        current_segments.clear()
        yield part

    first = True
    while True:
        header = reader.read(8)
        if len(header) < 8:
            segments.extend(current_segments)
            segments.append(literal(header))
            return segments, "file ends inside Pixel Data"
        group, elem, length = struct.unpack(tag_format, header)
        tag = group << 16 | elem
        if tag == SEQUENCE_DELIMITER:
            yield from flush()
            segments.append(literal(header))
            return segments, None
        if tag != ITEM:
            yield from flush()
            segments.append(literal(header))
            return segments, "malformed item in encapsulated Pixel Data"
        value = reader.read(length)
        if first:  # the Basic Offset Table
            first = False
            segments.append(literal(header + value))
            if not offsets and len(value) >= 4:
                offsets = list(struct.unpack(f"<{len(value) // 4}I", value[: len(value) // 4 * 4]))
            if len(value) < length:
                return segments, "file ends inside Pixel Data"
            continue
        if strategy is None:
            strategy = _strategy(offsets, frame_count, value)
            frame_starts = set(offsets)
        starts_new = (
            (strategy == "offsets" and position in frame_starts)
            or (strategy == "markers" and starts_codestream(value[:12]))
            or strategy == "each"
        )
        if starts_new:
            yield from flush()
        current_segments.append(literal(header))
        offset_in_frame = sum(len(c) for c in current)
        current_segments.append({"frame": 0, "offset": offset_in_frame, "length": len(value)})
        current.append(value)
        position += 8 + length
        if len(value) < length:
            current_segments[-1] = literal(value)
            current.pop()
            yield from flush()
            return segments, "file ends inside Pixel Data"


def _strategy(offsets: list[int], frame_count: int, first_fragment: bytes) -> str:
    if offsets and len(offsets) == frame_count and offsets == sorted(offsets) and offsets[0] == 0:
        return "offsets"
    if frame_count <= 1:
        return "one"
    if starts_codestream(first_fragment[:12]):
        return "markers"
    return "each"


def _extended_offsets(head: bytes, element: Element | None) -> list[int]:
    if element is None or element.length < 8:
        return []
    count = element.length // 8
    fmt = ("<" if element.little else ">") + f"{count}Q"
    return list(struct.unpack_from(fmt, head, element.value_offset))


def _fill_uris(node: object, frames: str, bulk: Callable[[str], str]) -> None:
    """Replace the placeholders left for bulk-data URIs once the UIDs are known."""
    if isinstance(node, dict):
        uri = node.get("BulkDataURI")
        if isinstance(uri, str):
            if uri == _FRAMES_PLACEHOLDER:
                node["BulkDataURI"] = frames
            elif uri.startswith(_BULK_PLACEHOLDER):
                node["BulkDataURI"] = bulk(uri[len(_BULK_PLACEHOLDER) :])
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


def _us(buffer: bytes, element: Element | None) -> int | None:
    if element is None or element.length < 2:
        return None
    fmt = "<H" if element.little else ">H"
    return int(struct.unpack_from(fmt, buffer, element.value_offset)[0])


def _is(buffer: bytes, element: Element | None) -> int | None:
    if element is None or element.length == 0:
        return None
    text = buffer[element.value_offset : element.value_offset + element.length]
    try:
        return int(text.decode("ascii").split("\\")[0].strip(" \0"))
    except ValueError:
        return None


def _text(buffer: bytes, element: Element | None) -> str:
    if element is None:
        return ""
    raw = buffer[element.value_offset : element.value_offset + element.length]
    return raw.decode("latin-1").strip(" \0")
