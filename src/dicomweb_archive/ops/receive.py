"""Receiving instances from a client (STOW-RS, PS3.18 10.5): each received P10 stream through
the ingest path of ``mkdicomweb`` (:func:`dicomweb_archive.ops.ingest.write_streams`, with the
store's recorded recompression and the group and study stages), and an outcome per stream in
the Standard's terms.

Before anything is written, each stream's header is read once: a stream whose Study Instance
UID is not the one the request's URL names is not stored (PS3.18 10.5.1: the URL's study is
the study every instance must belong to). The rest go to ``write_streams`` in one batch, into
one ``receive`` change (the path of ``mkdicomweb -c``, without setting anything aside): what
it refuses fails alone, with its reason; the others, and the group and study stages of their
studies, are committed together by the change's journal, which is written with ``fsync``
(``store/journal.py``). So an instance is durable before it is acknowledged, a request's
instances appear at once, and ``history``/``audit`` list each request (``revert`` undoes
one). Outcomes carry the Failure Reason (0008,1197) and
Warning Reason (0008,1196) values of PS3.18 I.2 (codes defined there, or PS3.7 C.4 and
PS3.4 B.2.3 where I.2 leaves the semantics to the implementation; ``docs/serving.md`` is the
conformance statement).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.parts import InstanceHeader, generate_parts
from dicomweb_archive.dicom.pixel_stream import KEPT_AS_RECEIVED
from dicomweb_archive.errors import (
    ArchiveError,
    DuplicateInstanceError,
    IndexUnavailableError,
    InputError,
    StorageUnavailableError,
    StoreFullError,
)
from dicomweb_archive.model.tags import (
    SERIES_INSTANCE_UID_KEY,
    SOP_INSTANCE_UID_KEY,
    STUDY_INSTANCE_UID_KEY,
    key,
)
from dicomweb_archive.ops.changes import finish_studies
from dicomweb_archive.ops.ingest import write_streams
from dicomweb_archive.ops.ingest_types import FileResult, PipelineOptions, inline_limits, uid_of

SOP_CLASS_UID_KEY = key(0x00080016)  # (0008,0016) SOPClassUID

#: PS3.18 I.2.2 Failure Reason values
PROCESSING_FAILURE = 0x0110  # a general failure in processing (PS3.18 I.2.2)
DUPLICATE_SOP_INSTANCE = 0x0111  # another instance has this SOP Instance UID (PS3.7 C.4.2)
#: Refused: out of resources (PS3.18 I.2.2): the store is full, or its index or storage does
#: not answer (send it again later)
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000  # Error: cannot understand (not DICOM, truncated, no UIDs)
#: Error: cannot understand (the Cxxx range of PS3.18 I.2.2), implementation specific as
#: dcm4chee's: the Study Instance UID is not the one the request's URL names
STUDY_MISMATCH = 0xC409
#: PS3.18 I.2.1 Warning Reason: stored despite the Data Set not matching the constraints of
#: its SOP Class (a received file that ends inside Pixel Data, a UID that is not conformant)
DOES_NOT_MATCH_SOP_CLASS = 0xB007


@dataclass(slots=True)
class Received:
    """What became of one received stream (in request order)."""

    name: str
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    #: None: stored (or already stored, identical)
    failure_reason: int | None = None
    warning_reason: int | None = None
    #: one worded line: why it failed, or its warnings
    messages: list[str] = field(default_factory=list)

    @property
    def stored(self) -> bool:
        return self.failure_reason is None


def receive_instances(
    archive: Archive,
    streams: Sequence[tuple[str, BinaryIO]],
    *,
    study: str | None = None,
) -> list[Received]:
    """Store ``streams`` (seekable P10 streams, named for messages) as ``mkdicomweb`` would;
    with ``study``, only those of that Study Instance UID (the others fail with
    :data:`STUDY_MISMATCH`). Never raises for bad input: each stream gets its outcome."""
    outcomes = [_peek(archive, name, stream) for name, stream in streams]
    wanted = []
    for outcome, (name, stream) in zip(outcomes, streams, strict=True):
        if study is not None and outcome.study_instance_uid not in (None, study):
            outcome.failure_reason = STUDY_MISMATCH
            outcome.messages.append(
                f"{name}: StudyInstanceUID {outcome.study_instance_uid} is not the study of the "
                f"request's URL ({study}); not stored"
            )
        else:
            stream.seek(0)
            wanted.append((outcome, (name, stream)))
    if not wanted:
        return outcomes
    with archive.writing("receive"):
        change = archive.change("receive", level="instance", target="STOW-RS request")
        try:
            report = write_streams(
                archive, [s for _, s in wanted], options=PipelineOptions(), change=change
            )
            for (outcome, _), result in zip(wanted, report.results, strict=True):
                _record(outcome, result)
            if change.touched:
                # every study the request notified, also of a part refused after its header
                # was read (its notification would otherwise stay pending)
                studies = {t.study for t in change.touched} | set(report.studies)
                finish_studies(archive, change, studies)
                archive.commit(change)
            else:  # nothing new: every part failed or was stored already
                change.abort()
        except ArchiveError as exc:  # the change could not be committed: nothing was stored
            if change.txn.committed:
                raise
            if not change.aborted:
                change.abort()
            for outcome, _ in wanted:
                if outcome.stored:
                    outcome.failure_reason = _failure_reason(exc)
                    outcome.messages.append(f"{outcome.name}: not stored: {exc}")
        except BaseException:  # unexpected: nothing half-made is left staged
            if not change.txn.committed and not change.aborted:
                change.abort()
            raise
    return outcomes


def _peek(archive: Archive, name: str, stream: BinaryIO) -> Received:
    """The UIDs of a stream's header (none when it cannot be read: ingest says why)."""
    outcome = Received(name)
    parts = generate_parts(
        stream,
        limits=inline_limits(archive),
        frames_uri=lambda _meta: "",
        bulk_uri=lambda _meta, _sha: "",
        name=name,
    )
    try:
        header = next(parts)
    except (InputError, StopIteration):
        return outcome
    finally:
        parts.close()
    assert isinstance(header, InstanceHeader)
    metadata = header.metadata
    outcome.sop_class_uid = uid_of(metadata, SOP_CLASS_UID_KEY)
    outcome.sop_instance_uid = uid_of(metadata, SOP_INSTANCE_UID_KEY)
    outcome.study_instance_uid = uid_of(metadata, STUDY_INSTANCE_UID_KEY)
    outcome.series_instance_uid = uid_of(metadata, SERIES_INSTANCE_UID_KEY)
    return outcome


