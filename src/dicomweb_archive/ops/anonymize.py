"""De-identification (``mkdicomwebupdate -anonymize``): into a new store, or in place.

Each selected instance is rebuilt from the source store with the profile
(:mod:`dicomweb_archive.model.deid`, PS3.15 E.1) applied to every element wherever it sits, File
Meta Information and elements after Pixel Data included (:mod:`.deidentify`): attributes
removed (X), emptied (Z), given dummy values (D), UIDs replaced consistently (U), dates and
times by the temporal option, Patient ID and Patient's Name by keyed pseudonyms or the patient
map; private attributes removed. Patient Identity Removed (0012,0062) = YES and
De-identification Method (0012,0063) are set. The de-identified stream then goes through the
ordinary ingest pipeline, so the output holds no original value in any object name, metadata,
info record, bulk data or index row (a test searches every object). An instance that cannot
be de-identified is reported and left out; the others go on (docs/spec/deidentification.md).

Into a new store (``--out``): the store is made incomplete, filled, and only then marked
complete, so that it appears whole or not at all (an interrupted run leaves a store that
nothing opens, which the next run into the same place replaces). In place (``--all
--in-place``): one ``anonymize`` change sets every original instance aside and adds the
de-identified ones, in one journal; it can be reverted, and ``purge`` of the change removes the
originals, their history and audit for good.

Pixel data is kept as is, unless pixel cleaning rules are given (PS3.15 E.3.1): then the
frames a matching rule's rectangles touch are blanked (``dicom/clean_pixels.py``), the others
pass through. Instances whose pixels may carry burned-in text (Burned In Annotation
(0028,0301) YES, or not given for a SOP class or modality where such text is common) are
reported in :attr:`AnonymizeReport.burned_in`, never passed silently, with whether a rule
cleaned them.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, cast

from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.errors import ArchiveError, UsageError
from dicomweb_archive.model.deid import OPTIONS, Profile, burned_in_review
from dicomweb_archive.model.deid_report import build_report, report_summary
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.pixel import PixelDescription
from dicomweb_archive.model.pixel_rules import PixelRules
from dicomweb_archive.ops.changes import (
    finish_studies,
    removed,
    set_aside_instance,
    set_aside_unused_bulk,
)
from dicomweb_archive.ops.deidentify import deidentified_stream, patient_id
from dicomweb_archive.ops.export import Selection, select
from dicomweb_archive.ops.ingest import write_streams
from dicomweb_archive.ops.ingest_types import FileResult, PipelineOptions
from dicomweb_archive.ops.stages import complete_pending
from dicomweb_archive.ops.state import States
from dicomweb_archive.store.changes import change_ids
from dicomweb_archive.store.instance import InstanceKey, read_info
from dicomweb_archive.store.locations import normal_location, same_location
from dicomweb_archive.store.reports import put_report
from dicomweb_archive.store.secrets import store_key
from dicomweb_archive.store.share import can_share, share_object
from dicomweb_archive.store.storage import to_json_bytes

BURNED_IN_ANNOTATION = "00280301"
MODALITY = "00080060"
SOP_CLASS_UID = "00080016"
SOP_INSTANCE_UID = 0x00080018


@dataclass(slots=True)
class AnonymizeReport:
    results: list[FileResult] = field(default_factory=list)
    burned_in: list[str] = field(default_factory=list)  # source SOP UIDs to review
    #: source SOP UID -> why it needs review (worded without values)
    review: dict[str, list[str]] = field(default_factory=dict)
    #: source SOP UID -> the line of the pixel cleaning rule that blanks some of its frames
    cleaned: dict[str, int] = field(default_factory=dict)
    #: source SOP UID -> (tag, what was done) for each instance de-identified
    applied: dict[str, set[tuple[int, str]]] = field(default_factory=dict)
    report_path: str = ""  # where the report's readable summary was written
    planned: list[str] = field(default_factory=list)  # with dry_run: source SOP UIDs
    #: with dry_run and a patient map: the source SOP UIDs that would fail, their patient not
    #: being in the map (as the run fails them)
    unmapped: list[str] = field(default_factory=list)
    #: frame files shared with the source store by hard link; None where the stores cannot
    #: share files (not both directories: ``store/share.py``), or in place
    linked: int | None = None
    change_id: str = ""  # in place: the anonymize change
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.unmapped and all(result.status != "failed" for result in self.results)

    def keep_written(self, chosen: list[InstanceKey]) -> None:
        """Once ``results`` are known: keep in :attr:`burned_in`, :attr:`review` and
        :attr:`cleaned` only the instances that were written (one that failed is not in the
        output: there is nothing of it to review or that was cleaned)."""
        done = {i.sop for i, r in zip(chosen, self.results, strict=True) if r.status != "failed"}
        self.keep_only(done)

    def keep_only(self, done: set[str]) -> None:
        """Keep in :attr:`burned_in`, :attr:`review` and :attr:`cleaned` only ``done``."""
        self.burned_in = [sop for sop in self.burned_in if sop in done]
        self.review = {sop: why for sop, why in self.review.items() if sop in done}
        self.cleaned = {sop: line for sop, line in self.cleaned.items() if sop in done}


def profile_key(archive: Archive, key: bytes | None) -> bytes:
    """The given key, or the source store's own (created once, kept private)."""
    if key is not None:
        return key
    with archive.writing("de-identification key"):
        return store_key(archive.storage)


