"""One instance de-identified (PS3.15 E.1): its P10 stream rebuilt with the profile applied to
every element wherever it sits.

- File Meta Information (PS3.10 7.1): only File Meta Information Version, Media Storage SOP
  Class UID, Media Storage SOP Instance UID (as the SOP Instance UID), Transfer Syntax UID and the
  implementation's class UID and version name are kept; AE titles, presentation addresses,
  Private Information Creator UID and Private Information are removed. The preamble is
  zeroed.
- The data set: the Table E.1-1 actions of :mod:`dicomweb_archive.model.deid`, in the head
  (before Pixel Data) and in every element after it (private groups such as 7FE1, elements
  written out of order, padding); nested sequences too. An edited instance's copies after
  Pixel Data carry its edits first, as its export does (``dicom/tail.py``).
- Free text (PS3.15 E.1.1): a kept free-text attribute repeating a value the profile removes
  (the Study Description as a Code Meaning) gets a dummy value; sequences an option marks C
  (Clean Descriptors, Clean Structured Content, PS3.15 E.3.5, E.3.4) keep their items with
  every free text but coded concepts dummied.
- Private attributes are removed; with Retain Safe Private (PS3.15 E.3.10) those Table
  E.3.10-1 lists for their block's Private Creator are kept, with that creator (PS3.5 7.8.1),
  at every level (the top level's blocks found in the whole instance, so that elements after
  Pixel Data find their creator).
- A deflated original (PS3.5 A.5) comes out inflated, Explicit VR Little Endian.
- Frames are never decoded unless they are cleaned: an Explicit VR Little Endian original
  whose frames the store keeps recompressed losslessly comes out in the stored syntax, its
  stored codestreams as they are (like an original whose codestreams were not kept).
- Pixel cleaning (PS3.15 E.3.1): with the profile's rules, the frames a matching rule's
  rectangles touch are blanked (:mod:`dicomweb_archive.dicom.clean_pixels`), Burned In
  Annotation (0028,0301) becomes NO and Clean Pixel Data Option (113101) is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.clean_pixels import Areas, check_cleanable, pixel_element
from dicomweb_archive.dicom.deid_walk import (
    PIXEL_DATA,
    PIXEL_TAGS,
    edit_dataset,
    rebuild_meta,
    walk_rest,
)
from dicomweb_archive.dicom.edit import Edit
from dicomweb_archive.dicom.parse import Element, parse_dataset, parse_p10
from dicomweb_archive.dicom.skeleton import ChunkStream, generate_bytes
from dicomweb_archive.dicom.steps import apply_to_head, changed_tags, head_bytes, split_head
from dicomweb_archive.dicom.tail import generate_edited_rest
from dicomweb_archive.errors import ArchiveError
from dicomweb_archive.model.deid import (
    CODE_ATTRIBUTES,
    DEIDENTIFICATION_METHOD,
    DUMMY,
    FREE_TEXT_VRS,
    PATIENT_ID,
    PATIENT_NAME,
    TEMPORAL_VRS,
    Profile,
    safe_private,
    text_values,
)
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.pixel import PixelDescription
from dicomweb_archive.model.syntax import EXPLICIT_VR_LITTLE_ENDIAN, NATIVE
from dicomweb_archive.model.tags import AVAILABLE_TRANSFER_SYNTAX_UID_KEY, PATIENT_ID_KEY
from dicomweb_archive.ops.reconstruct import FrameReaders
from dicomweb_archive.ops.state import Instance
from dicomweb_archive.store.instance import read_bulk

JsonObject = dict[str, Any]
Path_ = tuple[tuple[int, int | None], ...]
PATIENT_IDENTITY_REMOVED = 0x00120062
DEIDENTIFICATION_METHOD_TAG = 0x00120063
DEIDENTIFICATION_METHOD_CODES = 0x00120064
LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED = 0x00280303
OURS = frozenset(
    {
        PATIENT_IDENTITY_REMOVED,
        DEIDENTIFICATION_METHOD_TAG,
        DEIDENTIFICATION_METHOD_CODES,
        LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
    }
)
BURNED_IN_ANNOTATION = 0x00280301
#: Extended Offset Table (7FE0,0001) and its Lengths (7FE0,0002), PS3.5 A.4
EXTENDED_OFFSET_TABLE = (0x7FE00001, 0x7FE00002)
MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
TRANSFER_SYNTAX_UID = 0x00020010
#: File Meta Information Version, Media Storage SOP Class UID, Media Storage SOP Instance UID,
#: Transfer Syntax UID, Implementation Class UID, Implementation Version Name (PS3.10 7.1)
KEPT_META = frozenset(
    {
        0x00020001,
        0x00020002,
        MEDIA_STORAGE_SOP_INSTANCE_UID,
        TRANSFER_SYNTAX_UID,
        0x00020012,
        0x00020013,
    }
)


def patient_id(metadata: dict[str, Any]) -> str:
    """The Patient ID (0010,0020) an instance is de-identified by (its pseudonym, date shift
    and patient map entry): its first value, ``""`` when absent or empty."""
    return str(metadata.get(PATIENT_ID_KEY, {}).get("Value", [""])[0] or "")


def deidentified_stream(
    archive: Archive,
    instance: Instance,
    profile: Profile,
    applied: set[tuple[int, str]] | None = None,
) -> ChunkStream:
    """The instance as it is now (edit steps applied), de-identified (see the module
    docstring); ``applied`` collects (tag, what was done) as the stream is read. Raises
    :class:`ArchiveError` (or ``ValueError``) when it cannot be."""
    storage, keys = archive.storage, archive.keys
    key, info, metadata = instance.key, instance.info, instance.metadata

    def bulk(sha: str) -> bytes:
        return read_bulk(storage, keys, key.study, sha)

    skeleton, deflated = _inflated(info.skeleton)
    segments, rest = split_head(skeleton)
    original = head_bytes(segments, bulk)
    head = apply_to_head(original, instance.steps, bulk, name=key.sop)
    edited_head = head
    if deflated is None:
        parsed = parse_p10(head, name=key.sop)
        if parsed.inflated is not None:  # kept literally, deflated: the whole file is the head
            head, deflated = head[: parsed.dataset_offset] + parsed.inflated, parsed.dataset_offset
    if deflated is not None:
        meta_end, meta, syntax = deflated, _meta_elements(head, deflated), EXPLICIT_VR_LITTLE_ENDIAN
        top = parse_dataset(head, meta_end, implicit=False, little=True)
        dataset, end = top.elements, top.end
        implicit, little = False, True
    else:
        meta_end, meta, syntax = parsed.dataset_offset, parsed.meta, parsed.transfer_syntax
        dataset, end, implicit, little = (
            parsed.dataset,
            parsed.dataset_end,
            parsed.implicit,
            parsed.little,
        )
    readers = FrameReaders(storage, keys, key, info)
    stored_form = not info.rebuilds_original() or _passes_stored(info, syntax)
    if stored_form:  # the stored form: its frames' one transfer syntax
        syntaxes = info.stored_syntaxes()
        if len(syntaxes) != 1:
            raise ArchiveError(f"{key.sop}: its frames are stored in several transfer syntaxes")
        syntax = syntaxes[0]
    pixel_data, areas = _pixel_data(profile, instance, syntax, readers, stored_form=stored_form)
    patient = patient_id(metadata)
    context = _Context(profile, profile.date_offset(patient), profile.patient(patient))
    context.removed = _removed_texts(profile, metadata, top=True, gone=False)
    context.safe_top = _safe(profile, metadata)
    if applied is not None:
        context.applied = applied
    edits = context.edits(_subset(metadata, dataset), ())
    edits.append(Edit(((PATIENT_IDENTITY_REMOVED, None),), "CS", "YES"))
    edits.append(Edit(((DEIDENTIFICATION_METHOD_TAG, None),), "LO", DEIDENTIFICATION_METHOD))
    present = {element.tag for element in dataset}
    codes = profile.method_codes(cleaned=bool(areas))
    edits.append(Edit(((DEIDENTIFICATION_METHOD_CODES, None),), "SQ", None, codes=codes))
    if areas:  # PS3.15 E.3.1: the pixels no longer carry the text the rules blank
        edits.append(Edit(((BURNED_IN_ANNOTATION, None),), "CS", "NO"))
        context.applied |= {(BURNED_IN_ANNOTATION, "set to NO"), (PIXEL_DATA, "pixels cleaned")}
    if pixel_data is not None and syntax not in NATIVE:  # its offsets no longer hold
        edits += [Edit(((t, None),), "OV", None) for t in EXTENDED_OFFSET_TABLE if t in present]
    edits.append(
        Edit(
            ((LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED, None),),
            "CS",
            profile.temporal_information(),
        )
    )
    values = {TRANSFER_SYNTAX_UID: syntax}
    if any(e.tag == MEDIA_STORAGE_SOP_INSTANCE_UID for e in meta):  # the data set's, as it is
        kept = profile.action(MEDIA_STORAGE_SOP_INSTANCE_UID, "UI") == "K"  # Retain UIDs
        values[MEDIA_STORAGE_SOP_INSTANCE_UID] = key.sop if kept else profile.uid(key.sop)
    prefix = b"\0" * 128 + b"DICM" if meta_end >= 132 and head[128:132] == b"DICM" else b""
    if meta:
        prefix += rebuild_meta(head, meta, keep=KEPT_META, values=values)
    body = edit_dataset(head[meta_end:end], edits, syntax=syntax, name=key.sop)

    def edit_run(run: bytes) -> bytes:
        elements = parse_dataset(run, implicit=implicit, little=little).elements
        return edit_dataset(
            run, context.edits(_subset(metadata, elements), ()), syntax=syntax, name=key.sop
        )

    if pixel_data is None:
        stream: Iterator[bytes | memoryview] = readers.generate(rest)
    else:  # the frames of the original element are not read (placeholders of their length)
        stream = generate_bytes(
            rest,
            read_frame=_zeros(info, stored=False),
            read_bulk=readers.bulk,
            read_stored=_zeros(info, stored=True),
        )
    if instance.steps:  # an edited instance's copies after Pixel Data as export gives them
        stream = generate_edited_rest(
            stream,
            original=original,
            head=edited_head,
            changed=changed_tags(info.metadata or {}, instance.steps),
            name=key.sop,
        )
    chunks = walk_rest(
        head[end:],
        stream,
        implicit=implicit,
        little=little,
        edit_run=edit_run,
        name=key.sop,
        pixel_data=pixel_data,
    )
    return ChunkStream(_chain(prefix + body, chunks))


def _passes_stored(info: InfoRecord, syntax: str) -> bool:
    """Whether the instance is written in its stored form although its original can be
    rebuilt: an Explicit VR Little Endian original whose every frame was recompressed
    losslessly at ingest (the stored codestreams then pass through as they are, never decoded
    and encoded again; the de-identified instance is received in the stored syntax). Not for
    colour-by-plane frames or an instance whose file ends inside Pixel Data."""
    frames = info.frames
    pixel = info.stored.pixel
    return (
        syntax == EXPLICIT_VR_LITTLE_ENDIAN
        and bool(frames)
        and all(
            f.source is not None
            and f.source.bulk is None
            and f.source.transfer_syntax_uid == syntax
            for f in frames
        )
        and (pixel is None or pixel.samples_per_pixel == 1 or pixel.planar_configuration == 0)
        and incomplete_frame(info.skeleton) is None
    )


def _pixel_data(
    profile: Profile,
    instance: Instance,
    syntax: str,
    readers: FrameReaders,
    *,
    stored_form: bool,
) -> tuple[Callable[[bytes], Iterator[bytes | memoryview]] | None, Areas]:
    """How Pixel Data is written anew (None: passed through as it is read), and the areas of
    each frame the profile's pixel cleaning rules blank (PS3.15 E.3.1; none when no rule
    matches or the rule's rectangles miss the image). Raises :class:`ArchiveError` when the
    frames need cleaning and cannot be (:func:`check_cleanable`)."""
    info, metadata = instance.info, instance.metadata
    rule = profile.pixel_rules.match(metadata) if profile.pixel_rules is not None else None
    pixel = PixelDescription.from_metadata(metadata)
    count = len(info.frames)
    areas = rule.frames(count, pixel.rows, pixel.columns) if rule is not None else {}
    if areas:
        check_cleanable(syntax, pixel)
        if incomplete_frame(info.skeleton) is not None:
            raise ArchiveError("its file ends inside Pixel Data: its pixels cannot be cleaned")
    elif not (stored_form and info.rebuilds_original()):
        return None, areas
    read = readers.stored if stored_form else readers.frame

    def write(header: bytes) -> Iterator[bytes | memoryview]:
        return pixel_element(
            header, syntax=syntax, count=count, read=read, pixel=pixel, areas=areas
        )

    return write, areas


def _zeros(info: InfoRecord, *, stored: bool) -> Callable[[int], memoryview]:
    """A frame reader giving zeros of each frame's length (as received, or as stored), for
    a Pixel Data element that is read through and not used."""
    sizes = [f.size if stored or f.source is None else f.source.size for f in info.frames]
    zeros = memoryview(bytes(max(sizes, default=0)))
    return lambda number: zeros[: sizes[number - 1]]


def _chain(first: bytes, rest: Iterator[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    yield first
    yield from rest


def _inflated(skeleton: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int | None]:
    """The skeleton with a deflated data set's inner segments in place of the deflate segment
    (the data set inflated), and where the data set starts (None when it was not deflated)."""
    for index, segment in enumerate(skeleton):
        if "deflate" in segment:
            before = skeleton[:index]
            if not all("literal" in s for s in before):
                raise ArchiveError("the deflated data set's header is not stored literally")
            start = len(head_bytes(before, lambda _sha: b""))
            return [*before, *segment["segments"], *skeleton[index + 1 :]], start
    return skeleton, None


def _meta_elements(head: bytes, end: int) -> list[Element]:
    """The File Meta Information elements (group 0002) of a head whose data set starts at
    ``end``."""
    start = 132 if head[128:132] == b"DICM" else 0
    elements = parse_dataset(head[:end], start, implicit=False, little=True).elements
    return [e for e in elements if e.group == 0x0002]


def _subset(metadata: JsonObject, elements: list[Element]) -> JsonObject:
    """The metadata of these top-level elements (an element the metadata lacks, such as a
    duplicate or an unknown private one, by its VR only)."""
    out: JsonObject = {}
    for element in elements:
        key = f"{element.tag:08X}"
        out[key] = metadata.get(key) or {"vr": element.vr}
    return out


def _removed_texts(profile: Profile, dataset: JsonObject, *, top: bool, gone: bool) -> set[str]:
    """The original free-text values (:func:`text_values`) of a data set that the profile
    removes or replaces: attributes the table does not keep, Patient ID and Patient's Name,
    and, inside a sequence removed, emptied or cleaned (``gone``), every free text but the
    coded concepts."""
    out: set[str] = set()
    for key, element in dataset.items():
        tag, vr = int(key, 16), element.get("vr", "UN")
        action = profile.action(tag, vr)
        if vr == "SQ":
            inner = gone or action in ("X", "Z", "D", "C")
            for item in element.get("Value") or []:
                out |= _removed_texts(profile, item, top=False, gone=inner)
        elif vr in FREE_TEXT_VRS and (
            (top and tag in (PATIENT_ID, PATIENT_NAME))
            or action in ("X", "Z", "D", "C", "U")
            or (gone and tag not in CODE_ATTRIBUTES)
        ):
            out |= text_values(element)
    return out


class _Context:
    """What the edits of one instance depend on: the profile, the patient's date offset and
    the patient's new identity, and the free-text values the profile removes (``removed``:
    a kept attribute repeating one of them is given a dummy value)."""

    def __init__(self, profile: Profile, days: int, patient: tuple[str, str]) -> None:
        self.profile = profile
        self.days = days
        self.patient = patient
        self.removed: set[str] = set()
        #: the top level's safe private attributes and creators (Retain Safe Private)
        self.safe_top: frozenset[int] = frozenset()
        #: (tag, what was done): every kind of change made, for the report
        self.applied: set[tuple[int, str]] = set()

    def edits(self, dataset: JsonObject, prefix: Path_, *, clean: bool = False) -> list[Edit]:
        """Edits for every attribute of a data set (and its items) that the profile changes;
        ``clean``: the data set is an item of a cleaned sequence (PS3.15 E.3.5, E.3.4), whose
        free text other than coded concepts gets a dummy value."""
        out: list[Edit] = []
        safe = _safe(self.profile, dataset) if prefix else self.safe_top
        for key, element in dataset.items():
            tag = int(key, 16)
            if tag in PIXEL_TAGS or tag in OURS:
                continue
            if key == AVAILABLE_TRANSFER_SYNTAX_UID_KEY and not prefix:
                continue  # AvailableTransferSyntaxUID: ours, not in the file
            path = (*prefix, (tag, None))
            out += self.element_edits(tag, element, path, clean=clean, safe=tag in safe)
        return out

    def element_edits(
        self, tag: int, element: JsonObject, path: Path_, *, clean: bool = False, safe: bool = False
    ) -> list[Edit]:
        """The edits of one element (and its items), each kind noted in :attr:`applied`;
        ``safe``: a safe private attribute or its creator (:func:`safe_private`)."""
        label, edits = self._element_edits(tag, element, path, clean=clean, safe=safe)
        if label:
            self.applied.add((tag, label))
        return edits

    def _element_edits(
        self, tag: int, element: JsonObject, path: Path_, *, clean: bool, safe: bool
    ) -> tuple[str, list[Edit]]:
        vr = element.get("vr", "UN")
        values = element.get("Value") or []
        profile = self.profile
        if len(path) == 1 and tag in (PATIENT_ID, PATIENT_NAME):
            new = self.patient[0] if tag == PATIENT_ID else self.patient[1]
            return _PSEUDONYM[profile.patients is not None], [Edit(path, vr, new)]
        action = profile.action(tag, vr, safe=safe)
        if action is None and vr in FREE_TEXT_VRS:
            if clean and tag not in CODE_ATTRIBUTES:
                return "dummy value (cleaned)", [Edit(path, vr, DUMMY[vr])]
            if text_values(element) & self.removed:
                return "dummy value (repeats a removed value)", [Edit(path, vr, DUMMY[vr])]
        if action == "C" and vr == "SQ":  # cleaned: its items kept, their free text dummied
            return "cleaned", [
                edit
                for index, item in enumerate(values)
                for edit in self.edits(item, (*path[:-1], (tag, index)), clean=True)
            ]
        if action == "C" and vr in TEMPORAL_VRS and "retain-modified-dates" in profile.options:
            if vr == "TM":
                return "kept", []  # a shift by whole days keeps the time of day
            shifted = [profile.shift(vr, str(v), self.days) if v else "" for v in values]
            return "shifted", [Edit(path, vr, "\\".join(shifted))]
        if action in ("D", "C") and (vr not in DUMMY or vr == "SQ"):
            action = "Z" if vr == "SQ" else "X"  # no dummy value for this VR: empty or remove
        if action == "X":
            return "removed", [Edit(path, vr, None)]
        if action == "Z":
            return "emptied", [Edit(path, vr, "")]
        if action in ("D", "C"):
            return "dummy value", [Edit(path, vr, DUMMY[vr])]
        uid = action == "U" or (action is None and _is_instance_uid(tag))
        if uid and vr == "UI":
            new_uids = "\\".join(profile.uid(str(v)) if v else "" for v in values)
            return "UID replaced", [Edit(path, vr, new_uids)]
        if vr == "SQ":
            out: list[Edit] = []
            for index, item in enumerate(values):
                out += self.edits(item, (*path[:-1], (tag, index)), clean=clean)
            return "", out
        return ("kept (option)" if action == "K" else ""), []


def _safe(profile: Profile, dataset: JsonObject) -> frozenset[int]:
    """The safe private attributes and creators of one level of a data set, when the profile
    retains them (PS3.15 E.3.10), else none."""
    return safe_private(dataset) if "retain-safe-private" in profile.options else frozenset()


_PSEUDONYM = {False: "keyed pseudonym", True: "from the patient map"}


def _is_instance_uid(tag: int) -> bool:
    """UIDs of instances, series, studies and frames of reference, even where Table E.1-1
    does not list the attribute (e.g. in sequences of references): remapped consistently."""
    return tag in {
        0x00081155,  # ReferencedSOPInstanceUID
        0x0020000D,
        0x0020000E,
        0x00080018,
        0x00200052,
    }
