"""``scp`` against peers an outside tester used: a C-MOVE destination or C-GET requestor that
takes Implicit VR Little Endian only, one that takes nothing, wildcards in retrieve keys,
C-STORE requests whose command and data set disagree, the log's wording, and stages left
pending by a killed server."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pydicom
import pytest
from pydicom.uid import CTImageStorage, MRImageStorage
from pynetdicom import AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE

from dicomweb_archive import Archive
from dicomweb_archive.dimse.query import (
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
)
from dicomweb_archive.dimse.settings import Peer
from dicomweb_archive.ops.ingest import write_stream
from dicomweb_archive.ops.ingest_types import PipelineOptions
from tests.dimse_peers import scp
from tests.factory import make_ct, uid

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@pytest.fixture
def created(store: str) -> str:
    Archive.create(store).close()
    return store


def _ct(number: int, patient_id: str = "PAT001") -> pydicom.Dataset:
    return make_ct(
        study=uid(f"7.{number}"),
        series=uid(f"7.{number}.1"),
        sop=uid(f"7.{number}.1.1"),
        patient_id=patient_id,
    )


def _p10(ds: pydicom.Dataset) -> io.BytesIO:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def _stored(store: str, *datasets: pydicom.Dataset) -> None:
    with Archive.open(store) as archive:
        for ds in datasets:
            assert write_stream(archive, _p10(ds)).error is None


@contextmanager
def _destination(syntax: str) -> Iterator[tuple[int, list[str]]]:
    """A storage SCP accepting every storage SOP Class in ``syntax`` only; yields its port
    and the transfer syntaxes of what it received."""
    came: list[str] = []

    def keep(event: evt.Event) -> int:
        came.append(str(event.context.transfer_syntax))
        return 0x0000

    ae = AE(ae_title="MOVEDEST")
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(str(context.abstract_syntax), [syntax])
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, keep)])
    assert server is not None
    try:
        yield int(server.server_address[1]), came
    finally:
        server.shutdown()


def _association(port: int, abstract: str) -> Association:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(abstract, [EXPLICIT])
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVE")
    assert assoc.is_established
    return assoc


def _move(port: int, query: pydicom.Dataset, model: str = STUDY_ROOT_MOVE) -> list[pydicom.Dataset]:
    assoc = _association(port, model)
    answers = [status for status, _ in assoc.send_c_move(query, "MOVEDEST", model)]
    assoc.release()
    return answers


def _study(number: int) -> pydicom.Dataset:
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = uid(f"7.{number}")
    return query


def _log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The associations' log lines (all written once the server has stopped)."""
    return [r.getMessage() for r in caplog.records if "association from" in r.getMessage()]


def _log_line(caplog: pytest.LogCaptureFixture) -> str:
    return _log_lines(caplog)[-1]


def test_c_move_to_a_destination_taking_implicit_vr_only(
    created: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A destination that accepts Implicit VR Little Endian only (``storescp +xi``) gets the
    instance in it (PS3.5 10.1); the move succeeds."""
    caplog.set_level("INFO", logger="dicomweb_archive.dimse")
    _stored(created, _ct(1))
    with _destination(IMPLICIT) as (dest, came):
        peers = {"MOVEDEST": Peer("MOVEDEST", "127.0.0.1", dest)}
        with scp(created, peers=peers) as (port, _server):
            answers = _move(port, _study(1))
    assert answers[-1].Status == 0x0000
    assert came == [IMPLICIT]
    assert _log_line(caplog).endswith("0 failed, 0 found, 1 sent")


def test_c_move_to_a_destination_taking_nothing(
    created: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A destination that accepts the association but none of its presentation contexts is a
    known destination: every sub-operation fails (0xA702), not 0xA801; the log says why and
    counts the instance failed, not sent."""
    caplog.set_level("INFO", logger="dicomweb_archive.dimse")
    _stored(created, _ct(1))
    with _destination(JPEG_BASELINE) as (dest, came):
        peers = {"MOVEDEST": Peer("MOVEDEST", "127.0.0.1", dest)}
        with scp(created, peers=peers) as (port, _server):
            answers = _move(port, _study(1))
    final = answers[-1]
    assert final.Status == 0xA702
    assert final.NumberOfFailedSuboperations == 1
    assert came == []
    assert any("accepted none of the" in r.getMessage() for r in caplog.records)
    assert _log_line(caplog).endswith("1 failed, 0 found, 0 sent")


def _get(port: int, study: str, syntax: str) -> tuple[pydicom.Dataset, list[str]]:
    came: list[str] = []

    def keep(event: evt.Event) -> int:
        came.append(str(event.context.transfer_syntax))
        return 0x0000

    ae = AE(ae_title="GETTER")
    ae.add_requested_context(STUDY_ROOT_GET, [EXPLICIT])
    ae.add_requested_context(CTImageStorage, [syntax])
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="ARCHIVE",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, keep)],
    )
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    answers = [s for s, _ in assoc.send_c_get(query, STUDY_ROOT_GET)]
    assoc.release()
    return answers[-1], came


