"""Split one P10 file into its DICOMweb parts: metadata, frames, bulk data and skeleton.

This is pure: it reads a buffer and returns descriptions of the parts (frames and bulk data as
byte ranges of the buffer, not copies). Writing them is the store's job.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from dicomweb_archive.dicom.frames import (
    EXTENDED_OFFSET_TABLE,
    PIXEL_DATA_TAGS,
    FrameSource,
    PixelLayout,
    encapsulated_layout,
    is_native,
    native_layout,
)
from dicomweb_archive.dicom.parse import Buffer, Element, ParsedFile
from dicomweb_archive.dicom.skeleton import Hole, Segment, build_segments, deflate_segments
from dicomweb_archive.model.dicom_json import (
    SWAP_WIDTH,
    JsonContext,
    JsonObject,
    little_endian_bytes,
    resolve_vr,
    to_json_dataset,
)

AVAILABLE_TRANSFER_SYNTAX_UID = "00083002"  # (0008,3002) AvailableTransferSyntaxUID

_ROWS = 0x00280010
_COLUMNS = 0x00280011
_SAMPLES_PER_PIXEL = 0x00280002
_BITS_ALLOCATED = 0x00280100
_NUMBER_OF_FRAMES = 0x00280008
_PIXEL_REPRESENTATION = 0x00280103
_PHOTOMETRIC_INTERPRETATION = 0x00280004


@dataclass(slots=True)
class BulkSource:
    """One bulk-data value: its range in the data set buffer and its little endian hash."""

    offset: int
    length: int
    swap: int
    sha256: str

    def read(self, buffer: Buffer) -> bytes:
        raw = bytes(buffer[self.offset : self.offset + self.length])
        return little_endian_bytes(raw, _VR_BY_WIDTH[self.swap], little=self.swap == 1)


_VR_BY_WIDTH = {1: "OB", 2: "OW", 4: "OL", 8: "OD"}


@dataclass(slots=True)
class InstanceParts:
    """The DICOMweb parts of one instance, before they are written."""

    parsed: ParsedFile
    metadata: JsonObject
    frames: list[FrameSource]
    frame_media_type: str
    stored_transfer_syntax: str
    bulk: dict[str, BulkSource]
    skeleton: list[Segment]
    warnings: list[str] = field(default_factory=list)

    @property
    def buffer(self) -> Buffer:
        """The buffer frames and bulk data are ranges of."""
        return self.parsed.dataset_buffer


@dataclass(slots=True, frozen=True)
class InlineLimits:
    """Binary values longer than these go to bulk data (the seed's ``-m`` and ``-M``)."""

    public: int = 131074
    private: int = 64


def decompose(
    parsed: ParsedFile,
    *,
    limits: InlineLimits,
    frames_uri: Callable[[JsonObject], str],
    bulk_uri: Callable[[JsonObject, str], str],
) -> InstanceParts:
    """Decompose a parsed file into metadata, frames, bulk data and a skeleton.

    ``frames_uri`` and ``bulk_uri`` receive the metadata of the top-level data set (UIDs in it
    are already decoded) and return the BulkDataURI to write.
    """
    buffer = parsed.dataset_buffer
    top = {element.tag: element for element in parsed.dataset}
    pixel_representation = _us(buffer, top.get(_PIXEL_REPRESENTATION)) or 0
    layout = _pixel_layout(parsed, top)
    holes: list[Hole] = []
    bulk: dict[str, BulkSource] = {}

    def bulk_hook(element: Element, path: tuple[int, ...]) -> str | None:
        if len(path) == 1 and element.tag in PIXEL_DATA_TAGS and layout and layout.frames:
            return _FRAMES_PLACEHOLDER
        limit = limits.private if element.is_private else limits.public
        if element.length <= limit:
            return None
        vr = resolve_vr(element, pixel_representation)
        swap = 1 if element.little or element.fragments is not None else SWAP_WIDTH.get(vr, 1)
        source = BulkSource(element.value_offset, element.length, swap, "")
        source.sha256 = hashlib.sha256(source.read(buffer)).hexdigest()
        bulk[source.sha256] = source
        segment: Segment = {"bulk": source.sha256}
        if swap > 1:
            segment["swap"] = swap
        holes.append(Hole(element.value_offset, element.value_offset + element.length, segment))
        return _BULK_PLACEHOLDER + source.sha256

    context = JsonContext(buffer, bulk_hook, pixel_representation)
    metadata = to_json_dataset(parsed.dataset, context)
    stored_ts = layout.transfer_syntax if layout and layout.frames else parsed.transfer_syntax
    metadata[AVAILABLE_TRANSFER_SYNTAX_UID] = {"vr": "UI", "Value": [stored_ts]}
    metadata = dict(sorted(metadata.items()))
    _fill_uris(metadata, frames_uri(metadata), lambda sha: bulk_uri(metadata, sha))

    if layout and layout.frames and not layout.keep_literal:
        holes.extend(_frame_holes(layout.frames))
    inner = build_segments(buffer, holes)
    if parsed.inflated is not None:
        skeleton = deflate_segments(parsed.buffer, parsed.dataset_offset, parsed.inflated, inner)
    else:
        skeleton = inner
    warnings = [*parsed.warnings, *(layout.warnings if layout else [])]
    return InstanceParts(
        parsed=parsed,
        metadata=metadata,
        frames=layout.frames if layout else [],
        frame_media_type=layout.media_type if layout else "",
        stored_transfer_syntax=stored_ts,
        bulk=bulk,
        skeleton=skeleton,
        warnings=warnings,
    )


_FRAMES_PLACEHOLDER = "\0frames"
_BULK_PLACEHOLDER = "\0bulk:"


def _fill_uris(node: object, frames: str, bulk: Callable[[str], str]) -> None:
    """Replace the placeholders left by the bulk hook once the UIDs are known."""
    if isinstance(node, dict):
        uri = node.get("BulkDataURI")
        if isinstance(uri, str):
            if uri == _FRAMES_PLACEHOLDER:
                node["BulkDataURI"] = frames
            elif uri.startswith(_BULK_PLACEHOLDER):
                node["BulkDataURI"] = bulk(uri[len(_BULK_PLACEHOLDER) :])
        for value in node.values():
            if isinstance(value, dict | list):
                _fill_uris(value, frames, bulk)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, dict | list):
                _fill_uris(value, frames, bulk)


