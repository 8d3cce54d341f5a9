"""``verify``, one instance: its objects, its byte-exact rebuild, its frames and metadata.

The checks are specified in ``docs/spec/export-verify.md``; :mod:`dicomweb_archive.ops.verify`
runs them over a store.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.parts import InstanceEnd, decompose_tail, fill_uris, generate_parts
from dicomweb_archive.dicom.skeleton import ChunkStream, generate_bytes
from dicomweb_archive.dicom.steps import (
    Step,
    apply_to_head,
    apply_to_json,
    changed_tags,
    head_bytes,
    snapshot_step,
    split_head,
)
from dicomweb_archive.dicom.tail import TailSplitter, changed_copies
from dicomweb_archive.errors import ArchiveError, CodecError, MissingStoreFileError
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.pixel import PixelDescription
from dicomweb_archive.model.syntax import NATIVE_PIXEL_DATA
from dicomweb_archive.model.tags import (
    AVAILABLE_TRANSFER_SYNTAX_UID_KEY,
    NUMBER_OF_FRAMES_KEY,
    PIXEL_DATA,
    SOP_INSTANCE_UID_KEY,
    key,
)
from dicomweb_archive.model.uid import is_safe_uid
from dicomweb_archive.ops.ingest_types import inline_limits
from dicomweb_archive.store.instance import (
    InstanceKey,
    read_bulk,
    read_frame,
    read_info,
    read_own_metadata,
)
from dicomweb_archive.store.keys import THUMBNAIL, bulkdata_uri, frames_uri
from dicomweb_archive.store.storage import Reader

JsonObject = dict[str, Any]
#: ``thumbnail.jpg``: a derived file (``ops/render.py``), known here, not compared
INSTANCE_FILES = {"info.json.gz", "metadata.gz", "frames/", THUMBNAIL}


@dataclass(slots=True, frozen=True)
class Finding:
    """One difference (or, for the kinds of :data:`INCOMPLETE`, work not yet done): what kind,
    where (a store key or UID), and a sentence."""

    kind: str
    where: str
    message: str


#: Finding kinds that say work is pending or in progress, not that anything differs.
INCOMPLETE = frozenset({"pending", "interrupted", "busy"})
#: The equivalence class of an instance whose received file ends inside Pixel Data
#: (``model/incomplete.py``): rebuilt byte for byte (or edited), but not a whole image.
INCOMPLETE_CLASS = "incomplete"


@dataclass(slots=True)
class Verdict:
    """The equivalence class of one instance (``bytes``, ``pixels+attributes``, ``edited``,
    ``incomplete`` or ``failed``), why, and its flags (``nonconformant-uid``: a UID stored
    although PS3.5 9.1 does not allow it)."""

    study: str
    series: str
    sop: str
    equivalence: str
    reason: str = ""
    flags: tuple[str, ...] = ()


@dataclass(slots=True)
class InstanceResult:
    findings: list[Finding] = field(default_factory=list)
    verdict: Verdict | None = None
    bytes_read: int = 0
    bulk: set[str] = field(default_factory=set)
    pair: tuple[JsonObject, InfoRecord] | None = None


def verify_instance(
    archive: Archive,
    key: InstanceKey,
    *,
    deep: bool,
    steps: list[Step],
    served: JsonObject | None,
) -> InstanceResult:
    """Every check of one committed instance. ``steps``: its edit steps (the study's edit
    state); ``served``: its object in the series metadata (None: not compared, the study
    waits for its study stage)."""
    keys = archive.keys
    storage = archive.storage
    out = InstanceResult()
    where = keys.instance(key.study, key.series, key.sop).rstrip("/")

    frames: FrameChecker | None = None

    def fail(kind: str, message: str) -> InstanceResult:
        if frames is not None:  # what the frames showed before the failure
            out.findings.extend(f for f in frames.findings if f not in out.findings)
        out.findings.append(Finding(kind, where, message))
        out.verdict = Verdict(key.study, key.series, key.sop, "failed", message)
        return out

    if not is_safe_uid(key.sop):
        out.findings.append(Finding("orphan", where, "not an instance folder"))
        return out
    names = storage.children(keys.instance(key.study, key.series, key.sop))
    for name in names:
        if name not in INSTANCE_FILES:
            out.findings.append(Finding("orphan", f"{where}/{name}", "not part of the layout"))
    try:
        info = read_info(storage, keys, key)
        if info.metadata is None:
            return fail("corrupt", f"{where}/info.json.gz holds no metadata")
        own = read_own_metadata(storage, keys, key) if "metadata.gz" in names else None
    except ArchiveError as exc:
        kind = "missing" if "missing" in str(exc) else "corrupt"
        return fail(kind, str(exc))
    exact = info.rebuilds_original()
    # the whole file's SHA-256 proves the decoded pixels of a rebuilt-as-received instance:
    # they are hashed on their own only when it differs (to say which frame)
    frames = FrameChecker(storage, archive, key, info, check_pixels=not exact)
    out.bulk = info.bulk_hashes() | info.kept_originals()
    tail: TailSplitter | None = None
    try:
        tail = _tail_splitter(info, frames, key.sop) if deep and steps else None
    except ArchiveError as exc:
        return fail("corrupt", f"cannot be rebuilt: {exc}")
    checked = _Hashing(
        generate_bytes(
            info.segments(),  # the skeleton, then the trailing bytes
            read_frame=frames.read,
            read_bulk=frames.read_bulk,
            read_stored=frames.read_stored,
        )
        if tail is None
        else _split_tail(info, frames, tail)
    )
    try:
        derived = _derive(checked, info) if deep else None
        for _ in checked:
            pass
        now = apply_to_json(info.metadata, steps)
        edited_json = _edited_metadata(frames, info, steps, key) if steps else None
        copies = _tail_disagrees(frames, info, steps, key, tail, now) if tail else None
    except MissingStoreFileError as exc:
        return fail("missing", str(exc))
    except CodecError as exc:
        return fail("pixels", str(exc))
    except (ArchiveError, OSError, ValueError) as exc:
        return fail("corrupt", f"cannot be rebuilt: {exc}")
    frames.check_extra()
    out.findings += frames.findings
    out.bytes_read += checked.size
    if exact and checked.sha.hexdigest() != info.original.sha256:
        differ = frames.pixels_differ()
        if differ is not None:
            return fail("pixels", differ)
        return fail("rebuild", "rebuilt P10 bytes differ from the ingested file (SHA-256)")
    if derived is not None and derived != info.metadata:
        return fail("metadata", "the info record's metadata differs from the rebuilt file's")
    if edited_json is not None and edited_json != now:
        return fail("metadata", "the edit steps give other metadata than the edited file")
    if copies is not None:
        return fail("metadata", copies)
    if served is not None and served != now:
        return fail("metadata", "the series metadata differs from the instance's")
    if own is not None and own != now:
        return fail("metadata", "metadata.gz differs from the instance's metadata")
    if deep:
        disagreement = frames_disagree(now, info, frames)
        if disagreement is not None:
            return fail("frames", disagreement)
    if frames.bad:
        out.verdict = Verdict(
            key.study, key.series, key.sop, "failed", "frame or bulk data damaged"
        )
        return out
    cut = incomplete_frame(info.skeleton)
    if cut is not None:
        out.verdict = Verdict(
            key.study,
            key.series,
            key.sop,
            INCOMPLETE_CLASS,
            f"the received file ends inside Pixel Data: frame {cut} and after are not whole; "
            + ("edited since ingest" if steps else "its bytes rebuild the received file"),
        )
    elif steps:
        out.verdict = Verdict(key.study, key.series, key.sop, "edited", "edited since ingest")
    elif not exact:
        out.verdict = Verdict(
            key.study,
            key.series,
            key.sop,
            "pixels+attributes",
            "frames of the compressed original were recompressed losslessly",
        )
    else:
        out.verdict = Verdict(key.study, key.series, key.sop, "bytes")
    out.pair = (now, info)
    return out


def _edited_metadata(
    frames: FrameChecker, info: InfoRecord, steps: list[Step], key: InstanceKey
) -> JsonObject:
    """The metadata of the edited file: its head (the steps applied to the bytes) derived as
    ingest derives it, the rest (frames, elements after them) being the original's."""
    segments, _rest = split_head(info.skeleton)
    head = apply_to_head(
        head_bytes(segments, frames.read_bulk), steps, frames.read_bulk, name=key.sop
    )
    assert info.metadata is not None
    step, _bulk = snapshot_step(
        "verify",
        head,
        info.metadata,
        [],
        original_attributes=None,
        limits=frames.limits,
        frames_uri=lambda _meta: frames_uri(key.sop),
        bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
        name=key.sop,
    )
    assert step.snapshot is not None
    return step.snapshot.metadata


