"""``scp``'s answers to a pynetdicom peer: C-STORE statuses (refused data sets fail alone,
the association goes on), a full store, C-FIND refusal and cancel, an unknown C-MOVE
destination, C-GET with and without a presentation context for the stored syntax; the
command's settings, port in use and stop."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import CTImageStorage, MRImageStorage
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import app
from dicomweb_archive.dimse.query import STUDY_ROOT_FIND, STUDY_ROOT_GET, STUDY_ROOT_MOVE
from dicomweb_archive.dimse.server import CANCEL, DicomServer
from dicomweb_archive.dimse.settings import Peer, ScpSettings
from dicomweb_archive.ops.ingest import ingest, write_stream
from tests.dimse_peers import scp
from tests.factory import make_ct, uid

EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@pytest.fixture
def created(store: str) -> str:
    Archive.create(store).close()
    return store


def _association(port: int, abstract: str) -> Association:
    """An association to ``scp`` proposing ``abstract`` in Explicit VR Little Endian."""
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(abstract, [EXPLICIT])
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVE")
    assert assoc.is_established
    return assoc


def _ct(number: int, **changes: object) -> pydicom.Dataset:
    ds = make_ct(study=uid("9.1"), series=uid("9.1.1"), sop=uid(f"9.1.1.{number}"))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def test_c_store_statuses(created: str, caplog: pytest.LogCaptureFixture) -> None:
    """A data set stored, sent again, sent changed under its SOP Instance UID, and one ingest
    refuses each get their PS3.4 status (0x0000, 0x0000, 0xC002, 0xC001 with a reason); the
    association goes on and its log line counts them (the one sent again as unchanged)."""
    caplog.set_level("INFO", logger="dicomweb_archive.dimse")
    missing_study = _ct(3)
    del missing_study.StudyInstanceUID
    with scp(created) as (port, _server):
        assoc = _association(port, CTImageStorage)
        statuses = [
            assoc.send_c_store(ds)
            for ds in (_ct(1), _ct(1), _ct(1, PatientName="OTHER^NAME"), missing_study, _ct(2))
        ]
        assoc.release()
    assert [s.Status for s in statuses] == [0x0000, 0x0000, 0xC002, 0xC001, 0x0000]
    assert statuses[2].ErrorComment == "another instance with this SOP Instance UID is stored"
    assert "StudyInstanceUID" in statuses[3].ErrorComment
    with Archive.open(created) as archive:
        assert archive.index.counts()["instances"] == 2
        stored = archive.index.find_instance(uid("9.1.1.1"))
        assert stored is not None
    line = next(r.message for r in caplog.records if "released" in r.message)
    assert "from TESTSCU at 127.0.0.1" in line
    assert "2 stored, 1 unchanged (stored already), 2 failed" in line
    assert "OTHER" not in caplog.text and "DOE" not in caplog.text  # no patient data
    # the duplicate's line says what the operator can do: scp has no --replace
    assert "use --replace" not in caplog.text
    assert "ingest it with mkdicomweb --replace" in caplog.text


def test_a_full_store_answers_out_of_resources() -> None:
    """A store with no room left answers 0xA700 (Refused: Out of Resources)."""
    store = "memory://scp-full"
    with Archive.create(store) as archive:
        archive.storage.quota = 1000  # type: ignore[attr-defined]
    with scp(store) as (port, _server):
        assoc = _association(port, CTImageStorage)
        status = assoc.send_c_store(_ct(1))
        assoc.release()
    assert status.Status == 0xA700


def test_c_find_refuses_a_level_the_model_lacks(created: str) -> None:
    """PATIENT level under the Study Root model is 0xA900 (Identifier does not match SOP
    Class)."""
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = ""
    with scp(created) as (port, _server):
        assoc = _association(port, STUDY_ROOT_FIND)
        answers = list(assoc.send_c_find(query, STUDY_ROOT_FIND))
        assoc.release()
    assert [status.Status for status, _ in answers] == [0xA900]


def test_c_find_refuses_a_sequence_key_of_two_items(created: str) -> None:
    """A sequence key holds one item (PS3.4 C.2.2.2.6): one of two items is 0xA900."""
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.RequestAttributesSequence = [pydicom.Dataset(), pydicom.Dataset()]
    query.RequestAttributesSequence[0].RequestedProcedureID = "RP1"
    with scp(created) as (port, _server):
        assoc = _association(port, STUDY_ROOT_FIND)
        answers = list(assoc.send_c_find(query, STUDY_ROOT_FIND))
        assoc.release()
    assert [status.Status for status, _ in answers] == [0xA900]


def test_c_find_honours_cancel(created: str) -> None:
    """A C-FIND whose cancel arrives after the first answer gets no more answers, then the
    Cancel status."""
    with Archive.open(created) as archive:
        for number in range(3):
            ds = _ct(number, StudyInstanceUID=uid(f"9.{number}"))
            write_stream(archive, _p10(ds))
    server = DicomServer(Archive.open(created), ScpSettings())
    cancelled = iter([False, True, True])
    identifier = pydicom.Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""

    class Event:
        """What the C-FIND handler uses of pynetdicom's event; cancelled after one answer."""

        request = SimpleNamespace(AffectedSOPClassUID=STUDY_ROOT_FIND)
        assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title="TESTSCU"))

        def __init__(self) -> None:
            self.identifier = identifier

        @property
        def is_cancelled(self) -> bool:
            return next(cancelled)

    event = Event()
    try:
        answers = list(server._on_find(event))
    finally:
        server.stop()
    assert [status for status, _ in answers] == [0xFF00, CANCEL]


