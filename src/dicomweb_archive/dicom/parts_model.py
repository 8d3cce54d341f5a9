"""The parts a P10 stream decomposes into, and the reader and state decomposition shares."""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.model.dicom_json import JsonObject
from dicomweb_archive.model.info import InfoRecord

if TYPE_CHECKING:
    from concurrent.futures import Future

    from dicomweb_archive.dicom.recompress import FrameRecompressor


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
    info: InfoRecord
    stop_reason: str | None = None


Part = InstanceHeader | FramePart | BulkPart | InstanceEnd


class Reader:
    """Reads a stream after some bytes already read, counting (and hashing) every byte."""

    def __init__(self, stream: BinaryIO, *, known_sha256: str | None = None) -> None:
        self.stream = stream
        self.sha = None if known_sha256 else hashlib.sha256()
        self.known_sha256 = known_sha256
        self.size = 0
        self.pending = b""

    def raw(self, size: int) -> bytes:
        data = self.stream.read(size)
        if self.sha is not None:
            self.sha.update(data)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        if self.sha is not None:
            return self.sha.hexdigest()
        assert self.known_sha256 is not None
        return self.known_sha256

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes: fewer only at the end of the stream."""
        if self.pending:
            out = self.pending[:size]
            self.pending = self.pending[size:]
        else:
            out = self.raw(size)
        if len(out) == size or not out:
            return out
        chunks = [out]
        missing = size - len(out)
        while missing:
            data = self.raw(missing)
            if not data:
                break
            chunks.append(data)
            missing -= len(data)
        return b"".join(chunks)

    def rest(self) -> bytes:
        chunks = [self.pending]
        self.pending = b""
        while data := self.raw(1 << 20):
            chunks.append(data)
        return b"".join(chunks)


@dataclass(slots=True)
class State:
    """What the decomposition collects besides the parts it yields."""

    limits: InlineLimits
    pixel_representation: int = 0
    bulk: dict[str, int] = field(default_factory=dict)
    frames: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pending_bulk: list[BulkPart] = field(default_factory=list)
    media_type: str = ""
    recompression: Recompression | None = None
    recompressor: FrameRecompressor | None = None
    #: why frames were kept as received -> their numbers
    kept: dict[str, list[int]] = field(default_factory=dict)
    #: frames of this instance are recompressed in the shared frame pool
    parallel: bool = False
    #: frames done, and frames being recompressed (number, future), in frame order
    done: deque[FramePart] = field(default_factory=deque)
    in_flight: deque[tuple[int, Future[Any]]] = field(default_factory=deque)
