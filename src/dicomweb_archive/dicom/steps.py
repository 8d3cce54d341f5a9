"""Edit steps: how an edited instance differs from the file it was ingested as.

An instance's info record is written once, at ingest, and never changes; what later edits did
to it is a list of **steps** (kept per study, ``store/edit_state.py``). Applying the steps in
order to the file's head (everything before the Pixel Data value, PS3.5 7) gives the edited
file: :func:`apply_to_head`, used by export and verify. Applying them to the instance's DICOM
JSON (PS3.18 F.2) gives its served metadata without parsing any file: :func:`apply_to_json`,
used by edits and the study stage. Both must agree: the JSON of an edited element is made by
encoding it as :func:`~dicomweb_archive.dicom.edit.edit_head` does and decoding it as ingest
does, and ``tests/test_steps.py`` checks the two paths against each other.

Two kinds of step:

- **edits**: set, empty or remove elements (``dicom/edit.py``'s :class:`Edit`), optionally
  recording the previous values in an Original Attributes Sequence item (PS3.3 C.12.1). The
  switch of Specific Character Set (0008,0005) to ``ISO_IR 192`` that a non-ASCII value may
  need is decided when the step is made and stored as one of its edits, so that applying a
  step never depends on more than its input.
- **snapshot**: the head and the metadata as they are after the step, for what cannot be
  applied element by element (an edit of Specific Character Set itself, which changes how
  every text value decodes; an edit made before steps existed, on an upgraded store).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from dicomweb_archive.dicom.edit import (
    MODIFIED_ATTRIBUTES_SEQUENCE,
    ORIGINAL_ATTRIBUTES_SEQUENCE,
    Edit,
    OriginalAttributes,
    check_original_attributes,
    edit_head,
    encode_value,
    fits,
    utf8_switch,
)
from dicomweb_archive.dicom.parse import Element
from dicomweb_archive.errors import UsageError
from dicomweb_archive.model import charset
from dicomweb_archive.model.dicom_json import JsonContext, to_json_element
from dicomweb_archive.model.tags import (
    AVAILABLE_TRANSFER_SYNTAX_UID_KEY,
    FLOAT_PIXEL_DATA_KEY,
    SPECIFIC_CHARACTER_SET,
    key,
)

if TYPE_CHECKING:  # (parts_model imports the info record and recompression models)
    from dicomweb_archive.dicom.parts_model import BulkPart, InlineLimits
    from dicomweb_archive.dicom.skeleton import Segment

JsonObject = dict[str, Any]
CHARSET_KEY = key(SPECIFIC_CHARACTER_SET)
UTF8_TERM = "ISO_IR 192"
BulkReader = Callable[[str], bytes | memoryview]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The head (skeleton segments: literals and bulk data) and metadata after a step."""

    head: tuple[Segment, ...]
    metadata: JsonObject


@dataclass(frozen=True, slots=True)
class Step:
    """One change's edits of one instance (see the module docstring)."""

    change: str
    edits: tuple[Edit, ...] = ()
    original_attributes: OriginalAttributes | None = None
    snapshot: Snapshot | None = None

    def to_json(self) -> JsonObject:
        value: JsonObject = {"change": self.change}
        if self.snapshot is not None:
            value["snapshot"] = {
                "head": list(self.snapshot.head),
                "metadata": self.snapshot.metadata,
            }
            return value
        value["edits"] = [
            {"path": [list(step) for step in edit.path], "vr": edit.vr, "value": edit.value}
            for edit in self.edits
        ]
        if self.original_attributes is not None:
            record = self.original_attributes
            value["original_attributes"] = {
                "modifying_system": record.modifying_system,
                "reason": record.reason,
                "when": record.when,
            }
        return value

    @classmethod
    def from_json(cls, value: JsonObject) -> Step:
        if "snapshot" in value:
            snap = value["snapshot"]
            return cls(value["change"], snapshot=Snapshot(tuple(snap["head"]), snap["metadata"]))
        edits = tuple(
            Edit(tuple((int(t), i) for t, i in edit["path"]), edit["vr"], edit["value"])
            for edit in value["edits"]
        )
        record = value.get("original_attributes")
        return cls(
            value["change"],
            edits,
            OriginalAttributes(record["modifying_system"], record["reason"], record["when"])
            if record
            else None,
        )


def sets_character_set(edits: tuple[Edit, ...] | list[Edit]) -> bool:
    """Whether a user's edits touch Specific Character Set (0008,0005): every text value then
    decodes anew, so the step is a :func:`snapshot_step`."""
    return any(edit.path[0][0] == SPECIFIC_CHARACTER_SET for edit in edits)