def _frame_holes(frames: list[FrameSource]) -> list[Hole]:
    holes: list[Hole] = []
    for number, frame in enumerate(frames, start=1):
        if len(frame.ranges) == 1 and frame.ranges[0][1] == frame.length:
            offset, length = frame.ranges[0]
            segment: Segment = {"frame": number}
            if frame.swap > 1:
                segment["swap"] = frame.swap
            holes.append(Hole(offset, offset + length, segment))
            continue
        position = 0
        for offset, length in frame.ranges:
            piece = {"frame": number, "offset": position, "length": length}
            holes.append(Hole(offset, offset + length, piece))
            position += length
    return holes


def _pixel_layout(parsed: ParsedFile, top: dict[int, Element]) -> PixelLayout | None:
    element = next((top[tag] for tag in sorted(PIXEL_DATA_TAGS, reverse=True) if tag in top), None)
    if element is None:
        return None
    buffer = parsed.dataset_buffer
    frames = _is(buffer, top.get(_NUMBER_OF_FRAMES)) or 1
    if element.fragments is not None:
        eot = top.get(EXTENDED_OFFSET_TABLE)
        extended = None
        if eot is not None and eot.length:
            count = eot.length // 8
            extended = list(struct.unpack_from(f"<{count}Q", buffer, eot.value_offset))
        return encapsulated_layout(
            element,
            buffer,
            transfer_syntax=parsed.transfer_syntax,
            number_of_frames=frames,
            extended_offsets=extended,
        )
    if not is_native(parsed.transfer_syntax) and parsed.meta:
        return None
    bits = 32 if element.tag == 0x7FE00008 else 64 if element.tag == 0x7FE00009 else None
    return native_layout(
        element,
        rows=_us(buffer, top.get(_ROWS)) or 0,
        columns=_us(buffer, top.get(_COLUMNS)) or 0,
        samples_per_pixel=_us(buffer, top.get(_SAMPLES_PER_PIXEL)) or 1,
        bits_allocated=bits or _us(buffer, top.get(_BITS_ALLOCATED)) or 0,
        number_of_frames=frames,
        photometric_interpretation=_text(buffer, top.get(_PHOTOMETRIC_INTERPRETATION)),
    )


def _text(buffer: Buffer, element: Element | None) -> str:
    if element is None:
        return ""
    raw = bytes(buffer[element.value_offset : element.value_offset + element.length])
    return raw.decode("latin-1").strip(" \0")


def _us(buffer: Buffer, element: Element | None) -> int | None:
    if element is None or element.length < 2:
        return None
    fmt = "<H" if element.little else ">H"
    return int(struct.unpack_from(fmt, buffer, element.value_offset)[0])


def _is(buffer: Buffer, element: Element | None) -> int | None:
    if element is None or element.length == 0:
        return None
    text = bytes(buffer[element.value_offset : element.value_offset + element.length])
    try:
        return int(text.decode("ascii").split("\\")[0].strip(" \0"))
    except ValueError:
        return None
