"""The info record (``docs/spec/info-record.md``, ``schema/info-record.schema.json``), typed.

The info record holds what the DICOM JSON of an instance loses: the file as a *skeleton* of
literal bytes and references to the stored frames and bulk data, the received file's hash,
and how each frame is stored. :meth:`InfoRecord.from_json` and :meth:`InfoRecord.to_json`
convert it exactly (a test validates ``to_json`` against the schema and round-trips every
record of the corpus).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.model.pixel import PixelDescription
from dicomweb_archive.model.syntax import NATIVE_PIXEL_DATA, media_type
from dicomweb_archive.model.tags import AVAILABLE_TRANSFER_SYNTAX_UID_KEY

JsonObject = dict[str, Any]
Segment = dict[str, Any]
INFO_VERSION = 1


@dataclass(slots=True)
class Original:
    """The received file: its SHA-256 and size, transfer syntax, preamble and File Meta."""

    sha256: str
    size: int
    transfer_syntax_uid: str
    has_preamble: bool
    has_file_meta: bool


@dataclass(slots=True)
class FrameSource:
    """A recompressed frame as received (``docs/spec/recompression.md``)."""

    transfer_syntax_uid: str
    sha256: str
    size: int
    pixels_sha256: str
    #: lossy frames, and --keep-originals: the received frame kept as this bulk-data file
    bulk: str | None = None

    def to_json(self) -> JsonObject:
        value: JsonObject = {
            "transfer_syntax_uid": self.transfer_syntax_uid,
            "sha256": self.sha256,
            "size": self.size,
            "pixels_sha256": self.pixels_sha256,
        }
        if self.bulk is not None:
            value["bulk"] = self.bulk
        return value


@dataclass(slots=True)
class FrameRecord:
    """One stored frame: SHA-256 and size of its payload, its transfer syntax where frames
    differ, and for a recompressed frame its source."""

    sha256: str
    size: int
    transfer_syntax_uid: str | None = None
    source: FrameSource | None = None

    @property
    def recompressed(self) -> bool:
        return self.source is not None

    @property
    def received_sha256(self) -> str:
        """The SHA-256 of the frame as received (before any recompression)."""
        return self.source.sha256 if self.source is not None else self.sha256

    def to_json(self) -> JsonObject:
        value: JsonObject = {"sha256": self.sha256, "size": self.size}
        if self.transfer_syntax_uid is not None:
            value["transfer_syntax_uid"] = self.transfer_syntax_uid
        if self.source is not None:
            value["source"] = self.source.to_json()
        return value

    @classmethod
    def from_json(cls, value: JsonObject) -> FrameRecord:
        source = value.get("source")
        return cls(
            value["sha256"],
            value["size"],
            value.get("transfer_syntax_uid"),
            FrameSource(**source) if source is not None else None,
        )


@dataclass(slots=True)
class Stored:
    """How the frames are stored: transfer syntax and Content-Type of frame 1, and with
    recompression the pixel description the frames decode with."""

    transfer_syntax_uid: str
    media_type: str
    pixel: PixelDescription | None = None

    def to_json(self) -> JsonObject:
        value: JsonObject = {
            "transfer_syntax_uid": self.transfer_syntax_uid,
            "media_type": self.media_type,
        }
        if self.pixel is not None:
            value["pixel"] = self.pixel.to_json()
        return value


@dataclass(slots=True)
class BulkRecord:
    sha256: str
    size: int


@dataclass(slots=True)
class Trailing:
    """Bytes after the file's last data element (zero padding, bytes that are no element),
    which are not part of its data set (PS3.10 7.2 knows only Data Set Trailing Padding
    (FFFC,FFFC), an element): where they start, how many, and segments (a literal, or
    bulk-data objects) that rebuild them after the skeleton's bytes."""

    offset: int
    size: int
    segments: list[Segment]

    def to_json(self) -> JsonObject:
        return {"offset": self.offset, "size": self.size, "segments": self.segments}


