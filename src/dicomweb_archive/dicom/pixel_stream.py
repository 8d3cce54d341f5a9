"""Reading the top-level Pixel Data value from a stream, one frame at a time (PS3.5 8.1.1, A.4).

Native frames are read one at a time; encapsulated fragments one at a time and joined per frame.
Each reader returns the skeleton segments of the value and yields the frames.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from dicomweb_archive.dicom.frames import EXTENDED_OFFSET_TABLE, native_layout, starts_codestream
from dicomweb_archive.dicom.parse import (
    ITEM,
    SEQUENCE_DELIMITER,
    Element,
    ParsedFile,
)
from dicomweb_archive.dicom.parts_model import BulkPart, FramePart, Part, Reader, State
from dicomweb_archive.dicom.skeleton import Segment, literal
from dicomweb_archive.model.dicom_json import (
    JsonContext,
    JsonObject,
    resolve_vr,
    swap_bytes,
    to_json_element,
)
from dicomweb_archive.model.incomplete import INCOMPLETE
from dicomweb_archive.model.pixel import PixelDescription
from dicomweb_archive.model.syntax import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_PIXEL_DATA,
    RLE_LOSSLESS,
    media_type,
)

if TYPE_CHECKING:
    from dicomweb_archive.dicom.recompress import FrameRecompressor, Outcome

FRAMES_PLACEHOLDER = "\0frames"
BULK_PLACEHOLDER = "\0bulk:"
NUMBER_OF_FRAMES = 0x00280008
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_SAMPLES_PER_PIXEL = 0x00280002
_BITS_ALLOCATED = 0x00280100
_PHOTOMETRIC_INTERPRETATION = 0x00280004
_PLANAR_CONFIGURATION = 0x00280006
_BITS_STORED = 0x00280101
PIXEL_DATA = 0x7FE00010
#: why reading stopped, for a file that ends inside Pixel Data
ENDS_INSIDE = "file ends inside Pixel Data"

PixelResult = tuple[list[Segment], JsonObject, str | None, str]
#: A recompressed frame: received SHA-256, stored SHA-256, outcome.
Recompressed = tuple[str, str, "Outcome"]
#: Threads recompressing the frames of multi-frame instances, shared by every reader (two
#: cores, as ingest plans for); a single-frame instance is recompressed by its reader.
FRAME_THREADS = 2
#: Frames of one instance being recompressed beyond the one being written, at most: bounds
#: memory to a few frames while both cores work on one instance.
FRAME_LOOKAHEAD = 2
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def read_pixel_data(
    element: Element,
    reader: Reader,
    *,
    head: bytes,
    top: dict[int, Element],
    parsed: ParsedFile,
    state: State,
) -> Generator[Part, None, PixelResult]:
    """Read the Pixel Data value, yielding frames; returns segments, JSON, stop reason, TS.

    With ``state.recompression``, frames are recompressed as they pass
    (:mod:`dicomweb_archive.dicom.recompress`); frames of a compressed original that were
    recompressed can no longer fill the skeleton's fragment segments, which are then replaced
    by one ``stored_frames`` segment (``docs/spec/info-record.md``).
    """
    frame_count = is_value(head, top.get(NUMBER_OF_FRAMES)) or 1
    vr = resolve_vr(element, state.pixel_representation)
    native = False
    if element.undefined_length:
        syntax = parsed.transfer_syntax
        state.media_type = media_type(syntax)
        _start_recompression(state, element, head, top, parsed, native=False)
        state.parallel = frame_count > 1 and _recompressing(state)
        segments, stop = yield from _encapsulated(
            element,
            reader,
            head=head,
            top=top,
            frame_count=frame_count,
            state=state,
            one_fragment_frames=syntax == RLE_LOSSLESS,
        )
        yield from _ready(state, everything=True)
    elif parsed.transfer_syntax in NATIVE_PIXEL_DATA or not parsed.meta:
        syntax = EXPLICIT_VR_LITTLE_ENDIAN
        native = True
        state.media_type = media_type(syntax)
        _start_recompression(state, element, head, top, parsed, native=True)
        state.parallel = frame_count > 1 and _recompressing(state)
        segments, stop = yield from _native(
            element, reader, head=head, top=top, frame_count=frame_count, state=state
        )
        yield from _ready(state, everything=True)
    else:  # defined-length pixel data in a compressed transfer syntax: not frames
        syntax = parsed.transfer_syntax
        value = reader.read(element.length)
        stop = None if len(value) == element.length else ENDS_INSIDE
        segments = [literal(value) if stop is None else incomplete_segment(state, value)]
    while state.pending_bulk:  # the incomplete segment's bytes
        yield state.pending_bulk.pop(0)
    if not state.frames:
        return _unframed(element, segments, stop, parsed, state)
    if state.recompressor is not None:
        syntax = _finish_recompression(state, state.recompressor)
        if not native and stop is None and any(_gone(f) for f in state.frames):
            segments = [{"stored_frames": len(state.frames)}, *segments[-1:]]
    return segments, {"vr": vr, "BulkDataURI": FRAMES_PLACEHOLDER}, stop, syntax


def _recompressing(state: State) -> bool:
    return state.recompressor is not None and state.recompressor.active


def _gone(frame: dict[str, Any]) -> bool:
    """A frame whose received codestream the store no longer holds."""
    source = frame.get("source")
    return source is not None and "bulk" not in source


def _start_recompression(
    state: State,
    element: Element,
    head: bytes,
    top: dict[int, Element],
    parsed: ParsedFile,
    *,
    native: bool,
) -> None:
    if state.recompression is None or element.tag != PIXEL_DATA:
        return
    pixel = _pixel_description(element, head, top, state)
    from dicomweb_archive.dicom.recompress import (  # noqa: PLC0415 - numpy and the codecs,
        FrameRecompressor,  # imported only by a run that recompresses
    )

    recompressor = FrameRecompressor(
        state.recompression, parsed.transfer_syntax, pixel, native=native
    )
    if recompressor.target is not None:
        state.recompressor = recompressor


def _pixel_description(
    element: Element, head: bytes, top: dict[int, Element], state: State
) -> PixelDescription:
    """The Image Pixel Module values of the head (PS3.3 C.7.6.3); float and double pixel data
    (7FE0,0008 and 7FE0,0009) have 32 and 64 bits whatever Bits Allocated says."""
    floats = {0x7FE00008: 32, 0x7FE00009: 64}
    bits_allocated = floats.get(element.tag) or us_value(head, top.get(_BITS_ALLOCATED)) or 0
    return PixelDescription(
        rows=us_value(head, top.get(_ROWS)) or 0,
        columns=us_value(head, top.get(_COLUMNS)) or 0,
        samples_per_pixel=us_value(head, top.get(_SAMPLES_PER_PIXEL)) or 1,
        bits_allocated=bits_allocated,
        bits_stored=us_value(head, top.get(_BITS_STORED)) or bits_allocated,
        pixel_representation=state.pixel_representation,
        photometric_interpretation=text_value(head, top.get(_PHOTOMETRIC_INTERPRETATION)),
        planar_configuration=us_value(head, top.get(_PLANAR_CONFIGURATION)) or 0,
    )


#: the words of the note on frames kept as received instead of recompressed (the instance is
#: stored as sent: ``ops/receive.py`` gives it no Warning Reason)
KEPT_AS_RECEIVED = "kept as received, not recompressed to"


def _finish_recompression(state: State, recompressor: FrameRecompressor) -> str:
    """Say which frames were kept and why; returns the transfer syntax of the first frame."""
    label = recompressor.label
    if recompressor.reason is not None:
        state.warnings.append(f"frames {KEPT_AS_RECEIVED} {label}: {recompressor.reason}")
    for reason, numbers in state.kept.items():
        which = ", ".join(str(n) for n in numbers[:10]) + (" ..." if len(numbers) > 10 else "")
        state.warnings.append(f"frame(s) {which} {KEPT_AS_RECEIVED} {label}: {reason}")
    return str(state.frames[0]["transfer_syntax_uid"])


def _unframed(
    element: Element, segments: list[Segment], stop: str | None, parsed: ParsedFile, state: State
) -> PixelResult:
    """Pixel data no frame could be made of: kept like any other binary value (the received
    bytes of a file that ends inside it: as its incomplete segment says)."""
    cut = [s for s in segments if "bulk" in s]
    if cut:
        vr = resolve_vr(element, state.pixel_representation)
        return (
            segments,
            {"vr": vr, "BulkDataURI": BULK_PLACEHOLDER + cut[0]["bulk"]},
            stop,
            parsed.transfer_syntax,
        )
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
        json_value = {"vr": json_value["vr"], "BulkDataURI": BULK_PLACEHOLDER + sha}
        segments = [{"bulk": sha}]
    return segments, json_value, stop, parsed.transfer_syntax


def incomplete_segment(state: State, data: bytes) -> Segment:
    """The received bytes after the whole frames of a file that ends inside Pixel Data, marked
    with the number of the first frame that is not whole (``model/incomplete.py``): kept in
    the skeleton, or as bulk data when longer than the public inline limit."""
    number = len(state.frames) + 1
    if len(data) <= state.limits.public:
        return {**literal(data), INCOMPLETE: number}
    sha = hashlib.sha256(data).hexdigest()
    if sha not in state.bulk:
        state.bulk[sha] = len(data)
        state.pending_bulk.append(BulkPart(sha, data))
    return {"bulk": sha, INCOMPLETE: number}


def _emit_frame(state: State, data: bytes | memoryview) -> int:
    """Take the next frame; returns its number. The part is yielded by :func:`_ready`, in
    order: at once, or (frames of a multi-frame instance being recompressed) from the shared
    frame pool, at most :data:`FRAME_LOOKAHEAD` frames ahead."""
    number = len(state.frames) + 1
    state.frames.append({})  # filled in when the frame is done
    recompressor = state.recompressor
    if recompressor is None:
        sha = hashlib.sha256(data).hexdigest()
        state.frames[-1] = {"sha256": sha, "size": len(data)}
        state.done.append(FramePart(number, data, sha, state.media_type))
    elif state.parallel:
        state.in_flight.append((number, _frame_pool().submit(_recompress, recompressor, data)))
    else:
        state.done.append(_finish_frame(state, number, _recompress(recompressor, data)))
    return number


def _recompress(recompressor: FrameRecompressor, data: bytes | memoryview) -> Recompressed:
    sha = hashlib.sha256(data).hexdigest()
    outcome = recompressor.frame(data, sha)
    stored_sha = sha if outcome.data is data else hashlib.sha256(outcome.data).hexdigest()
    return sha, stored_sha, outcome


def _finish_frame(state: State, number: int, result: Recompressed) -> FramePart:
    """Record a recompressed (or kept) frame; a received frame to keep (lossy target,
    ``keep_originals``) goes to bulk data."""
    sha, stored_sha, outcome = result
    if outcome.note is not None:
        state.kept.setdefault(outcome.note, []).append(number)
    if outcome.original is not None and sha not in state.bulk:
        state.bulk[sha] = len(outcome.original)
        state.pending_bulk.append(BulkPart(sha, bytes(outcome.original)))
    state.frames[number - 1] = {"sha256": stored_sha, "size": len(outcome.data), **outcome.record}
    return FramePart(number, outcome.data, stored_sha, outcome.media_type)


def _ready(state: State, *, everything: bool = False) -> Iterator[Part]:
    """Frames that are done, in order (each followed by its kept original, if any); with
    ``everything``, wait for all of them."""
    while state.done or state.in_flight:
        if not state.done:
            number, future = state.in_flight[0]
            if not (everything or len(state.in_flight) > FRAME_LOOKAHEAD or future.done()):
                return
            state.in_flight.popleft()
            part = _finish_frame(state, number, future.result())
        else:
            part = state.done.popleft()
        yield part
        while state.pending_bulk:
            yield state.pending_bulk.pop(0)


def _frame_pool() -> ThreadPoolExecutor:
    """The threads that recompress frames of multi-frame instances (shared by all readers)."""
    global _POOL  # noqa: PLW0603 - one pool per process, made on first use
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=FRAME_THREADS, thread_name_prefix="frames")
        return _POOL


def _native(
    element: Element,
    reader: Reader,
    *,
    head: bytes,
    top: dict[int, Element],
    frame_count: int,
    state: State,
) -> Generator[Part, None, tuple[list[Segment], str | None]]:
    """Native pixel data (PS3.5 8.1.1): one frame read at a time."""
    pixel = _pixel_description(element, head, top, state)
    geometry: dict[str, Any] = {
        "rows": pixel.rows,
        "columns": pixel.columns,
        "samples_per_pixel": pixel.samples_per_pixel,
        "bits_allocated": pixel.bits_allocated,
        "number_of_frames": frame_count,
        "photometric_interpretation": pixel.photometric_interpretation,
    }
    probe = Element(
        element.tag, element.vr, element.explicit, element.little, 0, 0, element.length, False, 0
    )
    layout = native_layout(probe, **geometry)
    state.warnings += layout.warnings
    if layout.keep_literal or not layout.frames:
        value = reader.read(element.length)
        if len(value) < element.length:  # no frame can be cut from what arrived
            return [incomplete_segment(state, value)], ENDS_INSIDE
        for frame in layout.frames:
            _emit_frame(state, bytes(frame.read(value)))
            yield from _ready(state)
        return [literal(value)], None
    segments: list[Segment] = []
    remaining = element.length
    for frame in layout.frames:
        size = frame.ranges[0][1]
        data = reader.read(size)
        remaining -= len(data)
        if len(data) < size:
            segments.append(incomplete_segment(state, data))
            return segments, ENDS_INSIDE
        stored = swap_bytes(data, frame.swap) if frame.swap > 1 else data
        number = _emit_frame(state, stored)
        yield from _ready(state)
        segment: Segment = {"frame": number}
        if frame.swap > 1:
            segment["swap"] = frame.swap
        segments.append(segment)
    if remaining:
        rest = reader.read(remaining)
        if len(rest) < remaining:
            segments.append(incomplete_segment(state, rest))
            return segments, ENDS_INSIDE
        segments.append(literal(rest))
    return segments, None


def _encapsulated(
    element: Element,
    reader: Reader,
    *,
    head: bytes,
    top: dict[int, Element],
    frame_count: int,
    state: State,
    one_fragment_frames: bool = False,
) -> Generator[Part, None, tuple[list[Segment], str | None]]:
    """Encapsulated pixel data (PS3.5 A.4): fragments read one at a time, joined per frame.

    Frames are delimited by the Extended Offset Table, else the Basic Offset Table (when either
    has one offset per frame), else: all fragments form the one frame of a single-frame image;
    fragments starting with a codestream marker (JPEG SOI, JPEG 2000 SOC, JP2 signature) start
    frames; otherwise each fragment is a frame (as RLE requires, PS3.5 A.4.2).

    A file that ends where an item ends has its frame being read whole when the next item would
    start a frame: at an offset of the table, or always with ``one_fragment_frames`` (RLE: one
    fragment per frame, PS3.5 A.4.2), so that the last frame of the file counts as whole.
    """
    tag_format = "<HHI" if element.little else ">HHI"
    segments: list[Segment] = []
    current: list[bytes] = []
    current_segments: list[Segment] = []
    offsets = _extended_offsets(head, top.get(EXTENDED_OFFSET_TABLE))
    strategy: str | None = None
    frame_starts: set[int] = set()
    position = 0  # offset of the next item from the first item after the offset table

    def flush() -> Iterator[Part]:
        if not current:
            return
        number = _emit_frame(state, b"".join(current))
        if len(current) == 1:
            current_segments[-1] = {"frame": number}
        else:
            for segment in current_segments:
                if "frame" in segment:
                    segment["frame"] = number
        segments.extend(current_segments)
        current.clear()
        current_segments.clear()
        yield from _ready(state)

    def cut(partial: bytes, *, at_item_end: bool = False) -> Iterator[Part]:
        """The file ends inside Pixel Data: the fragments of the frame being read (whole
        fragments of RLE's one-fragment frames are whole frames, and so is a frame whose last
        item ends where the next frame would start) and the bytes that came after them become
        the incomplete segment."""
        frame_ends = one_fragment_frames or (strategy == "offsets" and position in frame_starts)
        if strategy == "each" or (at_item_end and frame_ends):
            yield from flush()
        received = b"".join(
            base64.b64decode(s["literal"]) if "literal" in s else current[i // 2]
            for i, s in enumerate(current_segments)
        )
        current.clear()
        current_segments.clear()
        segments.append(incomplete_segment(state, received + partial))

    first = True
    while True:
        header = reader.read(8)
        if len(header) < 8:
            yield from cut(header, at_item_end=True)
            return segments, ENDS_INSIDE
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
            if len(value) < length:
                segments.append(incomplete_segment(state, header + value))
                return segments, ENDS_INSIDE
            segments.append(literal(header + value))
            if not offsets and len(value) >= 4:
                offsets = list(struct.unpack(f"<{len(value) // 4}I", value[: len(value) // 4 * 4]))
            continue
        if strategy is None:
            strategy = _strategy(offsets, frame_count, value)
            frame_starts = set(offsets)
        starts_new = (
            (strategy == "offsets" and position in frame_starts)
            or (strategy == "markers" and starts_codestream(value[:12]))
            or strategy == "each"
        )
        if starts_new:  # the frame before ended whole
            yield from flush()
        if len(value) < length:
            yield from cut(header + value)
            return segments, ENDS_INSIDE
        current_segments.append(literal(header))
        offset_in_frame = sum(len(c) for c in current)
        current_segments.append({"frame": 0, "offset": offset_in_frame, "length": len(value)})
        current.append(value)
        position += 8 + length


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


def us_value(buffer: bytes, element: Element | None) -> int | None:
    if element is None or element.length < 2:
        return None
    fmt = "<H" if element.little else ">H"
    return int(struct.unpack_from(fmt, buffer, element.value_offset)[0])


def is_value(buffer: bytes, element: Element | None) -> int | None:
    if element is None or element.length == 0:
        return None
    text = buffer[element.value_offset : element.value_offset + element.length]
    try:
        return int(text.decode("ascii").split("\\")[0].strip(" \0"))
    except ValueError:
        return None


def text_value(buffer: bytes, element: Element | None) -> str:
    if element is None:
        return ""
    raw = buffer[element.value_offset : element.value_offset + element.length]
    return raw.decode("latin-1").strip(" \0")
