"""Decompose bytes with the streaming API and rebuild them from the parts, in memory."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pydicom

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
    skeleton: list[dict[str, Any]] = end.info.segments()
    rebuilt = b"".join(
        generate_bytes(skeleton, read_frame=frames.__getitem__, read_bulk=bulk.__getitem__)
    )
    return rebuilt, end


def assert_same_instance(rebuilt: bytes, original: bytes) -> None:
    """Pixel-identical and attribute-identical, apart from what transcoding changes: the
    transfer syntax, Pixel Data's encoding, and the group lengths that follow from them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = pydicom.dcmread(io.BytesIO(rebuilt))
        theirs = pydicom.dcmread(io.BytesIO(original), force=True)
        np.testing.assert_array_equal(ours.pixel_array, theirs.pixel_array)
    # Pixel Data and its Extended Offset Table; Planar Configuration (0 once re-encoded)
    skip = {0x7FE00010, 0x7FE00001, 0x7FE00002, 0x00280006}
    for element in theirs:
        if element.tag in skip or element.tag.element == 0:
            continue
        assert element.tag in ours, f"{element.tag} is missing"
        assert ours[element.tag].value == element.value, f"{element.tag} differs"
    extra = {e.tag for e in ours if e.tag not in skip and e.tag.element} - set(theirs.keys())
    assert not extra, f"{sorted(extra)} added"
