"""Rebuild an instance's original P10 bytes from the store alone.

Concatenates the info record's skeleton segments, reading frames and bulk data from their
files (``docs/spec/info-record.md``). Memory is bounded by one frame.
:func:`reconstruct_p10` and :func:`write_p10` give the file as received; an instance whose
compressed original was recompressed at ingest comes out transcoded, pixel for pixel, in its
stored transfer syntax (``docs/spec/recompression.md``).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.skeleton import generate_bytes
from dicomweb_archive.dicom.steps import apply_to_head, changed_tags, head_bytes, split_head
from dicomweb_archive.dicom.tail import generate_edited_rest
from dicomweb_archive.errors import CodecError, CorruptStoreError, NoSuchInstanceError
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.syntax import EXPLICIT_VR_LITTLE_ENDIAN
from dicomweb_archive.store.edit_state import steps_of
from dicomweb_archive.store.instance import InstanceKey, read_bulk, read_frame, read_info
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.storage import Reader


def find_instance_key(archive: Archive, sop_instance_uid: str) -> InstanceKey:
    """Locate an instance through the index."""
    row = archive.index.find_instance(sop_instance_uid)
    if row is None:
        raise NoSuchInstanceError(f"SOPInstanceUID {sop_instance_uid} is not in the store")
    return InstanceKey(
        row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"]
    )


@dataclass(slots=True)
class FrameReaders:
    """How a skeleton's segments read an instance's frames and bulk data from the store.

    ``frame`` gives a frame as received: recompressed frames decoded to their native bytes
    (checked against the SHA-256 of the source pixels) or, for lossy frames, the kept
    original; ``stored`` gives it as stored. With ``check_parts`` every frame and bulk-data
    object is checked against the SHA-256 the info record gives.
    """

    reader: Reader
    keys: StoreKeys
    key: InstanceKey
    info: InfoRecord
    check_parts: bool = False
    #: check each decoded recompressed frame against the pixel hash recorded at ingest (off
    #: only where the caller checks the whole file's SHA-256 against the original's)
    check_pixels: bool = True
    _stored: tuple[int, memoryview] | None = None
    _source: tuple[int, bytes | memoryview] | None = None

    def stored(self, number: int) -> memoryview:
        if self._stored is not None and self._stored[0] == number:
            return self._stored[1]
        data = read_frame(self.reader, self.keys, self.key, number)
        expected = self.info.frames[number - 1].sha256
        if self.check_parts and hashlib.sha256(data).hexdigest() != expected:
            raise CorruptStoreError(f"frame {number} of {self.key.sop} differs from its SHA-256")
        self._stored = (number, data)
        return data

    def bulk(self, sha: str) -> bytes:
        data = read_bulk(self.reader, self.keys, self.key.study, sha)
        if self.check_parts and hashlib.sha256(data).hexdigest() != sha:
            raise CorruptStoreError(f"bulk data {sha[:12]}... of {self.key.sop} is damaged")
        return data

    def frame(self, number: int) -> bytes | memoryview:
        record = self.info.frames[number - 1]
        if not record.recompressed:
            return self.stored(number)
        if self._source is not None and self._source[0] == number:
            return self._source[1]
        from dicomweb_archive.dicom.recompress import source_frame  # noqa: PLC0415 - decoding

        try:
            data = source_frame(
                self.stored(number),
                record,
                self.info.stored.pixel,
                self.bulk,
                check=self.check_pixels,
            )
        except CodecError as exc:
            raise CorruptStoreError(f"frame {number} of {self.key.sop}: {exc}") from exc
        self._source = (number, data)
        return data

    def generate(self, segments: list[dict[str, Any]]) -> Iterator[bytes | memoryview]:
        return generate_bytes(
            segments, read_frame=self.frame, read_bulk=self.bulk, read_stored=self.stored
        )


def generate_p10(
    archive: Archive,
    key: InstanceKey,
    *,
    info: InfoRecord | None = None,
    check_parts: bool = False,
    check_pixels: bool = True,
) -> Iterator[bytes | memoryview]:
    """Yield the P10 bytes of one instance, segment by segment (see :class:`FrameReaders`):
    as received, or for an edited instance its head with the edit steps applied
    (``dicom/steps.py``) and the rest as received but for the copies after Pixel Data of the
    attributes the steps changed (``dicom/tail.py``); the trailing bytes after the last data
    element, if any, end it in both cases.

    Where the original codestreams of a compressed instance were not kept
    (:meth:`~dicomweb_archive.model.info.InfoRecord.rebuilds_original` is false), the bytes are
    the instance's stored form, which :func:`generate_instance` turns into a valid file.
    """
    storage, keys = archive.storage, archive.keys
    info = info if info is not None else read_info(storage, keys, key)
    readers = FrameReaders(storage, keys, key, info, check_parts, check_pixels)
    steps = steps_of(storage, keys, key)
    if not steps:
        return readers.generate(info.segments())
    segments, rest = split_head(info.skeleton)
    original = head_bytes(segments, readers.bulk)
    head = apply_to_head(original, steps, readers.bulk, name=key.sop)
    after_head = generate_edited_rest(  # copies of changed attributes after Pixel Data too
        readers.generate(rest),
        original=original,
        head=head,
        changed=changed_tags(info.metadata or {}, steps),
        name=key.sop,
    )
    trailing = readers.generate(info.trailing_segments())
    return itertools.chain([head], after_head, trailing)


def reconstruct_p10(archive: Archive, sop_instance_uid: str) -> bytes:
    """The P10 file of an instance, rebuilt from metadata, frames, bulk data and info record."""
    return archive.read(
        lambda: b"".join(generate_instance(archive, find_instance_key(archive, sop_instance_uid)))
    )


def write_p10(archive: Archive, sop_instance_uid: str, output: BinaryIO) -> int:
    """Stream an instance's P10 bytes to ``output``; returns the number of bytes written."""
    written = 0
    key = find_instance_key(archive, sop_instance_uid)
    for chunk in generate_instance(archive, key, check_parts=True):
        written += output.write(chunk)
    return written