def _tail_splitter(info: InfoRecord, frames: FrameChecker, sop: str) -> TailSplitter:
    """``--deep``, an edited instance: what holds the received elements after Pixel Data."""
    segments, _rest = split_head(info.skeleton)
    return TailSplitter(head_bytes(segments, frames.read_bulk), name=sop)


def _split_tail(
    info: InfoRecord, frames: FrameChecker, tail: TailSplitter
) -> Iterator[bytes | memoryview]:
    """The received file's bytes (as :func:`generate_bytes` of its segments), the elements
    after Pixel Data held by ``tail`` on the way."""
    segments, rest = split_head(info.skeleton)

    def generate(part: list[Any]) -> Iterator[bytes | memoryview]:
        return generate_bytes(
            part, read_frame=frames.read, read_bulk=frames.read_bulk, read_stored=frames.read_stored
        )

    yield from generate(segments)
    yield from tail.split(generate(rest), through=True)
    yield from generate(info.trailing_segments())


def _tail_disagrees(  # noqa: PLR0917 - internal
    frames: FrameChecker,
    info: InfoRecord,
    steps: list[Step],
    key: InstanceKey,
    tail: TailSplitter,
    now: JsonObject,
) -> str | None:
    """``--deep``: every copy after Pixel Data of an edited instance, as export writes it
    (``dicom/tail.py``), must have the value the metadata says (the last copy is the one
    pydicom reads); which one does not."""
    if not tail.tail:
        return None
    assert info.metadata is not None
    segments, _rest = split_head(info.skeleton)
    head = apply_to_head(
        head_bytes(segments, frames.read_bulk), steps, frames.read_bulk, name=key.sop
    )
    changed = changed_tags(info.metadata, steps)
    edited = changed_copies(
        bytes(tail.tail), head=head, changed=changed, name=key.sop, previous=tail.tag
    )
    copies = decompose_tail(head, edited, previous=tail.tag, limits=frames.limits, name=key.sop)
    fill_uris(
        copies,
        frames_uri=lambda _meta: frames_uri(key.sop),
        bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
    )
    for tag, value in sorted(copies.items()):
        if now.get(tag) != value:
            return (
                f"the copy of ({tag[:4]},{tag[4:]}) after Pixel Data differs from the "
                "metadata (an edit did not reach it)"
            )
    return None