def _review(
    archive: Archive,
    chosen: list[InstanceKey],
    report: AnonymizeReport,
    rules: PixelRules | None,
) -> None:
    """The instances whose pixels need review for burned-in text, by evidence
    (:func:`~dicomweb_archive.model.deid.burned_in_review`), and with ``rules`` those whose
    pixels a rule cleans (:attr:`AnonymizeReport.cleaned`); a flagged instance's reasons say
    whether a rule cleaned it or none matched."""
    states = States(archive.storage, archive.keys)
    for instance in chosen:
        state = states.instance(instance)
        metadata = state.metadata
        rule = rules.match(metadata) if rules is not None else None
        pixel = PixelDescription.from_metadata(metadata)
        if rule is not None and rule.frames(len(state.info.frames), pixel.rows, pixel.columns):
            report.cleaned[instance.sop] = rule.line
        burned, modality, sop_class = (
            metadata.get(key, {}).get("Value", [None])[0]
            for key in (BURNED_IN_ANNOTATION, MODALITY, SOP_CLASS_UID)
        )
        reason = burned_in_review(burned, modality, sop_class)
        if not reason:
            continue
        report.burned_in.append(instance.sop)
        reasons = report.review.setdefault(instance.sop, [reason])
        if instance.sop in report.cleaned:
            line = report.cleaned[instance.sop]
            reasons.append(f"pixels cleaned by the rule of line {line}: check the result")
        elif rules is not None:
            reasons.append("no pixel cleaning rule matched")


def _streams(
    archive: Archive,
    chosen: list[InstanceKey],
    profile: Profile,
    failures: dict[str, FileResult],
    report: AnonymizeReport,
) -> Iterator[tuple[str, BinaryIO]]:
    """The de-identified streams; an instance whose stream cannot be made is a failure."""
    states = States(archive.storage, archive.keys)
    for instance in chosen:
        applied = report.applied.setdefault(instance.sop, set())
        try:
            stream = deidentified_stream(archive, states.instance(instance), profile, applied)
        except (ArchiveError, ValueError, UnicodeError) as exc:
            why = str(exc).removeprefix(f"{instance.sop}: ")  # the UID is named once, first
            failures[instance.sop] = FileResult(
                Path(instance.sop),
                "failed",
                error=f"SOPInstanceUID {instance.sop}: cannot be de-identified: {why}",
                exception=exc,
            )
            continue
        yield instance.sop, cast(BinaryIO, io.BufferedReader(stream))