def _p10(ds: pydicom.Dataset) -> io.BytesIO:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def test_c_move_to_an_unknown_destination(created: str) -> None:
    """A C-MOVE to an AE title no --peer names is 0xA801 (Move Destination unknown)."""
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = uid("9.1")
    with scp(created) as (port, _server):
        assoc = _association(port, STUDY_ROOT_MOVE)
        answers = list(assoc.send_c_move(query, "NOWHERE", STUDY_ROOT_MOVE))
        assoc.release()
    assert [status.Status for status, _ in answers] == [0xA801]


def _get(port: int, sop: str, syntax: str) -> tuple[list[int], list[pydicom.Dataset]]:
    """C-GET one MR instance, accepting it in ``syntax`` only: final statuses and what came."""
    came: list[pydicom.Dataset] = []

    def keep(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        came.append(ds)
        return 0x0000

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(STUDY_ROOT_GET, [EXPLICIT])
    ae.add_requested_context(MRImageStorage, [syntax])
    role = build_role(MRImageStorage, scp_role=True)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="ARCHIVE",
        ext_neg=[role],
        evt_handlers=[(evt.EVT_C_STORE, keep)],
    )
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.SOPInstanceUID = sop
    statuses = [s.Status for s, _ in assoc.send_c_get(query, STUDY_ROOT_GET)]
    assoc.release()
    return statuses, came


def test_c_get_falls_back_to_explicit_vr_little_endian(created: str) -> None:
    """C-GET of a JPEG-LS instance by a peer that accepts Explicit VR Little Endian only sends
    it transcoded, pixel for pixel; a peer that accepts neither it nor Explicit or Implicit VR
    Little Endian gets the sub-operation failed (0xA702: every sub-operation failed)."""
    source = Path(str(get_testdata_file("MR_small_jpeg_ls_lossless.dcm")))
    original = pydicom.dcmread(source)
    with Archive.open(created) as archive:
        ingest(archive, [source])
    with scp(created) as (port, _server):
        stored, stored_came = _get(port, original.SOPInstanceUID, JPEG_LS_LOSSLESS)
        fallback, fallback_came = _get(port, original.SOPInstanceUID, EXPLICIT)
        refused, refused_came = _get(port, original.SOPInstanceUID, JPEG_BASELINE)
    assert stored[-1] == 0x0000 and stored_came[0].file_meta.TransferSyntaxUID == JPEG_LS_LOSSLESS
    assert fallback[-1] == 0x0000
    assert fallback_came[0].file_meta.TransferSyntaxUID == EXPLICIT
    assert (fallback_came[0].pixel_array == original.pixel_array).all()
    assert refused[-1] == 0xA702 and refused_came == []