def not_replaced(name: str, sop: str | None) -> str:
    """The log line of an instance a network peer (STOW-RS, C-STORE) sent that differs from the
    one stored under its SOP Instance UID: a peer never replaces one, and has no ``--replace``;
    the line says what the operator can do."""
    return (
        f"{name}: SOPInstanceUID {sop} is stored already, from a different file; the sender's "
        "copy differs and is not stored (to keep it instead, ingest it with mkdicomweb --replace)"
    )


def _record(outcome: Received, result: FileResult) -> None:
    """An ingest result as a STOW-RS outcome."""
    if result.status == "failed":
        outcome.failure_reason = _failure_reason(result.exception)
        exc = result.exception
        if isinstance(exc, DuplicateInstanceError) and exc.stored and outcome.sop_instance_uid:
            outcome.messages.append(not_replaced(outcome.name, outcome.sop_instance_uid))
        else:
            outcome.messages.append(result.error or f"{outcome.name}: not stored")
        return
    # frames kept as received instead of recompressed: the instance is stored as sent, nothing
    # is coerced nor wrong with it (no Warning Reason; the log says why)
    if any(KEPT_AS_RECEIVED not in w for w in result.warnings):
        outcome.warning_reason = DOES_NOT_MATCH_SOP_CLASS
    if result.warnings:
        outcome.messages.extend(
            w if w.startswith(outcome.name) else f"{outcome.name}: {w}" for w in result.warnings
        )


def _failure_reason(exc: BaseException | None) -> int:
    if isinstance(exc, DuplicateInstanceError):
        return DUPLICATE_SOP_INSTANCE
    if isinstance(exc, StoreFullError | IndexUnavailableError | StorageUnavailableError):
        return OUT_OF_RESOURCES  # full, or the index or storage does not answer: send it later
    if isinstance(exc, InputError):
        return CANNOT_UNDERSTAND
    return PROCESSING_FAILURE