def anonymize(
    archive: Archive,
    selection: Selection,
    out: str | os.PathLike[str],
    *,
    options: frozenset[str] = frozenset(),
    key: bytes | None = None,
    patients: Mapping[str, tuple[str, str]] | None = None,
    pixel_rules: PixelRules | None = None,
    dry_run: bool = False,
) -> AnonymizeReport:
    """De-identify the selected instances of ``archive`` into the store at ``out`` (made when
    there is none; see the module docstring). ``patients`` (original Patient ID -> new
    Patient ID and Patient's Name) replaces the keyed pseudonyms; an instance of a patient it
    does not name is reported and left out. ``pixel_rules`` blank rectangles of the pixels of
    the instances they match (PS3.15 E.3.1, ``docs/spec/deidentification.md``).

    With ``dry_run`` nothing is written; the instances that would be de-identified, those
    that would fail because ``patients`` does not name their patient, and those to review
    for burned-in annotation or whose pixels a rule cleans (of the former) are reported.
    """
    started = time.perf_counter()
    _check_options(options)
    if same_location(normal_location(out), archive.location):
        raise UsageError("de-identify into a new store (--out DIR), not into the source store")
    report = AnonymizeReport()
    complete_pending(archive)
    chosen = [instance for instance, _sha in select(archive, selection)]
    _review(archive, chosen, report, pixel_rules)
    if dry_run:
        if patients is not None:  # the failures the run would have: no PHI kept or told
            states = States(archive.storage, archive.keys)
            report.unmapped = [
                instance.sop
                for instance in chosen
                if patient_id(states.instance(instance).metadata) not in patients
            ]
        failing = set(report.unmapped)
        report.planned = [i.sop for i in chosen if i.sop not in failing]
        report.keep_only(set(report.planned))
        report.seconds = time.perf_counter() - started
        return report
    profile = Profile(profile_key(archive, key), options, patients, pixel_rules)
    target = Archive.create_or_replace_incomplete(out, replace(archive.config, complete=False))
    with target:
        failures: dict[str, FileResult] = {}
        policies = {
            i.sop: _recompression(read_info(archive.storage, archive.keys, i)) for i in chosen
        }
        ingested = write_streams(
            target,
            _streams(archive, chosen, profile, failures, report),
            options=PipelineOptions(),
            recompression_for=policies.get,
        )
        results = iter(ingested.results)
        report.results = [failures.get(i.sop) or next(results) for i in chosen]
        report.keep_written(chosen)
        with target.writing("share frames"):
            if can_share(archive.storage, target.storage):
                report.linked = sum(
                    _share_frames(archive, instance, target, result.key)
                    for instance, result in zip(chosen, report.results, strict=True)
                    if result.key is not None and result.status != "failed"
                )
            _write_report(target, profile, chosen, report)
        target.mark_complete()
    report.seconds = time.perf_counter() - started
    return report


def _share_frames(source: Archive, key: InstanceKey, target: Archive, new_key: InstanceKey) -> int:
    """Make the output's frames that are identical to the source's share their storage (hard
    links, where both stores are on one file system); returns how many do."""
    before = read_info(source.storage, source.keys, key).frames
    after = read_info(target.storage, target.keys, new_key).frames
    linked = 0
    for number, (old, new) in enumerate(zip(before, after, strict=False), start=1):
        if old.sha256 == new.sha256 and share_object(
            source.storage,
            source.keys.frame(key.study, key.series, key.sop, number),
            target.storage,
            target.keys.frame(new_key.study, new_key.series, new_key.sop, number),
        ):
            linked += 1
    return linked


