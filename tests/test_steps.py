"""Edit steps applied to an instance's JSON give the metadata of the edited file (``dicom/
steps.py``): the JSON path that edits and the study stage use never parses a file, and must
agree with what ingest derives from the edited bytes, on every file of pydicom's corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dicomweb_archive.dicom.edit import Edit, OriginalAttributes
from dicomweb_archive.dicom.parts import InlineLimits, generate_parts
from dicomweb_archive.dicom.parts_model import BulkPart, InstanceEnd
from dicomweb_archive.dicom.steps import (
    Step,
    apply_to_head,
    apply_to_json,
    edits_step,
    head_bytes,
    snapshot_step,
    split_head,
)
from dicomweb_archive.errors import ArchiveError, EditRefusedError
from dicomweb_archive.model.edits import parse_edit
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.syntax import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
from dicomweb_archive.store.keys import bulkdata_uri, frames_uri
from tests.conftest import corpus_files, corpus_id

JsonObject = dict[str, Any]
RECORD = OriginalAttributes("dicomweb-archive test", "CORRECT", "20261130120000")
#: (name, edits as users write them, record the previous values)
SCENARIOS: list[tuple[str, list[str], bool]] = [
    ("ascii name", ["PatientName=DOE^JANE"], False),
    ("non-ascii text", ["StudyDescription=Gehirn Übersicht"], False),
    ("cyrillic", ["StudyDescription=Исследование"], False),
    ("numbers", ["SliceThickness=1.50", "InstanceNumber=0012", "WindowCenter=40\\-10"], False),
    ("empty and remove", ["PatientComments=", "-ReferringPhysicianName", "-NoSuchThing"], False),
    ("with history", ["InstitutionName=Hôpital", "-StudyID"], True),
]


def _ingested(path: Path) -> tuple[JsonObject, InfoRecord, dict[str, bytes]]:
    bulk: dict[str, bytes] = {}
    with path.open("rb") as stream:
        for part in generate_parts(
            stream,
            frames_uri=lambda meta: frames_uri("x"),
            bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
        ):
            if isinstance(part, BulkPart):
                bulk[part.sha256] = bytes(part.data)
            if isinstance(part, InstanceEnd):
                return part.metadata, part.info, bulk
    raise AssertionError("no instance")


def _edits(texts: list[str]) -> list[Edit]:
    out = []
    for text in texts:
        name = text.lstrip("-").partition("=")[0]
        if name == "NoSuchThing":
            continue
        out.append(parse_edit(text, level=LEVEL.get(name, "instance")).edit)
    return out


LEVEL = {
    "PatientName": "patient",
    "PatientComments": "patient",
    "StudyDescription": "study",
    "ReferringPhysicianName": "study",
    "StudyID": "study",
}


def _nested_edit(metadata: JsonObject) -> Edit | None:
    """An edit of a text element in the first item of the first sequence that has one."""
    for tag, element in metadata.items():
        if element.get("vr") != "SQ" or not element.get("Value") or tag >= "7FE00000":
            continue
        for inner, value in element["Value"][0].items():
            if value.get("vr") in ("LO", "SH", "CS") and int(inner[:4], 16) % 2 == 0:
                return Edit(((int(tag, 16), 0), (int(inner, 16), None)), value["vr"], "EDITED")
    return None


def _files() -> list[Path]:
    return [p for p in corpus_files() if p.suffix == ".dcm" and p.stat().st_size < 4_000_000]


@pytest.mark.parametrize("path", _files(), ids=corpus_id)
def test_json_steps_agree_with_the_edited_bytes(path: Path) -> None:
    try:
        metadata, info, bulk = _ingested(path)
    except ArchiveError:
        pytest.skip("not ingested (tests/test_corpus.py says why)")
    if info.original.transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        pytest.skip("a deflated data set is not edited in place")
    head_segments, _rest = split_head(info.skeleton)
    head = head_bytes(head_segments, bulk.__getitem__)
    nested = _nested_edit(metadata)
    scenarios = [*SCENARIOS, ("nested", [], False)] if nested else SCENARIOS
    for name, texts, record in scenarios:
        edits = [nested] if name == "nested" and nested else _edits(texts)
        attributes = RECORD if record else None
        try:
            expected, _bulk = snapshot_step(
                "c",
                head,
                metadata,
                edits,
                original_attributes=attributes,
                limits=InlineLimits(),
                frames_uri=lambda _meta: frames_uri("x"),
                bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
                name=path.name,
            )
        except EditRefusedError:
            with pytest.raises(EditRefusedError):
                edits_step(
                    "c",
                    edits,
                    metadata,
                    original_attributes=attributes,
                    head=lambda: head,
                    name=path.name,
                )
            continue
        step = edits_step(
            "c", edits, metadata, original_attributes=attributes, head=lambda: head, name=path.name
        )
        assert expected.snapshot is not None
        assert apply_to_json(metadata, [step]) == expected.snapshot.metadata, (path.name, name)
        # the stored form of a step round-trips, and applies to the bytes the same way
        again = Step.from_json(step.to_json())
        assert again == step
        edited = apply_to_head(head, [again], bulk.__getitem__, name=path.name)
        known = {**bulk, **dict(_bulk_of(_bulk))}
        assert edited == head_bytes(expected.snapshot.head, known.__getitem__)


def _bulk_of(parts: list[BulkPart]) -> list[tuple[str, bytes]]:
    return [(p.sha256, bytes(p.data)) for p in parts]


def test_steps_compose() -> None:
    """Two steps in a row equal their JSON applied in order; a snapshot replaces all before."""
    path = next(p for p in corpus_files() if p.name == "CT_small.dcm")
    metadata, info, bulk = _ingested(path)
    head = head_bytes(split_head(info.skeleton)[0], bulk.__getitem__)
    one = edits_step(
        "1",
        _edits(["StudyDescription=first"]),
        metadata,
        original_attributes=RECORD,
        head=lambda: head,
        name="ct",
    )
    after_one = apply_to_json(metadata, [one])
    two = edits_step(
        "2",
        _edits(["StudyDescription=second"]),
        after_one,
        original_attributes=RECORD,
        head=lambda: head,
        name="ct",
    )
    both = apply_to_json(metadata, [one, two])
    assert both["00081030"]["Value"] == ["second"]
    assert len(both["04000561"]["Value"]) == 2
    assert both["04000561"]["Value"][1]["04000550"]["Value"][0]["00081030"]["Value"] == ["first"]
    edited = apply_to_head(head, [one, two], bulk.__getitem__, name="ct")
    snap, _ = snapshot_step(
        "3",
        edited,
        both,
        [],
        original_attributes=None,
        limits=InlineLimits(),
        frames_uri=lambda _meta: frames_uri("x"),
        bulk_uri=lambda _meta, sha: bulkdata_uri(sha),
        name="ct",
    )
    assert snap.snapshot is not None and snap.snapshot.metadata == both
    assert apply_to_json(metadata, [one, two, snap]) == both