def test_c_get_in_implicit_vr_only(created: str, caplog: pytest.LogCaptureFixture) -> None:
    """A C-GET requestor offering its storage SOP Class in Implicit VR Little Endian only
    gets the instance in it; one offering a syntax the instance cannot be sent in gets 0xA702
    and the log counts the sub-operation failed, not sent."""
    caplog.set_level("INFO", logger="dicomweb_archive.dimse")
    _stored(created, _ct(1))
    with scp(created) as (port, _server):
        implicit, implicit_came = _get(port, uid("7.1"), IMPLICIT)
        refused, refused_came = _get(port, uid("7.1"), JPEG_BASELINE)
    implicit_line, refused_line = _log_lines(caplog)[-2:]
    assert implicit.Status == 0x0000 and implicit_came == [IMPLICIT]
    assert implicit_line.endswith("0 failed, 0 found, 1 sent")
    assert refused.Status == 0xA702 and refused_came == []
    assert refused_line.endswith("1 failed, 0 found, 0 sent")


@pytest.mark.parametrize("patient_id", ["?*", "PID*", "P?D", "PAT00?"])
def test_no_wildcards_in_retrieve_keys(
    created: str, patient_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Patient Root C-MOVE or C-GET with a wildcard in Patient ID (a unique key: single
    values only, PS3.4 C.4.2.2.1) moves nothing: it is refused, and the log names the key."""
    caplog.set_level("INFO", logger="dicomweb_archive.dimse")
    _stored(created, _ct(1, "PAT001"), _ct(2, "PAT002"))
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = patient_id
    with _destination(EXPLICIT) as (dest, came):
        peers = {"MOVEDEST": Peer("MOVEDEST", "127.0.0.1", dest)}
        with scp(created, peers=peers) as (port, _server):
            moved = _move(port, query, PATIENT_ROOT_MOVE)
            assoc = _association(port, PATIENT_ROOT_GET)
            got = [s for s, _ in assoc.send_c_get(query, PATIENT_ROOT_GET)]
            assoc.release()
    assert came == []
    assert [s.Status for s in moved] == [0xC514]
    assert [s.Status for s in got] == [0xC413]
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2 and all("no wildcards" in line for line in refusals)


def test_a_wildcard_in_a_higher_levels_key(created: str) -> None:
    """A SERIES retrieve's Study Instance UID, a unique key too, holds no wildcard."""
    _stored(created, _ct(1))
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = uid("7.?")
    query.SeriesInstanceUID = uid("7.1.1")
    with scp(created) as (port, _server):
        assoc = _association(port, STUDY_ROOT_GET)
        got = [s.Status for s, _ in assoc.send_c_get(query, STUDY_ROOT_GET)]
        assoc.release()
    assert got == [0xC413]


def _store_with(port: int, ds: pydicom.Dataset, **command: str) -> pydicom.Dataset:
    """C-STORE ``ds`` with the request's UIDs changed to ``command``'s (as a wrong sender
    does); the response."""
    ae = AE(ae_title="MISMATCH")
    ae.add_requested_context(CTImageStorage, [EXPLICIT])
    ae.add_requested_context(MRImageStorage, [EXPLICIT])
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVE")
    assert assoc.is_established
    send = assoc.dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        if isinstance(primitive, C_STORE):
            for keyword, value in command.items():
                setattr(primitive, keyword, value)
        send(primitive, context_id)

    assoc.dimse.send_msg = send_msg  # type: ignore[method-assign]
    status = assoc.send_c_store(ds)
    assoc.release()
    return status


@pytest.mark.parametrize(
    ("command", "code", "comment"),
    [
        (
            {"AffectedSOPInstanceUID": "1.2.3.4.5"},
            0xC003,
            "Affected SOP Instance UID is not the data set's",
        ),
        (
            {"AffectedSOPClassUID": str(MRImageStorage)},
            0xA900,
            "Affected SOP Class UID is not the data set's",
        ),
    ],
    ids=["instance", "class"],
)
def test_c_store_whose_command_and_data_set_disagree(
    created: str, command: dict[str, str], code: int, comment: str
) -> None:
    """A C-STORE request whose Affected SOP Instance (or Class) UID is not the data set's is
    refused with a worded Error Comment, and nothing is stored (the file it would make is not a
    valid P10 file, PS3.10 7.1); the same data set sent right is stored."""
    ds = _ct(1)
    with scp(created) as (port, _server):
        wrong = _store_with(port, ds, **command)
        right = _store_with(port, ds)
    assert (wrong.Status, wrong.ErrorComment) == (code, comment)
    assert right.Status == 0x0000


def test_the_log_names_the_status_sent(created: str, caplog: pytest.LogCaptureFixture) -> None:
    """A refused retrieve's log line names the status the peer received (pynetdicom's
    0xC514 for C-MOVE, 0xC413 for C-GET), not the one the refusal was made with."""
    caplog.set_level("INFO", logger="dicomweb_archive.dimse")
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    with scp(created, peers={"MOVEDEST": Peer("MOVEDEST", "127.0.0.1", 1)}) as (port, _server):
        moved = [s.Status for s in _move(port, query)]
        assoc = _association(port, STUDY_ROOT_GET)
        got = [s.Status for s, _ in assoc.send_c_get(query, STUDY_ROOT_GET)]
        assoc.release()
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert (moved, got) == ([0xC514], [0xC413])
    assert [line.split(":")[0] for line in refusals] == [
        "C-MOVE from TESTSCU refused (status 0xC514)",
        "C-GET from TESTSCU refused (status 0xC413)",
    ]


def test_the_log_names_why_an_association_was_rejected(
    created: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rejected association's log line names the reason: a called AE title not the
    archive's, or a calling AE title not allowed."""
    caplog.set_level("INFO", logger="dicomweb_archive.dimse")
    with scp(created, allowed_calling=("MODALITY",)) as (port, _server):
        for calling, called in (("MODALITY", "NOTARCHIVE"), ("STRANGER", "ARCHIVE")):
            ae = AE(ae_title=calling)
            ae.add_requested_context("1.2.840.10008.1.1")
            assoc = ae.associate("127.0.0.1", port, ae_title=called)
            assert assoc.is_rejected
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert [line.split("rejected ")[1] for line in rejected] == [
        "(called AE title 'NOTARCHIVE' is not this archive's (--aet 'ARCHIVE'))",
        "(calling AE title not allowed (--allow-aet))",
    ]


def test_pending_stages_run_when_the_server_starts(created: str) -> None:
    """An instance stored with its stages left pending (as by an ``scp`` killed before its
    association's stages ran) is found by C-FIND as soon as the next server starts, before
    any association stores anything."""
    with Archive.open(created) as archive:
        options = PipelineOptions(group=False, study=False)
        assert write_stream(archive, _p10(_ct(1)), options=options).error is None
    query = _study(1)
    with scp(created) as (port, _server):
        assoc = _association(port, STUDY_ROOT_FIND)
        found = [i.StudyInstanceUID for s, i in assoc.send_c_find(query, STUDY_ROOT_FIND) if i]
        assoc.release()
    assert found == [uid("7.1")]