def anonymize_in_place(
    archive: Archive,
    *,
    options: frozenset[str] = frozenset(),
    key: bytes | None = None,
    patients: Mapping[str, tuple[str, str]] | None = None,
    pixel_rules: PixelRules | None = None,
    reason: str = "",
) -> AnonymizeReport:
    """De-identify a whole store in place, as one revertible ``anonymize`` change (see the
    module docstring; ``patients`` and ``pixel_rules`` as for :func:`anonymize`). If any
    instance cannot be de-identified, nothing changes."""
    started = time.perf_counter()
    _check_options(options)
    profile = Profile(profile_key(archive, key), options, patients, pixel_rules)
    report = AnonymizeReport()
    complete_pending(archive)
    with archive.writing("anonymize"):
        chosen = [
            instance
            for instance, _sha in select(archive, Selection(query={"StudyInstanceUID": "*"}))
        ]
        _review(archive, chosen, report, pixel_rules)
        earlier = sorted(change_ids(archive.storage))
        with archive.changing(
            "anonymize",
            level="store",
            target="all",
            reason=reason,
            details={"options": sorted(options), "earlier_changes": earlier},
        ) as change:
            states = States(change.txn, archive.keys)
            for instance in chosen:  # first: a retained UID gives the new instance its key
                change.include(removed(change, states.instance(instance)))
                set_aside_instance(change, instance)
            failures: dict[str, FileResult] = {}
            policies = {
                i.sop: _recompression(read_info(archive.storage, archive.keys, i)) for i in chosen
            }
            ingested = write_streams(
                archive,
                _streams(archive, chosen, profile, failures, report),
                options=PipelineOptions(),
                recompression_for=policies.get,
                change=change,
            )
            results = iter(ingested.results)
            report.results = [failures.get(i.sop) or next(results) for i in chosen]
            report.keep_written(chosen)
            if not report.ok:
                change.abort()
                return report
            studies = {i.study for i in chosen} | ingested.studies
            for study in {i.study for i in chosen}:
                set_aside_unused_bulk(change, study)
            finish_studies(archive, change, studies)
        report.change_id = change.id
        _write_report(archive, profile, chosen, report, stamp=change.id)
    report.seconds = time.perf_counter() - started
    return report


def anonymize_selection(
    archive: Archive,
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
    known = {row["study_instance_uid"] for row in archive.index.studies()}
    if arguments[0] in known:
        return Selection(study=arguments[0])
    return Selection(patient_id=arguments[0])


def _write_report(
    target: Archive,
    profile: Profile,
    chosen: list[InstanceKey],
    report: AnonymizeReport,
    *,
    stamp: str = "",
) -> None:
    """The run's de-identification report (:mod:`dicomweb_archive.model.deid_report`), JSON
    and summary, into ``target``'s private folder (under its lease); sets
    :attr:`AnonymizeReport.report_path`. Instances are named by their new SOP Instance UID."""
    now = dt.datetime.now(dt.UTC)
    retained = profile.action(SOP_INSTANCE_UID, "UI") == "K"

    def new(sop: str) -> str:
        return sop if retained else profile.uid(sop)

    done = {i.sop for i, r in zip(chosen, report.results, strict=True) if r.status != "failed"}
    content = build_report(
        profile,
        applied=(report.applied.get(i.sop, set()) for i in chosen if i.sop in done),
        review={new(sop): reasons for sop, reasons in report.review.items()},
        cleaned={new(sop): line for sop, line in report.cleaned.items()},
        failed={
            new(i.sop): "could not be de-identified, left out (the run's error lines say why)"
            for i in chosen
            if i.sop not in done
        },
        created=now.isoformat(timespec="seconds"),
    )
    _json_key, text_key = put_report(
        target.storage,
        stamp or now.strftime("%Y%m%dT%H%M%S%fZ"),
        to_json_bytes(content),
        report_summary(content),
    )
    report.report_path = f"{target.location.rstrip('/')}/{text_key}"


def _check_options(options: frozenset[str]) -> None:
    unknown = options - set(OPTIONS)
    if unknown:
        raise UsageError(f"unknown de-identification option(s): {', '.join(sorted(unknown))}")


def _recompression(info: InfoRecord) -> Recompression | None:
    """The recompression that gives a de-identified copy the source instance's stored frames
    again (so that they can be shared): the one target its frames were recompressed to."""
    recompressed = [f for f in info.frames if f.source is not None]
    targets = {f.transfer_syntax_uid for f in recompressed}
    if len(targets) != 1:
        return None
    target = targets.pop()
    if target is None:
        return None
    received = {info.original.transfer_syntax_uid}
    keep = any(f.source is not None and f.source.bulk is not None for f in recompressed)
    return Recompression(frozenset(received), target, target, keep_originals=keep)