def frames_disagree(metadata: JsonObject, info: InfoRecord, frames: FrameChecker) -> str | None:
    """Why the stored frames do not fit the Image Pixel Module of the metadata (None: they do):
    the Number of Frames (PS3.3 C.7.6.6), native frames' size (PS3.5 8.1.1), and the first
    compressed frame's dimensions once decoded."""
    if not info.frames or key(PIXEL_DATA) not in metadata:
        return None
    values = metadata.get(NUMBER_OF_FRAMES_KEY, {}).get("Value") or [1]
    try:
        expected = int(values[0])
    except (TypeError, ValueError):
        return f"Number of Frames {values[0]!r} is not a number"
    cut = incomplete_frame(info.skeleton)
    if cut is not None and len(info.frames) == cut - 1 and cut <= expected + 1:
        pass  # the file ends inside Pixel Data: the whole frames are stored
    elif expected != len(info.frames):
        return f"Number of Frames is {expected}, {len(info.frames)} frames are stored"
    try:
        pixel = PixelDescription.from_metadata(metadata)
    except (TypeError, ValueError):
        return "the Image Pixel Module attributes are not numbers"
    syntax = info.frame_syntax(1)
    if syntax in NATIVE_PIXEL_DATA:
        size = info.frames[0].size
        if size != pixel.frame_size:
            return (
                f"a native frame has {size} bytes; Rows, Columns, Samples per Pixel and Bits "
                f"Allocated give {pixel.frame_size}"
            )
        return None
    from dicomweb_archive.dicom.codecs import decode_frame  # noqa: PLC0415 - decoding only

    try:
        array, _ = decode_frame(bytes(frames.read_stored(1)), syntax, info.stored.pixel or pixel)
    except CodecError as exc:
        return f"frame 1 cannot be decoded: {exc}"
    if array.shape[:2] != (pixel.rows, pixel.columns):
        shown = f"{array.shape[1]}x{array.shape[0]}"
        return f"frame 1 decodes to {shown}, the metadata says {pixel.columns}x{pixel.rows}"
    return None


class _Hashing:
    """Wraps a chunk iterator, hashing and counting; can be iterated once, by one reader."""

    def __init__(self, chunks: Iterator[bytes | memoryview]) -> None:
        self.chunks = chunks
        self.sha = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes | memoryview]:
        for chunk in self.chunks:
            self.sha.update(chunk)
            self.size += len(chunk)
            yield chunk


def _derive(checked: _Hashing, info: InfoRecord) -> JsonObject | None:
    """The metadata of the rebuilt file, derived as ingest derives it; AvailableTransferSyntaxUID
    (0008,3002) names the stored frames' transfer syntaxes, which recompression chose."""
    stream = io.BufferedReader(ChunkStream(iter(checked)), buffer_size=1 << 20)
    for part in generate_parts(
        stream,
        frames_uri=lambda meta: frames_uri(_first(meta, SOP_INSTANCE_UID_KEY)),
        bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
    ):
        if isinstance(part, InstanceEnd):
            if info.frames:
                part.metadata[AVAILABLE_TRANSFER_SYNTAX_UID_KEY] = {
                    "vr": "UI",
                    "Value": info.stored_syntaxes(),
                }
            return part.metadata
    return None