def edits_step(
    change: str,
    edits: list[Edit],
    metadata: JsonObject,
    *,
    original_attributes: OriginalAttributes | None,
    head: Callable[[], bytes],
    name: str,
) -> Step:
    """The step that applies ``edits`` (none of them to Specific Character Set: those need a
    :func:`snapshot_step`) to an instance whose metadata is ``metadata`` now. ``head`` gives
    its current head, read only when a text value does not fit its character set: the switch
    to ``ISO_IR 192`` is then decided on its bytes, as :func:`edit_head` decides it."""
    declared = CHARSET_KEY in metadata
    encodings = list(_encodings_of_json(metadata.get(CHARSET_KEY)))
    if not all(fits(e, declared=declared, encodings=encodings) for e in edits) and utf8_switch(
        head(), edits, name=name
    ):
        edits = [*edits, Edit(((SPECIFIC_CHARACTER_SET, None),), "CS", UTF8_TERM)]
    if original_attributes is not None:  # refused before anything changes when too deep
        check_original_attributes(head(), edits, name=name)
    return Step(change, tuple(edits), original_attributes)


def snapshot_step(
    change: str,
    head: bytes,
    metadata: JsonObject,
    edits: list[Edit],
    *,
    original_attributes: OriginalAttributes | None,
    limits: InlineLimits,
    frames_uri: Callable[[JsonObject], str],
    bulk_uri: Callable[[JsonObject, str], str],
    name: str,
) -> tuple[Step, list[BulkPart]]:
    """A step holding the head and metadata after ``edits`` (derived from the edited bytes as
    ingest derives them), and any bulk data they hold that is new."""
    from dicomweb_archive.dicom.parts import decompose_head, fill_uris  # noqa: PLC0415 - rare

    new_head = edit_head(head, edits, name=name, original_attributes=original_attributes)
    new_json, segments, bulk = decompose_head(new_head, limits=limits, name=name)
    # what the head does not give: Pixel Data and later elements, AvailableTransferSyntaxUID
    merged = {
        k: v
        for k, v in metadata.items()
        if k >= FLOAT_PIXEL_DATA_KEY or k == AVAILABLE_TRANSFER_SYNTAX_UID_KEY
    }
    merged.update(new_json)
    merged = dict(sorted(merged.items()))
    fill_uris(merged, frames_uri=frames_uri, bulk_uri=bulk_uri)
    return Step(change, snapshot=Snapshot(tuple(segments), merged)), bulk


def split_head(skeleton: list[Segment]) -> tuple[list[Segment], list[Segment]]:
    """An info record's skeleton as (head, rest): the leading literal and unswapped bulk-data
    segments are the file's head (everything before the Pixel Data value)."""
    for index, segment in enumerate(skeleton):
        if "deflate" in segment:
            raise UsageError("deflated data sets cannot be edited in place")
        if not ("literal" in segment or ("bulk" in segment and "swap" not in segment)):
            return skeleton[:index], skeleton[index:]
    return list(skeleton), []


# -- bytes ------------------------------------------------------------------------------------
def head_bytes(segments: list[Segment] | tuple[Segment, ...], read_bulk: BulkReader) -> bytes:
    """The bytes of head segments (literals and unswapped bulk data)."""
    parts: list[bytes] = []
    for segment in segments:
        if "literal" in segment:
            parts.append(base64.b64decode(segment["literal"]))
        else:
            parts.append(bytes(read_bulk(segment["bulk"])))
    return b"".join(parts)


def apply_to_head(head: bytes, steps: list[Step], read_bulk: BulkReader, *, name: str) -> bytes:
    """The file's head after ``steps`` (the original head when there are none)."""
    for step in steps:
        if step.snapshot is not None:
            head = head_bytes(step.snapshot.head, read_bulk)
        else:
            head = edit_head(
                head, list(step.edits), name=name, original_attributes=step.original_attributes
            )
    return head


def changed_tags(metadata: JsonObject, steps: list[Step]) -> set[int]:
    """The top-level attributes ``steps`` change (edited, or whose metadata they change: a
    snapshot's, the Original Attributes Sequence): their copies after Pixel Data are changed
    with the head (``dicom/tail.py``)."""
    tags: set[int] = set()
    for step in steps:
        after = _apply_step(metadata, step)
        tags |= {edit.path[0][0] for edit in step.edits}
        tags |= {
            int(k, 16) for k in metadata.keys() | after.keys() if metadata.get(k) != after.get(k)
        }
        metadata = after
    return tags


# -- JSON -------------------------------------------------------------------------------------
def apply_to_json(metadata: JsonObject, steps: list[Step]) -> JsonObject:
    """The metadata after ``steps``; ``metadata`` is not changed (what a step does not touch is
    shared with it)."""
    for step in steps:
        metadata = _apply_step(metadata, step)
    return metadata


