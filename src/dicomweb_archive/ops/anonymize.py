"""De-identification into a new store (``mkdicomwebupdate -anonymize ... --out DIR``).

Each selected instance is rebuilt from the source store with its head re-encoded by the
profile (:mod:`dicomweb_archive.model.deid`): attributes removed (X), emptied (Z), given dummy
values (D), UIDs replaced consistently (U), dates shifted per patient when asked; private
attributes removed; in the File Meta Information the Media Storage SOP Instance UID replaced
and the AE titles removed; the preamble zeroed. Patient Identity Removed (0012,0062) = YES and
De-identification Method (0012,0063) are set. The de-identified stream then goes through the
ordinary ingest pipeline of the output store, so the new store holds no original value in any
file name, metadata, info record, bulk data or index row (a test searches every file).

Pixel data is kept as is: instances whose Burned In Annotation (0028,0301) is not ``NO`` are
reported in :attr:`AnonymizeReport.burned_in`, never passed silently.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from dicomweb_archive.dicom.edit import Edit, edit_head
from dicomweb_archive.dicom.recompress import (
    Recompression,
    is_recompressed,
    rebuilds_original,
    stored_syntaxes,
)
from dicomweb_archive.dicom.rewrite import split_head
from dicomweb_archive.dicom.skeleton import ChunkStream
from dicomweb_archive.errors import ArchiveError, UsageError
from dicomweb_archive.index.database import Index
from dicomweb_archive.model.deid import DEIDENTIFICATION_METHOD, DUMMY, OPTIONS, Profile
from dicomweb_archive.ops.export import Selection, select
from dicomweb_archive.ops.ingest import FileResult, PipelineOptions, write_streams
from dicomweb_archive.ops.reconstruct import FrameReaders
from dicomweb_archive.store.files import read_json_gz, write_bytes
from dicomweb_archive.store.instance import InstanceKey, read_bulk, read_info
from dicomweb_archive.store.layout import StoreLayout

JsonObject = dict[str, Any]
Path_ = tuple[tuple[int, int | None], ...]
PATIENT_IDENTITY_REMOVED = 0x00120062
DEIDENTIFICATION_METHOD_TAG = 0x00120063
DEIDENTIFICATION_METHOD_CODES = 0x00120064
OURS = (PATIENT_IDENTITY_REMOVED, DEIDENTIFICATION_METHOD_TAG, DEIDENTIFICATION_METHOD_CODES)
BURNED_IN_ANNOTATION = "00280301"
KEY_FILE = "deidentification.key"


@dataclass(slots=True)
class AnonymizeReport:
    results: list[FileResult] = field(default_factory=list)
    burned_in: list[str] = field(default_factory=list)  # source SOP UIDs to review
    planned: list[str] = field(default_factory=list)  # with dry_run: source SOP UIDs
    linked: int = 0  # frame files shared with the source store by hard link
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(result.status != "failed" for result in self.results)


def profile_key(layout: StoreLayout, key: bytes | None) -> bytes:
    """The given key, or the source store's own (created once, kept private)."""
    if key is not None:
        return key
    path = layout.private / KEY_FILE
    if not path.exists():
        write_bytes(path, secrets.token_hex(32).encode())
        path.chmod(0o600)
    return path.read_bytes().strip()


