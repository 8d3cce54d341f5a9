"""serve's server: CORS only where asked, an access log without query strings, bounded
waits for headers, one line for a response cut short, and the exit code for a port in use."""

from __future__ import annotations

import http.client
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive, ingest
from dicomweb_archive.cli.main import app
from dicomweb_archive.cli.serve import EXIT_CANNOT_START
from tests import stores
from tests.factory import write_series
from tests.serving import Http, serving
from tests.stores import ingested


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("server")
    files = write_series(root / "in", count=1, patient_id="PAT-S", patient_name="DOE^JANE")
    location = stores.location(root, "store")
    with Archive.open_or_create(location) as archive:
        assert ingest(archive, files).ok
    yield location
    stores.forget(location)


def test_cors_only_for_the_origins_given(store: str) -> None:
    """With cors_origins, a page of a listed origin may read the answers; others may not."""
    with serving(store, cors_origins=["http://viewer.example"]) as url:
        raw = Http(url)
        allowed = raw.get("/dicomweb/studies", {"Origin": "http://viewer.example"})
        assert allowed.headers["access-control-allow-origin"] == "http://viewer.example"
        other = raw.get("/dicomweb/studies", {"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_access_log_leaves_out_the_query(store: str, caplog: pytest.LogCaptureFixture) -> None:
    """Each request is one access log line (method, path, status, bytes, seconds); the query
    string, which may hold a patient's name, is not in it."""
    caplog.set_level(logging.INFO, logger="dicomweb_archive.web.access")
    with serving(store) as url:
        reply = Http(url).get("/dicomweb/studies?PatientName=DOE%5EJANE")
        assert reply.status_code == 200
        Http(url).get("/dicomweb/studies/1.2.3/metadata")
    lines = [r.getMessage() for r in caplog.records if r.name == "dicomweb_archive.web.access"]
    assert f"127.0.0.1 GET /dicomweb/studies 200 {len(reply.content)} " in lines[0]
    assert " GET /dicomweb/studies/1.2.3/metadata 404 " in lines[1]
    assert not any("DOE" in line or "PatientName" in line for line in lines)


def test_slow_request_headers_close_the_connection(store: str) -> None:
    """A client that does not finish its request headers in time is disconnected; one that
    does is answered, also on a kept-alive connection."""
    with serving(store, header_timeout=0.5) as url:
        port = int(url.split(":")[2].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /dicomweb/studies HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            assert sock.recv(100) == b""  # closed, without an answer
            assert time.monotonic() - started < 3
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(2):
            connection.request("GET", "/dicomweb/studies")
            assert connection.getresponse().read().startswith(b"[")
            time.sleep(0.3)
        connection.close()


@pytest.mark.local
def test_response_cut_short_is_one_log_line(
    tmp_path: Path, new_store: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    """A series whose second instance cannot be read ends without its closing boundary; the
    log has one line for it, no traceback."""
    location = new_store("cut")
    assert ingested(location, write_series(tmp_path / "in", count=2, patient_id="PAT-C")).ok
    sop = pydicom.dcmread(tmp_path / "in" / "IM00002.dcm").SOPInstanceUID  # sent second
    (second,) = Path(location).rglob(f"instances/{sop}/frames/1.mht")
    second.unlink()
    second.symlink_to(tmp_path / "in" / "IM00001.dcm")
    study, series = (p.name for p in (second.parents[5], second.parents[3]))
    with serving(location) as url:
        with pytest.raises(http.client.IncompleteRead):
            Http(url).get(f"/dicomweb/studies/{study}/series/{series}")
        time.sleep(0.2)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cut short" in errors[0].getMessage()
    assert errors[0].exc_info is None


def test_port_in_use_exits_cannot_start(store: str) -> None:
    """serve on a port already in use: one error line and exit code 6 (not uvicorn's 3)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "-o", store, "--port", str(port)])
    assert result.exit_code == EXIT_CANNOT_START == 6
    assert result.stderr == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_bad_input_logs_no_traceback(store: str, caplog: pytest.LogCaptureFixture) -> None:
    """Out-of-range limits and offsets are 400 with a sentence, and nothing is logged as an
    error (they once were a 500 with an OverflowError traceback)."""
    with serving(store) as url:
        reply = Http(url).get("/dicomweb/studies?limit=" + "9" * 26)
    assert reply.status_code == 400 and "limit" in reply.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