def _apply_step(metadata: JsonObject, step: Step) -> JsonObject:
    if step.snapshot is not None:
        return step.snapshot.metadata
    edits = list(step.edits)
    new_charset = next(
        (e for e in edits if e.path == ((SPECIFIC_CHARACTER_SET, None),) and e.value), None
    )
    encode_with = (
        _encodings_of_value(new_charset.value)
        if new_charset is not None and new_charset.value
        else _encodings_of_json(metadata.get(CHARSET_KEY))
    )
    out = _apply_edits(metadata, edits, 0, encode_with, encode_with)
    if step.original_attributes is not None:
        out = dict(out)
        _append_original_attributes(out, metadata, edits, step.original_attributes, encode_with)
    return dict(sorted(out.items()))


def _apply_edits(
    dataset: JsonObject,
    edits: list[Edit],
    depth: int,
    encode_with: tuple[str, ...],
    decode_with: tuple[str, ...],
) -> JsonObject:
    """A data set (or item) with the edits of this depth and below, as ``edit_head`` makes it."""
    if depth and CHARSET_KEY in dataset:  # an item with its own character set (PS3.5 7.5.3)
        decode_with = _encodings_of_json(dataset[CHARSET_KEY])
    here = {edit.path[depth][0]: edit for edit in edits if len(edit.path) == depth + 1}
    deeper: dict[int, list[Edit]] = {}
    for edit in edits:
        if len(edit.path) > depth + 1:
            deeper.setdefault(edit.path[depth][0], []).append(edit)
    out = dict(dataset)
    for tag, edit in here.items():
        name = key(tag)
        if edit.value is None:
            out.pop(name, None)
        else:
            out[name] = element_json(tag, edit.vr, edit.value, encode_with, decode_with)
    for tag, nested in deeper.items():
        name = key(tag)
        if name not in dataset:
            raise UsageError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is not in the data set")
        if tag in here:
            continue  # the whole element is set or removed: edits inside it do nothing
        element = dataset[name]
        if element.get("vr") != "SQ":
            raise UsageError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is not a sequence")
        items = list(element.get("Value") or [])
        by_item: dict[int, list[Edit]] = {}
        for edit in nested:
            index = edit.path[depth][1]
            if index is None or index >= len(items):
                raise UsageError(f"item {index} of the sequence does not exist")
            by_item.setdefault(index, []).append(edit)
        for index, item_edits in by_item.items():
            items[index] = dict(
                sorted(
                    _apply_edits(
                        items[index], item_edits, depth + 1, encode_with, decode_with
                    ).items()
                )
            )
        out[name] = {**element, "Value": items}
    return out


def _append_original_attributes(
    out: JsonObject,
    before: JsonObject,
    edits: list[Edit],
    record: OriginalAttributes,
    encodings: tuple[str, ...],
) -> None:
    """The Original Attributes Sequence item ``edit_head`` appends, as its JSON: the previous
    top-level elements the edits change, and who, when and why (PS3.3 C.12.1)."""
    touched = sorted({edit.path[0][0] for edit in edits})
    old = {key(tag): before[key(tag)] for tag in touched if key(tag) in before}
    item = {
        key(MODIFIED_ATTRIBUTES_SEQUENCE): {"vr": "SQ", "Value": [old]},
        key(0x04000562): element_json(0x04000562, "DT", record.when, encodings, encodings),
        key(0x04000563): element_json(
            0x04000563, "LO", record.modifying_system, encodings, encodings
        ),
        key(0x04000564): {"vr": "LO"},
        key(0x04000565): element_json(0x04000565, "CS", record.reason, encodings, encodings),
    }
    name = key(ORIGINAL_ATTRIBUTES_SEQUENCE)
    existing = out.get(name)
    items = list(existing.get("Value") or []) if existing is not None else []
    out[name] = {"vr": "SQ", "Value": [*items, item]}


@cache
def element_json(
    tag: int, vr: str, value: str, encode_with: tuple[str, ...], decode_with: tuple[str, ...]
) -> JsonObject:
    """The DICOM JSON of an element set to ``value``: encoded as ``edit_head`` encodes it,
    decoded as ingest decodes it (the same object for every instance: it is shared)."""
    if vr == "SQ":
        return {"vr": "SQ"}  # a sequence is emptied, never set
    raw = encode_value(vr, value, list(encode_with), little=True)
    element = Element(tag, vr, True, True, 0, 0, len(raw), False, len(raw))
    context = JsonContext(raw, lambda _element, _path: None)
    return to_json_element(element, context, encodings=list(decode_with), path=(tag,))


def _encodings_of_value(value: str) -> tuple[str, ...]:
    return tuple(charset.python_encodings([t.strip() for t in value.split("\\")]))


def _encodings_of_json(element: JsonObject | None) -> tuple[str, ...]:
    """The codecs of a Specific Character Set element's JSON (the default when absent)."""
    if element is None:
        return (charset.DEFAULT,)
    terms = [str(v or "") for v in element.get("Value") or [""]]
    return tuple(charset.python_encodings(terms))
