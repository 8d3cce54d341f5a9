"""``serve`` and ``scp`` while their PostgreSQL index is down (the server stopped, then started
again): an answer at once that says "not now" (503 with Retry-After; C-STORE and C-FIND status
0xA700 Refused: Out of Resources with an Error Comment) rather than the pool's timeout and a
500 or 0xC000, one log line without the password, and the next request after the server is
back answered without a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage
from pynetdicom import AE

from dicomweb_archive import Archive, ingest
from dicomweb_archive.dimse.query import STUDY_ROOT_FIND
from dicomweb_archive.index.postgres import CONNECT_TIMEOUT
from dicomweb_archive.ops.receive import receive_instances
from tests.dimse_peers import scp
from tests.factory import make_ct, uid, write_ct
from tests.pgserver import binaries, postgres_cluster
from tests.serving import Http, serving

pytestmark = pytest.mark.skipif(binaries() is None, reason="PostgreSQL is not installed")
PASSWORD = "s3cret-word"


def _with_password(url: str) -> str:
    """The cluster's URL with a password (``trust`` authentication ignores it)."""
    return url.replace("postgres@", f"postgres:{PASSWORD}@") + "?schema=down"


def test_serve_answers_503_while_the_index_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """QIDO-RS with the index server stopped: 503 with Retry-After before the pool's timeout,
    one log line naming the index without its password; started again: 200."""
    caplog.set_level("INFO", logger="dicomweb_archive.web")
    study = write_ct(tmp_path / "a.dcm", study=uid(1), series=uid(2), sop=uid(3))
    with postgres_cluster() as cluster:
        with Archive.open_or_create(str(tmp_path / "s"), index=_with_password(cluster.url)) as a:
            assert ingest(a, [study]).ok
        with serving(str(tmp_path / "s")) as base:
            http = Http(base)
            assert http.get(f"{http.root}/studies").status_code == 200
            cluster.stop()
            caplog.clear()
            for _ in range(2):  # the broken connection, then a new one refused
                started = time.monotonic()
                reply = http.get(f"{http.root}/studies")
                assert time.monotonic() - started < CONNECT_TIMEOUT
                assert reply.status_code == 503, reply.content
                assert int(reply.headers["retry-after"]) > 0
                assert reply.content == b"the index does not answer; try again in 5 s\n"
            errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
            assert len(errors) == 2, errors
            assert all("does not answer" in e or "cannot connect" in e for e in errors), errors
            assert PASSWORD not in caplog.text
            cluster.start()
            assert http.get(f"{http.root}/studies").status_code == 200


def _query() -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    return identifier


def _ct(number: int) -> Dataset:
    return make_ct(study=uid("7.1"), series=uid("7.1.1"), sop=uid(f"7.1.1.{number}"))


def test_scp_refuses_for_lack_of_resources_while_the_index_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """C-STORE and C-FIND with the index server stopped: 0xA700 with an Error Comment (PS3.4
    B.2.3, C.4.1.1.4), the association goes on, no password logged; started again: stored."""
    caplog.set_level("INFO", logger="dicomweb_archive.dimse")
    comment = "the index does not answer; try again later"
    with postgres_cluster() as cluster:
        Archive.open_or_create(str(tmp_path / "s"), index=_with_password(cluster.url)).close()
        with scp(str(tmp_path / "s")) as (port, _server):
            ae = AE(ae_title="TESTSCU")
            ae.add_requested_context(CTImageStorage)
            ae.add_requested_context(STUDY_ROOT_FIND)
            assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVE")
            assert assoc.is_established
            assert assoc.send_c_store(_ct(1)).Status == 0
            cluster.stop()
            for number in (2, 3):
                status = assoc.send_c_store(_ct(number))
                assert (status.Status, status.ErrorComment) == (0xA700, comment)
            found = [status for status, _ in assoc.send_c_find(_query(), STUDY_ROOT_FIND)]
            assert [(s.Status, s.ErrorComment) for s in found] == [(0xA700, comment)]
            cluster.start()
            assert assoc.send_c_store(_ct(4)).Status == 0
            assoc.release()
        assert PASSWORD not in caplog.text
        with Archive.open(str(tmp_path / "s")) as archive:
            assert archive.index.counts()["instances"] == 2


def test_stow_refuses_for_lack_of_resources_while_the_index_is_down(tmp_path: Path) -> None:
    """A STOW-RS part received while the index server is stopped fails with the Failure
    Reason 0xA700 (Refused: out of resources, PS3.18 I.2.2: send it again later), not a
    processing failure; started again, the same part is stored."""
    part = tmp_path / "a.dcm"
    write_ct(part, study=uid(11), series=uid(12), sop=uid(13))
    with postgres_cluster() as cluster:
        Archive.open_or_create(str(tmp_path / "s"), index=_with_password(cluster.url)).close()
        with Archive.open(str(tmp_path / "s")) as archive:
            archive.index.counts()  # the index in use: its connection breaks with the server
            cluster.stop()
            with part.open("rb") as stream:
                (outcome,) = receive_instances(archive, [("part 1", stream)])
            assert outcome.failure_reason == 0xA700, outcome.messages
            cluster.start()
            with part.open("rb") as stream:
                (outcome,) = receive_instances(archive, [("part 1", stream)])
            assert outcome.stored, outcome.messages