def test_scp_port_in_use(created: str) -> None:
    """scp on a port in use exits 6 with one line naming the address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            app, ["scp", "-o", created, "--host", "127.0.0.1", "--port", str(port)]
        )
    assert result.exit_code == 6
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--peer", "PACS"], "--peer 'PACS': give AET=HOST:PORT"),
        (["--peer", "PACS=host:99999"], "give AET=HOST:PORT"),
        (["--aet", "A\\B"], "--aet 'A\\\\B': give 1 to 16 characters"),
        (["--peers-file", "/nonexistent/peers"], "--peers-file /nonexistent/peers: cannot be"),
    ],
    ids=["no-address", "bad-port", "backslash", "no-file"],
)
def test_scp_bad_settings(created: str, args: list[str], message: str) -> None:
    """A bad setting is one line on stderr and exit code 2; nothing listens."""
    result = CliRunner().invoke(app, ["scp", "-o", created, *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


@pytest.mark.local
def test_scp_stops_on_a_signal(created: str, tmp_path: Path) -> None:
    """SIGTERM (systemctl stop) and Ctrl-C stop the server cleanly: exit code 0, the last
    line says so."""
    peers = tmp_path / "peers"
    peers.write_text("# destinations\nPEER=127.0.0.1:11113\n")
    for number in (signal.SIGTERM, signal.SIGINT):
        with subprocess.Popen(
            [
                *(sys.executable, "-m", "dicomweb_archive.cli.main", "scp", "-o", created),
                *("--host", "127.0.0.1", "--port", "0", "--peers-file", str(peers)),
            ],
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONPATH": str(Path(__file__).parent.parent / "src")},
        ) as process:
            assert process.stderr is not None
            first = process.stderr.readline()
            assert first.startswith(f"serving {created} as DICOMWEB on 127.0.0.1:"), first
            process.send_signal(number)
            rest = process.stderr.read()
            assert process.wait(timeout=60) == 0
        assert rest.strip().splitlines()[-1] == "stopped"


def test_a_retrieve_needs_the_unique_key(created: str, caplog: pytest.LogCaptureFixture) -> None:
    """A C-MOVE or C-GET at STUDY level without Study Instance UID sends nothing: pynetdicom's
    "unable to process" status (0xC514, 0xC413), and one log line naming the key."""
    caplog.set_level("INFO", logger="dicomweb_archive.dimse")
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    with scp(created, peers={"PEER": Peer("PEER", "127.0.0.1", 1)}) as (port, _server):
        assoc = _association(port, STUDY_ROOT_MOVE)
        moved = [s.Status for s, _ in assoc.send_c_move(query, "PEER", STUDY_ROOT_MOVE)]
        assoc.release()
        assoc = _association(port, STUDY_ROOT_GET)
        got = [s.Status for s, _ in assoc.send_c_get(query, STUDY_ROOT_GET)]
        assoc.release()
    assert (moved, got) == ([0xC514], [0xC413])
    refusals = [r.message for r in caplog.records if "refused" in r.message]
    assert len(refusals) == 2
    assert all("needs StudyInstanceUID" in line for line in refusals)


def test_aborted_transfers_leave_no_partial_files(store: str, tmp_path: Path) -> None:
    """A transfer aborted mid-data-set (the sender killed) leaves pynetdicom's partial file in
    the server's own spool folder, not in the system's temporary folder, and stopping the
    server removes the folder (found by a tester: partial data sets, patient data, stayed in
    /tmp); a folder left by a killed scp is removed by the next one."""
    from dicomweb_archive.dimse import spool
    from tests.dimse_peers import DCMTK
    from tests.factory import write_ct

    tool = DCMTK["storescu"]
    if tool is None:
        pytest.skip("DCMTK's storescu is not installed")
    big = write_ct(
        tmp_path / "big.dcm",
        study=uid(71),
        series=uid(72),
        sop=uid(73),
        rows=512,
        columns=512,
        frames=40,
    )
    stale = Path(tempfile.gettempdir()) / f"{spool.PREFIX}999999999-x"
    stale.mkdir(exist_ok=True)
    Archive.create(store).close()
    with scp(store) as (port, server):
        folder = server._spool
        assert folder is not None and folder.is_dir() and not stale.exists()
        sender = subprocess.Popen(
            [tool, "-aec", "ARCHIVE", "--max-send-pdu", "4096", "127.0.0.1", str(port), str(big)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(600):
            if any(folder.iterdir()):
                break
            time.sleep(0.05)
        assert any(folder.iterdir())  # the data set being received is in the spool
        sender.kill()
        sender.wait()
        for _ in range(600):  # the association ends: its partial data set goes
            if not any(folder.iterdir()):
                break
            time.sleep(0.05)
        assert not any(folder.iterdir())
    assert not folder.exists()


def test_association_settings(created: str, caplog: pytest.LogCaptureFixture) -> None:
    """--max-associations: one more association than allowed is rejected (and logged);
    --max-pdu is the maximum length the archive tells the requestor (PS3.8 D.3.3.1);
    --network-timeout: an idle association is aborted after that many seconds."""
    caplog.set_level("INFO", logger="dicomweb_archive.dimse")
    with scp(created, max_associations=1, max_pdu=32768, network_timeout=1) as (port, _server):
        first = _association(port, CTImageStorage)
        assert first.acceptor.maximum_length == 32768
        ae = AE(ae_title="SECOND")
        ae.add_requested_context(CTImageStorage, [EXPLICIT])
        second = ae.associate("127.0.0.1", port, ae_title="ARCHIVE")
        assert second.is_rejected
        deadline = time.monotonic() + 10
        while first.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.is_aborted  # idle for longer than network_timeout
    assert any("SECOND" in r.message and "rejected" in r.message for r in caplog.records)