def generate_instance(
    archive: Archive,
    key: InstanceKey,
    *,
    info: InfoRecord | None = None,
    syntax: str | None = None,
    check_parts: bool = False,
) -> Iterator[bytes | memoryview]:
    """The bytes of an instance as a valid P10 file: as received (streamed), or where its
    original codestreams were recompressed, transcoded to ``syntax`` (default: the stored one)
    and built whole in memory. ``check_parts`` as for :func:`generate_p10`."""
    info = info if info is not None else read_info(archive.storage, archive.keys, key)
    chunks = generate_p10(archive, key, info=info, check_parts=check_parts)
    if info.rebuilds_original():
        return chunks
    return iter([_stored_form_p10(b"".join(chunks), info, syntax)])


def _stored_form_p10(stored_form: bytes, info: InfoRecord, syntax: str | None) -> bytes:
    """A valid P10 file from an instance's stored form (frames as stored, each in its own
    transfer syntax): in ``syntax``, else in the frames' one lossless syntax, else Explicit VR
    Little Endian; every frame is checked against its recorded source pixels."""
    from dicomweb_archive.dicom.codecs import ENCODERS  # noqa: PLC0415
    from dicomweb_archive.ops.transcode import transcode  # noqa: PLC0415 - pydicom, numpy

    count = len(info.frames)
    syntaxes = [info.frame_syntax(n) for n in range(1, count + 1)]
    if syntax is None:
        distinct = set(syntaxes)
        only = distinct.pop() if len(distinct) == 1 else None
        syntax = only if only in ENCODERS else EXPLICIT_VR_LITTLE_ENDIAN
    hashes = [f.source.pixels_sha256 if f.source is not None else None for f in info.frames]
    return transcode(stored_form, syntax, frame_syntaxes=syntaxes, pixel_sha256=hashes)
