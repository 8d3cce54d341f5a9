"""The archive's DICOM application entity (``dicomweb-archive scp``): Verification, Storage
and Query/Retrieve (Find, Move, Get) on the Patient Root and Study Root models, as SCP.

Presentation contexts (PS3.8 9.3.2.2): every storage SOP Class pynetdicom knows, in every
transfer syntax it knows (stored as received; of several proposed in one context, the first of
:data:`ACCEPTED_SYNTAXES`, as pynetdicom chooses in the acceptor's order), also with the SCP
role a C-GET requestor proposes (PS3.7 D.3.3.4); the Query/Retrieve models in the uncompressed
syntaxes.

Threads: pynetdicom runs each association in its own thread. Every write goes to one writer
thread (ingest and the stages, under the store's lease: writes of several associations are
serialized, never interleaved, and the index has one writing connection); index reads go to two
reader threads (a fixed number of SQLite connections however many associations come and go).
Reads use an ``Archive`` of their own over the same storage, so that a read in one thread
never takes another thread's lease for its own (``Archive.read``).

Each association ends with one log line: calling AE title, address, instances stored, sent
again unchanged (stored already from the same bytes) and failed (C-STORE requests received
and C-MOVE/C-GET sub-operations), matches found, instances sent (sub-operations the peer
answered Success or Warning) (no patient data). The group and study stages of what an
association stored run when it ends (released or aborted), in the writer thread; until then
its instances are stored but not yet found by C-FIND; stages a stopped server left pending (a
killed ``scp``) run when the next one starts, before it listens. :meth:`DicomServer.stop`
stops accepting, lets running associations finish for up to ``dimse_timeout`` seconds, aborts
the rest (a C-STORE being written is completed first) and runs the stages left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    _config,
    evt,
)
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

from dicomweb_archive.archive import Archive
from dicomweb_archive.dimse.query import (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    UNABLE_TO_PROCESS,
    QueryRefusedError,
    find_matches,
    read_query,
    to_response,
)
from dicomweb_archive.dimse.receive import (
    CANNOT_STORE,
    DUPLICATE,
    INDEX_UNAVAILABLE,
    OUT_OF_RESOURCES,
    error_comment,
    store_received,
)
from dicomweb_archive.dimse.send import (
    MAX_SUBOPERATIONS,
    StoredInstance,
    Target,
    contexts_for,
    find_targets,
    sending_from_store,
    with_syntaxes,
)
from dicomweb_archive.dimse.settings import ScpSettings, tls_context
from dicomweb_archive.dimse.spool import close_spool, discard_partial, open_spool
from dicomweb_archive.errors import IndexUnavailableError
from dicomweb_archive.ops import stages
from dicomweb_archive.ops.ingest_types import PipelineOptions
from dicomweb_archive.ops.receive import not_replaced

LOG = logging.getLogger("dicomweb_archive.dimse")
T = TypeVar("T")
PENDING = 0xFF00
CANCEL = 0xFE00
#: The syntaxes accepted, in the order one is chosen among those a context proposes:
#: Explicit VR Little Endian first (it keeps the VRs), then the other uncompressed ones, then
#: every other syntax pynetdicom knows (a compressed one is proposed alone by most senders)
ACCEPTED_SYNTAXES = list(
    dict.fromkeys(
        [
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
            DeflatedExplicitVRLittleEndian,
            ExplicitVRBigEndian,
            *ALL_TRANSFER_SYNTAXES,
        ]
    )
)
#: the status pynetdicom answers a C-MOVE or C-GET whose handler fails before its first
#: sub-operation ("unable to process", PS3.4 C.4.2.1.5, C.4.3.1.4)
REFUSED_RETRIEVE = {"C-MOVE": 0xC514, "C-GET": 0xC413}
#: Verification SOP Class (PS3.4 A.4)
VERIFICATION = "1.2.840.10008.1.1"
QR_MODELS = (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_MOVE,
    PATIENT_ROOT_GET,
    STUDY_ROOT_FIND,
    STUDY_ROOT_MOVE,
    STUDY_ROOT_GET,
)


@dataclass(slots=True)
class _Counts:
    """What one association did, for its log line."""

    stored: int = 0
    #: sent again, the same bytes as stored already (answered Success, nothing written)
    unchanged: int = 0
    failed: int = 0
    found: int = 0
    sent: int = 0


#: why an association was rejected, by the A-ASSOCIATE-RJ's Source and Reason/Diag. (PS3.8
#: 9.3.4, 7.1.1.9), as pynetdicom's acceptor decides it
REJECTION_REASONS = {
    (0x01, 0x03): "calling AE title not allowed (--allow-aet)",
    (0x01, 0x07): "called AE title {called!r} is not this archive's (--aet {ours!r})",
    (0x01, 0x02): "application context name not supported",
    (0x02, 0x01): "user identity not verified",
    (0x03, 0x02): "too many associations at once (--max-associations)",
}


def rejection_reason(assoc: Any) -> str:
    """Why ``assoc`` (an association this AE rejected) was rejected, in words."""
    sent = getattr(assoc.acceptor, "primitive", None)
    asked = getattr(assoc.requestor, "primitive", None)
    key = (int(getattr(sent, "result_source", 0) or 0), int(getattr(sent, "diagnostic", 0) or 0))
    template = REJECTION_REASONS.get(key)
    if template is None:
        return f"source {key[0]}, reason {key[1]}"
    called = str(getattr(asked, "called_ae_title", "") or "").strip()
    return template.format(called=called, ours=str(assoc.acceptor.ae_title).strip())


class _NoContexts:
    """Stands for a C-MOVE destination that accepted the association but none of its
    presentation contexts (pynetdicom aborts it): it accepts no C-STORE, so that each
    sub-operation fails (PS3.4 C.4.2.3.1) instead of the move being answered 0xA801 (Move
    Destination unknown)."""

    is_established = True
    accepted_contexts: tuple[Any, ...] = ()

    def send_c_store(self, *_args: Any, **_kwargs: Any) -> Dataset:
        raise RuntimeError("the move destination accepted no presentation context")

    def release(self) -> None:
        """Nothing to release: the association was aborted already."""


class _ArchiveAE(AE):
    """pynetdicom's AE whose C-MOVE associations send instances from the store."""

    archive: Archive

    def associate(self, *args: Any, **kwargs: Any) -> Association:
        assoc = super().associate(*args, **kwargs)
        if not assoc.is_established:
            where = f"{kwargs.get('ae_title')} at {args[0]}:{args[1]}"
            if assoc.rejected_contexts:
                LOG.warning(
                    "C-MOVE destination %s accepted none of the %d presentation contexts "
                    "proposed: its sub-operations fail",
                    where,
                    len(assoc.rejected_contexts),
                )
                assoc = cast(Association, _NoContexts())
            else:
                LOG.warning(
                    "C-MOVE destination %s: no association (refused, aborted or unreachable)",
                    where,
                )
                return assoc
        sending_from_store(assoc, self.archive)
        return assoc


