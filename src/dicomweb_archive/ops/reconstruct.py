"""Rebuild an instance's original P10 bytes from the store alone.

Concatenates the info record's skeleton segments, reading frames and bulk data from their
files (``docs/spec/info-record.md``). Memory is bounded by one frame.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from dicomweb_archive.dicom.skeleton import generate_bytes
from dicomweb_archive.errors import CorruptStoreError, NoSuchInstanceError
from dicomweb_archive.index.database import Index
from dicomweb_archive.store.instance import InstanceKey, read_bulk, read_frame, read_info
from dicomweb_archive.store.layout import StoreLayout


def find_instance_key(layout: StoreLayout, sop_instance_uid: str) -> InstanceKey:
    """Locate an instance through the index."""
    with Index(layout.index_path) as index:
        row = index.find_instance(sop_instance_uid)
    if row is None:
        raise NoSuchInstanceError(f"SOPInstanceUID {sop_instance_uid} is not in the store")
    return InstanceKey(
        row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"]
    )


def generate_p10(
    layout: StoreLayout,
    key: InstanceKey,
    *,
    info: dict[str, Any] | None = None,
    check_parts: bool = False,
) -> Iterator[bytes | memoryview]:
    """Yield the P10 bytes of one instance, segment by segment.

    With ``check_parts`` every frame and bulk-data file is checked against the SHA-256 its
    info record gives (the proof for an edited instance, whose file hash is new).
    """
    info = info if info is not None else read_info(layout, key)
    frame_hashes = [item["sha256"] for item in info["frames"]]
    last: tuple[int, memoryview] | None = None

    def frame(number: int) -> memoryview:
        nonlocal last
        if last is not None and last[0] == number:
            return last[1]
        data = read_frame(layout, key, number)
        if check_parts and hashlib.sha256(data).hexdigest() != frame_hashes[number - 1]:
            raise CorruptStoreError(f"frame {number} of {key.sop} differs from its SHA-256")
        last = (number, data)
        return data

    def bulk(sha: str) -> bytes:
        data = read_bulk(layout, key.study, sha)
        if check_parts and hashlib.sha256(data).hexdigest() != sha:
            raise CorruptStoreError(f"bulk data {sha[:12]}... of {key.sop} is damaged")
        return data

    return generate_bytes(info["skeleton"], read_frame=frame, read_bulk=bulk)


def reconstruct_p10(store: str | os.PathLike[str], sop_instance_uid: str) -> bytes:
    """The P10 file of an instance, rebuilt from metadata, frames, bulk data and info record."""
    layout = StoreLayout(Path(store))
    return b"".join(generate_p10(layout, find_instance_key(layout, sop_instance_uid)))


def write_p10(store: str | os.PathLike[str], sop_instance_uid: str, output: BinaryIO) -> int:
    """Stream an instance's P10 bytes to ``output``; returns the number of bytes written."""
    layout = StoreLayout(Path(store))
    written = 0
    for chunk in generate_p10(layout, find_instance_key(layout, sop_instance_uid)):
        written += output.write(chunk)
    return written
