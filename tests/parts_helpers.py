"""Decompose bytes with the streaming API and rebuild them from the parts, in memory."""

from __future__ import annotations

import io
from typing import Any

from dicomweb_archive.dicom.parts import (
    BulkPart,
    FramePart,
    InlineLimits,
    InstanceEnd,
    generate_parts,
)
from dicomweb_archive.dicom.skeleton import generate_bytes


def rebuild(data: bytes, limits: InlineLimits) -> tuple[bytes, InstanceEnd]:
    """The bytes the skeleton rebuilds from the parts of ``data``, and the final part."""
    frames: dict[int, bytes] = {}
    bulk: dict[str, bytes] = {}
    end: InstanceEnd | None = None
    for part in generate_parts(
        io.BytesIO(data),
        limits=limits,
        frames_uri=lambda _meta: "frames",
        bulk_uri=lambda _meta, sha: sha,
    ):
        if isinstance(part, FramePart):
            frames[part.number] = bytes(part.data)
        elif isinstance(part, BulkPart):
            bulk[part.sha256] = part.data
        elif isinstance(part, InstanceEnd):
            end = part
    assert end is not None
    skeleton: list[dict[str, Any]] = end.info["skeleton"]
    rebuilt = b"".join(
        generate_bytes(skeleton, read_frame=frames.__getitem__, read_bulk=bulk.__getitem__)
    )
    return rebuilt, end