class DicomServer:
    """The archive as a DICOM SCP (see the module docstring)."""

    def __init__(
        self,
        archive: Archive,
        settings: ScpSettings,
        *,
        options: PipelineOptions | None = None,
        tracebacks: bool = False,
    ) -> None:
        self.archive = archive
        self.reader = Archive(archive.location, archive.storage, archive.config)
        self.settings = settings
        self.options = options or PipelineOptions()
        self.tracebacks = tracebacks
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="dimse-write")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="dimse-read")
        self._counts: dict[int, _Counts] = {}
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None
        self._spool: Path | None = None
        self.ae = self._make_ae()

    # -- the application entity ------------------------------------------------------------
    def _make_ae(self) -> _ArchiveAE:
        s = self.settings
        ae = _ArchiveAE(ae_title=s.ae_title)
        ae.archive = self.reader
        ae.maximum_pdu_size = s.max_pdu
        ae.maximum_associations = s.max_associations
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        ae.require_calling_aet = list(s.allowed_calling)
        ae.require_called_aet = True  # PS3.8 9.3.4: another Called AE Title is rejected
        ae.add_supported_context(VERIFICATION, ACCEPTED_SYNTAXES)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(
                str(context.abstract_syntax), ACCEPTED_SYNTAXES, scu_role=False, scp_role=True
            )
        for model in QR_MODELS:
            ae.add_supported_context(model)
        return ae

    def start(self) -> tuple[str, int]:
        """Listen (over TLS with the settings' certificate); returns the address and port.

        Raises:
            UsageError: TLS settings that do not go together.
            OSError: the address cannot be had, or the TLS files cannot be used.
        """
        context = tls_context(self.settings)
        self._writer.submit(self._complete_pending).result()
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.STORE_SEND_CHUNKED_DATASET = True
        self._spool = open_spool()
        _config.LOG_REQUEST_IDENTIFIERS = False  # patient data
        _config.LOG_RESPONSE_IDENTIFIERS = False
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_C_GET, self._on_get),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_RELEASED, self._on_ended),
            (evt.EVT_ABORTED, self._on_ended),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        address = (self.settings.host, self.settings.port)
        try:
            server = self.ae.start_server(
                address, block=False, ssl_context=context, evt_handlers=handlers
            )
        except BaseException:
            self._spool = None
            close_spool()
            raise
        assert server is not None  # not blocking: the server is returned
        self._server = server
        host, port = server.server_address[:2]
        return str(host), int(port)

    def stop(self, grace: float | None = None) -> None:
        """Stop (see the module docstring); every write is finished when this returns."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            # a released association's thread may linger (waiting for the peer to close)
            running = [a for a in server.active_associations if a.is_established]
            deadline = time.monotonic() + (self.settings.dimse_timeout if grace is None else grace)
            while running and time.monotonic() < deadline:
                time.sleep(0.05)
                running = [a for a in running if a.is_established]
            for assoc in running:
                assoc.abort()
                assoc.join()
        self._writer.submit(self._run_stages)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.reader.close()
        if self._spool is not None:
            self._spool = None
            close_spool()

    # -- association log ---------------------------------------------------------------------
    def _on_established(self, event: Any) -> None:
        with self._lock:
            self._counts[id(event.assoc)] = _Counts()

    def _on_ended(self, event: Any) -> None:
        discard_partial(event.assoc)
        with self._lock:
            counts = self._counts.pop(id(event.assoc), None)
        if counts is None:
            return
        requestor = event.assoc.requestor
        how = "released" if event.event is evt.EVT_RELEASED else "aborted"
        LOG.info(
            "association from %s at %s:%s %s: %d stored, %d unchanged (stored already), "
            "%d failed, %d found, %d sent",
            requestor.ae_title,
            requestor.address,
            requestor.port,
            how,
            counts.stored,
            counts.unchanged,
            counts.failed,
            counts.found,
            counts.sent,
        )
        if counts.stored or counts.unchanged or counts.failed:
            # also after refusals and instances sent again: their studies were notified when
            # their headers were read, and must not stay pending
            self._writer.submit(self._run_stages)

    def _on_rejected(self, event: Any) -> None:
        requestor = event.assoc.requestor
        LOG.warning(
            "association from %s at %s:%s rejected (%s)",
            requestor.ae_title,
            requestor.address,
            requestor.port,
            rejection_reason(event.assoc),
        )

    def _count(self, event: Any) -> _Counts:
        with self._lock:
            return self._counts.setdefault(id(event.assoc), _Counts())

    def _complete_pending(self) -> None:
        """The stages a stopped run left pending (a killed ``scp``: instances it answered as
        stored but whose association's stages never ran), so that C-FIND finds them."""
        try:
            report = stages.complete_pending(self.archive)
        except Exception as exc:  # the server starts anyway; the stages run again later
            self._log_failure(f"the pending group and study stages did not run: {exc}")
            return
        if report is None:
            return
        for study, why in report.failures.items():
            LOG.warning("study %s not built: %s", study, why)

    def _run_stages(self) -> None:
        try:
            with self.archive.writing("scp stages"):
                report = stages.run_stages(self.archive, None, group=True, study=True)
        except Exception as exc:  # the server goes on; the stages run again later
            self._log_failure(f"the group and study stages did not run: {exc}")
            return
        for study, why in report.failures.items():
            LOG.warning("study %s not built: %s", study, why)

    def _log_failure(self, message: str) -> None:
        if self.tracebacks:
            LOG.exception(message)
        else:
            LOG.error(message)

    # -- services ------------------------------------------------------------------------
    def _read(self, read: Callable[[], T]) -> T:
        """``read()`` in a reader thread (the module docstring)."""
        return self._readers.submit(read).result()

    def _on_store(self, event: Any) -> Dataset:
        counts = self._count(event)
        status = Dataset()
        try:
            code, result = self._writer.submit(
                store_received, self.archive, event, options=self.options
            ).result()
        except Exception as exc:  # an unexpected failure: this instance fails, the rest goes on
            self._log_failure(f"C-STORE from {event.assoc.requestor.ae_title}: not stored: {exc}")
            counts.failed += 1
            status.Status = CANNOT_STORE
            status.ErrorComment = "not stored (see the archive's log)"
            return status
        status.Status = code
        if code:
            counts.failed += 1
            message = result.error
            if code == DUPLICATE:
                message = not_replaced(
                    f"C-STORE from {event.assoc.requestor.ae_title}",
                    event.request.AffectedSOPInstanceUID,
                )
            LOG.warning("%s (status 0x%04X)", message, code)
            status.ErrorComment = error_comment(result)
        elif result.status == "unchanged":
            counts.unchanged += 1
        else:
            counts.stored += 1
        return status

    def _on_find(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        model = str(event.request.AffectedSOPClassUID)
        try:
            query = read_query(event.identifier, model)
            found = self._read(lambda: find_matches(self.reader.index, query))
        except QueryRefusedError as exc:
            yield self._refused(event, "C-FIND", exc.status, str(exc)), None
            return
        except IndexUnavailableError as exc:  # PS3.4 C.4.1.1.4: Refused: Out of Resources
            LOG.error("C-FIND from %s: %s", event.assoc.requestor.ae_title, exc)
            status = Dataset()
            status.Status = OUT_OF_RESOURCES
            status.ErrorComment = INDEX_UNAVAILABLE
            yield status, None
            return
        except Exception as exc:  # the index cannot answer
            self._log_failure(f"C-FIND from {event.assoc.requestor.ae_title}: {exc}")
            yield self._refused(event, "C-FIND", UNABLE_TO_PROCESS, "the index cannot answer"), None
            return
        counts = self._count(event)
        for item in found:
            if event.is_cancelled:
                yield CANCEL, None
                return
            counts.found += 1
            yield PENDING, to_response(item, query, retrieve_ae_title=self.settings.ae_title)

    def _refused(self, event: Any, service: str, code: int, why: str) -> Dataset:
        LOG.warning(
            "%s from %s refused (status 0x%04X): %s",
            service,
            event.assoc.requestor.ae_title,
            code,
            why,
        )
        status = Dataset()
        status.Status = code
        status.ErrorComment = why[:64]
        return status

    def _targets(self, event: Any, service: str) -> list[Target]:
        """The instances a retrieve names; raises (pynetdicom answers "unable to process":
        :data:`REFUSED_RETRIEVE`) after one log line, naming that status, when it names none
        it can."""
        model = str(event.request.AffectedSOPClassUID)
        sent = REFUSED_RETRIEVE[service]
        try:
            found = self._read(lambda: find_targets(self.reader.index, event.identifier, model))
            targets = with_syntaxes(self.reader, found)
        except QueryRefusedError as exc:
            self._refused(event, service, sent, str(exc))
            raise
        if len(targets) > MAX_SUBOPERATIONS:
            why = f"{len(targets)} instances match, more than one request can count"
            self._refused(event, service, sent, why)
            raise QueryRefusedError(UNABLE_TO_PROCESS, why)
        return targets

    def _sub_operations(
        self, event: Any, targets: list[Target]
    ) -> Iterator[tuple[int, Dataset | None]]:
        counts = self._count(event)

        def outcome(sent: bool) -> None:
            with self._lock:
                if sent:
                    counts.sent += 1
                else:
                    counts.failed += 1

        for target in targets:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, StoredInstance(target, outcome)

    def _on_move(self, event: Any) -> Iterator[Any]:
        destination = (event.move_destination or "").strip()
        peer = self.settings.peers.get(destination)
        if peer is None:
            LOG.warning(
                "C-MOVE from %s: move destination %r unknown (give it with --peer)",
                event.assoc.requestor.ae_title,
                destination,
            )
            yield None, None
            return
        targets = self._targets(event, "C-MOVE")
        yield peer.host, peer.port, {"contexts": contexts_for(targets)}
        yield len(targets)
        yield from self._sub_operations(event, targets)

    def _on_get(self, event: Any) -> Iterator[Any]:
        sending_from_store(event.assoc, self.reader)
        targets = self._targets(event, "C-GET")
        yield len(targets)
        yield from self._sub_operations(event, targets)