@dataclass(slots=True)
class InfoRecord:
    """One instance's info record."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    original: Original
    stored: Stored
    frames: list[FrameRecord] = field(default_factory=list)
    bulkdata: list[BulkRecord] = field(default_factory=list)
    skeleton: list[Segment] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the instance's DICOM JSON as received (PS3.18 F.2, bulk-data URIs filled): what edits
    #: start from (``dicom/steps.py``); None only while ingest derives it
    metadata: JsonObject | None = None
    version: int = INFO_VERSION
    #: bytes after the last data element, rebuilt after the skeleton (None: there are none)
    trailing: Trailing | None = None

    # -- conversion ------------------------------------------------------------------------
    @classmethod
    def from_json(cls, value: JsonObject) -> InfoRecord:
        stored = value["stored"]
        pixel = stored.get("pixel")
        trailing = value.get("trailing")
        return cls(
            value["study_instance_uid"],
            value["series_instance_uid"],
            value["sop_instance_uid"],
            Original(**value["original"]),
            Stored(
                stored["transfer_syntax_uid"],
                stored["media_type"],
                PixelDescription.from_json(pixel) if pixel else None,
            ),
            [FrameRecord.from_json(f) for f in value["frames"]],
            [BulkRecord(b["sha256"], b["size"]) for b in value["bulkdata"]],
            value["skeleton"],
            list(value["warnings"]),
            value.get("metadata"),
            int(value["version"]),
            Trailing(**trailing) if trailing is not None else None,
        )

    def to_json(self) -> JsonObject:
        value: JsonObject = {
            "version": self.version,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "original": {
                "sha256": self.original.sha256,
                "size": self.original.size,
                "transfer_syntax_uid": self.original.transfer_syntax_uid,
                "has_preamble": self.original.has_preamble,
                "has_file_meta": self.original.has_file_meta,
            },
            "stored": self.stored.to_json(),
            "frames": [f.to_json() for f in self.frames],
            "bulkdata": [{"sha256": b.sha256, "size": b.size} for b in self.bulkdata],
            "skeleton": self.skeleton,
            "warnings": self.warnings,
        }
        if self.trailing is not None:
            value["trailing"] = self.trailing.to_json()
        if self.metadata is not None:
            value["metadata"] = self.metadata
        return value

    # -- what the record says --------------------------------------------------------------
    def same_data_set(self, other: InfoRecord) -> bool:
        """Whether ``other`` records the same instance's data set as this record, received in
        a file that may differ outside it (PS3.10 7.1: the File Meta Information, where a
        storage SCP writes the sender's AE title, and the preamble are not part of the data
        set): the same attributes (:meth:`_same_attributes`), the same frames as received
        (their SHA-256 before any recompression), and the same number of bytes after the last
        element. Values encoded otherwise (another VR of a private attribute, another byte
        order of frames) make them differ: conservative."""
        if (
            not self._same_attributes(other)
            or len(self.frames) != len(other.frames)
            or (self.trailing.size if self.trailing else None)
            != (other.trailing.size if other.trailing else None)
        ):
            return False
        return _same_frames(self.frames, other.frames)

    def completed_by(self, other: InfoRecord) -> bool:
        """Whether ``other`` is the whole of the file this record's instance was cut from
        inside Pixel Data (``model/incomplete.py``): a complete instance with the same
        attributes whose first frames are this one's whole frames, as received (the frame
        the cut file ended inside is whole there, or every frame was whole already and only
        the end of the file was missing)."""
        if incomplete_frame(self.skeleton) is None or incomplete_frame(other.skeleton) is not None:
            return False
        whole = len(self.frames)
        return (
            self._same_attributes(other)
            and whole <= len(other.frames)
            and _same_frames(self.frames, other.frames[:whole])
        )

    def _same_attributes(self, other: InfoRecord) -> bool:
        """The same instance's metadata as received (PS3.18 F.2, whose bulk-data URIs name
        their content's SHA-256) but for what the store derives (Available Transfer Syntax
        UID). Data Set Trailing Padding (FFFC,FFFC), which the metadata leaves out, is not
        compared: its content has no significance (PS3.10 7.2); nor is the padding of values,
        which the metadata strips (PS3.5 6.2)."""
        if self.metadata is None or other.metadata is None:
            return False
        uids = (self.study_instance_uid, self.series_instance_uid, self.sop_instance_uid)
        if uids != (other.study_instance_uid, other.series_instance_uid, other.sop_instance_uid):
            return False
        return _received_data_set(self.metadata) == _received_data_set(other.metadata)

    def frame_syntax(self, number: int) -> str:
        """The transfer syntax of stored frame ``number`` (1-based)."""
        syntax = self.frames[number - 1].transfer_syntax_uid
        return syntax if syntax is not None else self.stored.transfer_syntax_uid

    def stored_syntaxes(self) -> list[str]:
        """AvailableTransferSyntaxUID (0008,3002): the stored frames' transfer syntaxes."""
        found = dict.fromkeys(
            [
                self.stored.transfer_syntax_uid,
                *(self.frame_syntax(n) for n in range(1, len(self.frames) + 1)),
            ]
        )
        return list(found)

    def frame_media_type(self, number: int) -> str:
        """The Content-Type of stored frame ``number``'s file."""
        syntax = self.frames[number - 1].transfer_syntax_uid
        return media_type(syntax) if syntax is not None else self.stored.media_type

    def kept_originals(self) -> set[str]:
        """Bulk-data hashes of received frames kept beside their recompressed frames (lossy
        targets, ``--keep-originals``): referenced by the frame records, not the skeleton."""
        return {f.source.bulk for f in self.frames if f.source is not None and f.source.bulk}

    def rebuilds_original(self) -> bool:
        """Whether the skeleton rebuilds the received file byte for byte: always, unless
        frames of a compressed original were recompressed losslessly (their codestreams are
        not kept)."""
        return not any(
            f.source is not None
            and f.source.bulk is None
            and f.source.transfer_syntax_uid not in NATIVE_PIXEL_DATA
            for f in self.frames
        )

    def segments(self) -> list[Segment]:
        """The segments that rebuild the whole received file: the skeleton, then the
        trailing bytes."""
        if self.trailing is None:
            return self.skeleton
        return [*self.skeleton, *self.trailing.segments]

    def trailing_segments(self) -> list[Segment]:
        """The segments of the trailing bytes (none when there are none)."""
        return self.trailing.segments if self.trailing is not None else []

    def bulk_hashes(self) -> set[str]:
        return {b.sha256 for b in self.bulkdata}


#: attributes the store adds to an instance's metadata (``dicom/parts.py``): not received
_DERIVED = (AVAILABLE_TRANSFER_SYNTAX_UID_KEY,)


def _received_data_set(metadata: JsonObject) -> JsonObject:
    return {tag: value for tag, value in metadata.items() if tag not in _DERIVED}


def _same_frames(one: list[FrameRecord], other: list[FrameRecord]) -> bool:
    """The same frames as received (their SHA-256 before any recompression)."""
    return all(f.received_sha256 == g.received_sha256 for f, g in zip(one, other, strict=True))