def anonymize(
    store: str | os.PathLike[str],
    selection: Selection,
    out: str | os.PathLike[str],
    *,
    options: frozenset[str] = frozenset(),
    key: bytes | None = None,
    dry_run: bool = False,
) -> AnonymizeReport:
    """De-identify the selected instances of ``store`` into the store at ``out``.

    With ``dry_run`` only the instances that would be de-identified (and those to review for
    burned-in annotation) are reported.
    """
    started = time.perf_counter()
    unknown = options - set(OPTIONS)
    if unknown:
        raise UsageError(f"unknown de-identification option(s): {', '.join(sorted(unknown))}")
    layout = StoreLayout(Path(store))
    if Path(out).resolve() == layout.root.resolve():
        raise UsageError("de-identify into a new store (--out DIR), not into the source store")
    profile = Profile(profile_key(layout, key), options)
    report = AnonymizeReport()
    chosen = [instance for instance, _sha in select(layout, selection)]
    for instance in chosen:
        metadata = read_json_gz(layout.instance_metadata(*_parts(instance)))[0]
        burned = metadata.get(BURNED_IN_ANNOTATION, {}).get("Value", [None])[0]
        if burned != "NO":
            report.burned_in.append(instance.sop)
    if dry_run:
        report.planned = [instance.sop for instance in chosen]
        report.seconds = time.perf_counter() - started
        return report

    def streams() -> Iterator[tuple[str, BinaryIO]]:
        for instance in chosen:
            metadata = read_json_gz(layout.instance_metadata(*_parts(instance)))[0]
            stream = _deidentified_stream(layout, instance, metadata, profile)
            yield instance.sop, cast(BinaryIO, io.BufferedReader(stream))

    policies = {instance.sop: _recompression(read_info(layout, instance)) for instance in chosen}
    report.results = write_streams(
        streams(), out, options=PipelineOptions(), recompression_for=policies.get
    )
    out_layout = StoreLayout(Path(out))
    for instance, result in zip(chosen, report.results, strict=True):
        if result.key is not None and result.status != "failed":
            report.linked += _share_frames(layout, instance, out_layout, result.key)
    report.seconds = time.perf_counter() - started
    return report


def _share_frames(
    source: StoreLayout, key: InstanceKey, target: StoreLayout, new_key: InstanceKey
) -> int:
    """Replace the output's frame files by hard links to the identical source files, where
    the file system allows (a frame file is named and bounded by its SHA-256, so identical
    frames are identical files); returns how many were linked."""
    before, after = read_info(source, key)["frames"], read_info(target, new_key)["frames"]
    linked = 0
    for number, (old, new) in enumerate(zip(before, after, strict=False), start=1):
        if old["sha256"] != new["sha256"]:
            continue
        original = source.frame(key.study, key.series, key.sop, number)
        copy = target.frame(new_key.study, new_key.series, new_key.sop, number)
        temp = copy.with_name(f".{copy.name}.link.tmp")
        try:
            temp.unlink(missing_ok=True)
            os.link(original, temp)
            temp.replace(copy)
            linked += 1
        except OSError:
            temp.unlink(missing_ok=True)  # another file system: keep the copy
    return linked


def anonymize_in_place(
    store: str | os.PathLike[str],
    *,
    options: frozenset[str] = frozenset(),
    key: bytes | None = None,
) -> AnonymizeReport:
    """De-identify a whole store in place: build the de-identified store beside it, then swap.

    Nothing of the original survives: its history and audit log (which hold original values)
    go with it; the de-identification key is kept, so later runs map UIDs and dates the same
    way. Until the swap the original store is untouched; the swap is two renames.
    """
    root = Path(store).resolve()
    layout = StoreLayout(root)
    token = secrets.token_hex(4)
    beside = root.with_name(f".{root.name}.deid-{token}")
    report = anonymize(
        root,
        Selection(query={"StudyInstanceUID": "*"}),
        beside,
        options=options,
        key=profile_key(layout, key),
    )
    if not report.ok:
        shutil.rmtree(beside, ignore_errors=True)
        return report
    write_bytes(StoreLayout(beside).private / KEY_FILE, profile_key(layout, key))
    old = root.with_name(f".{root.name}.original-{token}")
    root.replace(old)
    beside.replace(root)
    shutil.rmtree(old)
    return report


def anonymize_selection(
    store: str | os.PathLike[str],
    targets: dict[str, str],
    arguments: list[str],
    *,
    all_studies: bool,
) -> Selection:
    """What ``-anonymize`` names: ``--all``, ``-study UID``, ``-patient ID``, or one argument
    that is a StudyInstanceUID of the store or else a PatientID."""
    if all_studies:
        return Selection(query={"StudyInstanceUID": "*"})
    if "study" in targets:
        return Selection(study=targets["study"])
    if "patient" in targets:
        return Selection(patient_id=targets["patient"])
    if len(arguments) != 1 or targets:
        raise UsageError("-anonymize takes one StudyInstanceUID or PatientID, or --all")
    layout = StoreLayout(Path(store))
    with Index(layout.index_path) as index:
        known = {row["study_instance_uid"] for row in index.studies()}
    if arguments[0] in known:
        return Selection(study=arguments[0])
    return Selection(patient_id=arguments[0])


def _parts(key: InstanceKey) -> tuple[str, str, str]:
    return key.study, key.series, key.sop