def _first(metadata: JsonObject, key: str) -> str:
    values = metadata.get(key, {}).get("Value") or [""]
    return str(values[0])


class FrameChecker:
    """Reads stored frames for a rebuild, checking each against the info record once."""

    def __init__(
        self,
        reader: Reader,
        archive: Archive,
        key: InstanceKey,
        info: InfoRecord,
        *,
        check_pixels: bool = True,
    ) -> None:
        self.reader, self.keys, self.key, self.info = reader, archive.keys, key, info
        #: check each decoded recompressed frame against the source pixels' SHA-256 (off
        #: where the whole rebuilt file is checked against the original's)
        self.check_pixels = check_pixels
        self.limits = inline_limits(archive)
        self.cache: tuple[int, memoryview] | None = None
        self.source_cache: tuple[int, bytes | memoryview] | None = None
        #: the pixels read_stored decoded to check a frame (a frame is decoded once)
        self.decoded: tuple[int, bytes] | None = None
        self.findings: list[Finding] = []
        self.bad = False

    def read(self, number: int) -> bytes | memoryview:
        """Frame ``number`` as received (decoded, for a recompressed frame)."""
        record = self.info.frames[number - 1]
        if not record.recompressed:
            return self.read_stored(number)
        if self.source_cache is None or self.source_cache[0] != number:
            from dicomweb_archive.dicom.recompress import source_frame  # noqa: PLC0415

            stored = self.read_stored(number)
            if self.decoded is not None and self.decoded[0] == number:
                data: bytes | memoryview = self.decoded[1]  # checked against the source hash
            else:
                data = source_frame(stored, record, self.info.stored.pixel, self.read_bulk)
            self.source_cache = (number, data)
        return self.source_cache[1]

    def read_stored(self, number: int) -> memoryview:
        """Frame ``number`` as stored; a losslessly recompressed frame whose original is not
        kept must decode to the source pixels recorded at ingest."""
        if self.cache is not None and self.cache[0] == number:
            return self.cache[1]
        data = read_frame(self.reader, self.keys, self.key, number)
        record = self.info.frames[number - 1]
        if hashlib.sha256(data).hexdigest() != record.sha256:
            self.bad = True
            name = self.keys.frame(self.key.study, self.key.series, self.key.sop, number)
            self.findings.append(Finding("hash", name, "frame differs from its SHA-256"))
        if record.source is not None and record.source.bulk is None:
            if self.info.stored.pixel is None:
                raise CodecError("the info record lacks the pixel description of its frames")
            from dicomweb_archive.dicom.recompress import source_pixels  # noqa: PLC0415

            pixels = source_pixels(  # CodecError: they differ
                data, record, self.info.stored.pixel, check=self.check_pixels
            )
            self.decoded = (number, pixels)
        self.cache = (number, data)
        return data

    def pixels_differ(self) -> str | None:
        """Why the first recompressed frame whose decoded pixels differ from the source's
        (the SHA-256 recorded at ingest) is wrong; None when every one matches."""
        from dicomweb_archive.dicom.recompress import source_pixels  # noqa: PLC0415

        pixel = self.info.stored.pixel
        for number, record in enumerate(self.info.frames, start=1):
            if pixel is None or record.source is None or record.source.bulk is not None:
                continue
            try:
                source_pixels(read_frame(self.reader, self.keys, self.key, number), record, pixel)
            except CodecError as exc:
                return f"frame {number}: {exc}"
        return None

    def read_bulk(self, sha: str) -> bytes:
        data = read_bulk(self.reader, self.keys, self.key.study, sha)
        if hashlib.sha256(data).hexdigest() != sha:
            self.bad = True
            name = self.keys.bulkdata(self.key.study, sha)
            self.findings.append(Finding("hash", name, "bulk data differs from its name"))
        return data

    def check_extra(self) -> None:
        prefix = self.keys.frames_dir(self.key.study, self.key.series, self.key.sop)
        expected = {f"{n}.mht" for n in range(1, len(self.info.frames) + 1)}
        present = set(self.reader.children(prefix))
        for name in sorted(present - expected):
            self.findings.append(Finding("orphan", prefix + name, "frame file not recorded"))
        for name in sorted(expected - present):  # frames no skeleton segment refers to
            self.bad = True
            self.findings.append(Finding("missing", prefix + name, "missing"))
