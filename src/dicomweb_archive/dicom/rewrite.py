"""Rewrite a stored instance's metadata and skeleton with edits, never touching its frames.

The skeleton's leading literal and bulk-data segments are the file's head (everything before
the Pixel Data value); :func:`rewrite` rebuilds that head, applies the edits
(:mod:`dicomweb_archive.dicom.edit`), derives the head's metadata and segments again as ingest
does, and keeps every later segment (the frames) as it was.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from dicomweb_archive.dicom.edit import Edit, OriginalAttributes, edit_head
from dicomweb_archive.dicom.parts import BulkPart, InlineLimits, decompose_head, fill_uris
from dicomweb_archive.dicom.skeleton import Segment, referenced_bulk
from dicomweb_archive.errors import UsageError
from dicomweb_archive.model.info import BulkRecord, InfoRecord
from dicomweb_archive.model.tags import AVAILABLE_TRANSFER_SYNTAX_UID_KEY, FLOAT_PIXEL_DATA_KEY

JsonObject = dict[str, Any]


@dataclass(slots=True)
class Rewritten:
    info: InfoRecord
    metadata: JsonObject
    bulk: list[BulkPart]


def split_head(
    segments: list[Segment], read_bulk: Callable[[str], bytes | memoryview]
) -> tuple[bytes, list[Segment]]:
    """The head's bytes (leading literal and bulk segments) and the segments after it."""
    head: list[bytes] = []
    for index, segment in enumerate(segments):
        if "literal" in segment:
            head.append(base64.b64decode(segment["literal"]))
        elif "bulk" in segment and "swap" not in segment:
            head.append(bytes(read_bulk(segment["bulk"])))
        elif "deflate" in segment:
            raise UsageError("deflated data sets cannot be edited in place")
        else:
            return b"".join(head), segments[index:]
    return b"".join(head), []


def rewrite(
    info: InfoRecord,
    metadata: JsonObject,
    edits: list[Edit],
    *,
    read_bulk: Callable[[str], bytes | memoryview],
    limits: InlineLimits,
    frames_uri: Callable[[JsonObject], str],
    bulk_uri: Callable[[JsonObject, str], str],
    name: str,
    original_attributes: OriginalAttributes | None = None,
) -> Rewritten:
    """The instance's new info record and metadata (and any new bulk data) after ``edits``."""
    head, rest = split_head(info.skeleton, read_bulk)
    new_head = edit_head(head, edits, name=name, original_attributes=original_attributes)
    new_json, head_segments, bulk = decompose_head(new_head, limits=limits, name=name)
    # what the head did not give: Pixel Data and later elements, AvailableTransferSyntaxUID
    merged = {
        key: value
        for key, value in metadata.items()
        if key >= FLOAT_PIXEL_DATA_KEY or key == AVAILABLE_TRANSFER_SYNTAX_UID_KEY
    }
    merged.update(new_json)
    merged = dict(sorted(merged.items()))
    fill_uris(merged, frames_uri=frames_uri, bulk_uri=bulk_uri)
    skeleton = [*head_segments, *rest]
    sizes = {item.sha256: item.size for item in info.bulkdata}
    sizes.update({part.sha256: len(part.data) for part in bulk})
    used = referenced_bulk(skeleton) | info.kept_originals()
    new_info = replace(
        info,
        skeleton=skeleton,
        bulkdata=[BulkRecord(sha, sizes[sha]) for sha in sorted(used)],
    )
    return Rewritten(new_info, merged, bulk)