def _deidentified_stream(
    layout: StoreLayout, key: InstanceKey, metadata: JsonObject, profile: Profile
) -> ChunkStream:
    info = read_info(layout, key)
    head, rest = split_head(info["skeleton"], lambda sha: read_bulk(layout, key.study, sha))
    patient = metadata.get("00100020", {}).get("Value", [""])[0] or ""
    edits = list(_edits(metadata, profile, profile.date_offset(str(patient)), ()))
    edits.append(Edit(((PATIENT_IDENTITY_REMOVED, None),), "CS", "YES"))
    edits.append(Edit(((DEIDENTIFICATION_METHOD_TAG, None),), "LO", DEIDENTIFICATION_METHOD))
    edits.append(
        Edit(((DEIDENTIFICATION_METHOD_CODES, None),), "SQ", None, codes=profile.method_codes())
    )
    meta_edits = [
        Edit(((0x00020003, None),), "UI", profile.uid(key.sop)),
        Edit(((0x00020016, None),), "AE", None),
        Edit(((0x00020017, None),), "AE", None),
        Edit(((0x00020018, None),), "AE", None),
    ]
    if not rebuilds_original(info):  # the stored form: its frames' one transfer syntax
        syntaxes = stored_syntaxes(info)
        if len(syntaxes) != 1:
            raise ArchiveError(
                f"{key.sop}: frames stored in several transfer syntaxes cannot be de-identified"
            )
        meta_edits.append(Edit(((0x00020010, None),), "UI", syntaxes[0]))
    new_head = edit_head(head, edits, name=key.sop, meta_edits=meta_edits, clear_preamble=True)
    chunks = FrameReaders(layout, key, info).generate(rest)
    return ChunkStream(iter([new_head, *chunks]))


def _recompression(info: JsonObject) -> Recompression | None:
    """The recompression that gives a de-identified copy the source instance's stored frames
    again (so that they can be shared): the one target its frames were recompressed to."""
    recompressed = [f for f in info["frames"] if is_recompressed(f)]
    targets = {f["transfer_syntax_uid"] for f in recompressed}
    if len(targets) != 1:
        return None
    target = targets.pop()
    received = {info["original"]["transfer_syntax_uid"]}
    keep = any("bulk" in f["source"] for f in recompressed)  # --keep-originals (or lossy)
    return Recompression(frozenset(received), target, target, keep_originals=keep)


def _edits(dataset: JsonObject, profile: Profile, days: int, prefix: Path_) -> list[Edit]:
    """Edits for every attribute of a data set (and its items) that the profile changes."""
    out: list[Edit] = []
    for key, element in dataset.items():
        tag = int(key, 16)
        ours = (
            PATIENT_IDENTITY_REMOVED,
            DEIDENTIFICATION_METHOD_TAG,
            DEIDENTIFICATION_METHOD_CODES,
        )
        if tag >= 0x7FE00008 or tag in ours:
            continue
        if key == "00083002" and not prefix:
            continue  # AvailableTransferSyntaxUID: ours, not in the file
        vr = element.get("vr", "UN")
        path = (*prefix, (tag, None))
        action = profile.action(tag)
        if action == "C" and vr in ("DA", "DT") and "retain-modified-dates" in profile.options:
            values = element.get("Value") or []
            shifted = [profile.shift(vr, str(v), days) if v else "" for v in values]
            out.append(Edit(path, vr, "\\".join(shifted)))
            continue
        if action in ("D", "C") and (vr not in DUMMY or vr == "SQ"):
            action = "Z" if vr == "SQ" else "X"  # no dummy value for this VR: empty or remove
        if action == "X":
            out.append(Edit(path, vr, None))
        elif action == "Z":
            out.append(Edit(path, vr, ""))
        elif action in ("D", "C"):
            out.append(Edit(path, vr, DUMMY[vr]))
        elif action == "U" and vr == "UI":
            values = element.get("Value") or []
            out.append(Edit(path, vr, "\\".join(profile.uid(str(v)) if v else "" for v in values)))
        elif vr == "SQ":
            for index, item in enumerate(element.get("Value") or []):
                out += _edits(item, profile, days, (*prefix, (tag, index)))
        elif vr == "UI" and action is None and _is_instance_uid(tag):
            values = element.get("Value") or []
            out.append(Edit(path, vr, "\\".join(profile.uid(str(v)) for v in values if v)))
    return out


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
