"""STOW-RS (PS3.18 10.5) through serve: the response module, status codes, media types, size
limit, read-only mode, bearer tokens, TLS and the command's options."""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import app
from dicomweb_archive.cli.serve import EXIT_CANNOT_START
from dicomweb_archive.cli.serve_runner import bind, make_server
from dicomweb_archive.errors import StoreFullError
from dicomweb_archive.ops.receive import (
    CANNOT_UNDERSTAND,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    STUDY_MISMATCH,
    receive_instances,
)
from dicomweb_archive.ops.revert import revert_change
from dicomweb_archive.store.changes import change_ids, read_change
from dicomweb_archive.store.config import StoreConfig
from dicomweb_archive.store.instance import InstanceKey, read_info
from dicomweb_archive.store.keys import STAGING
from dicomweb_archive.web.app import create_app
from tests.factory import make_ct, uid
from tests.serving import free_port

BOUNDARY = "stow-test-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def _testdata(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str)
    return Path(path).read_bytes()


CT = _testdata("CT_small.dcm")
MR = _testdata("MR_small.dcm")
CT_DS = pydicom.dcmread(io.BytesIO(CT))
MR_DS = pydicom.dcmread(io.BytesIO(MR))


@contextlib.contextmanager
def stow_serving(
    store: str,
    *,
    writable: bool = True,
    tokens: Sequence[str] = (),
    token_for_reads: bool = False,
    max_upload: int = 1 << 30,
    tls: tuple[Path, Path] | None = None,
) -> Iterator[str]:
    """serve's app on a free loopback port, in a thread (writes through a second archive
    object, as the command does); yields the DICOMweb base URL."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    with Archive.open(store) as archive, Archive.open(store) as writer:
        application = create_app(
            archive,
            writer=writer if writable else None,
            tokens=tokens,
            token_for_reads=token_for_reads,
            max_upload=max_upload,
        )
        cert, key = tls or (None, None)
        server = make_server(application, ssl_certfile=cert, ssl_keyfile=key)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        try:
            yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/dicomweb"
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


@pytest.fixture
def frames_as_received(store: str) -> str:
    """A store whose recorded default is frames as received (exports are the files sent)."""
    Archive.create(store, StoreConfig(recompression=None)).close()
    return store


def body(*parts: tuple[str, bytes], end: bool = True) -> bytes:
    """A multipart/related body of ``(content type, bytes)`` parts."""
    out = b""
    for content_type, data in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if end else b"")


def post(url: str, data: Any, content_type: str = MULTIPART, **headers: str) -> requests.Response:
    return requests.post(url, data=data, headers={"Content-Type": content_type, **headers})


def sop_count(store: str) -> int:
    with Archive.open(store) as archive:
        return int(archive.index.counts()["instances"])


def items(reply: requests.Response, tag: str) -> list[dict[str, Any]]:
    value: list[dict[str, Any]] = reply.json().get(tag, {}).get("Value", [])
    return value


def test_each_bad_part_fails_alone_with_its_reason(frames_as_received: str) -> None:
    """A good part is stored (Referenced SOP Sequence with its Retrieve URL, 202); a part that
    is not DICOM, one cut inside its header, one of another type and one of another study than
    the URL's fail with their Failure Reasons."""
    study = CT_DS.StudyInstanceUID
    with stow_serving(frames_as_received) as url:
        reply = post(
            f"{url}/studies/{study}",
            body(
                ("application/dicom", b"not a DICOM file at all"),
                ("application/dicom", CT),
                ("application/dicom", CT[:400]),
                ("application/dicom", MR),
                ("text/plain", b"hello"),
            ),
        )
    assert reply.status_code == 202
    assert reply.headers["content-type"] == "application/dicom+json"
    assert reply.json()["00081190"]["Value"] == [f"{url}/studies/{study}"]
    (stored,) = items(reply, "00081199")
    assert stored["00081150"]["Value"] == [CT_DS.SOPClassUID]
    assert stored["00081155"]["Value"] == [CT_DS.SOPInstanceUID]
    assert stored["00081190"]["Value"] == [
        f"{url}/studies/{study}/series/{CT_DS.SeriesInstanceUID}/instances/{CT_DS.SOPInstanceUID}"
    ]
    assert "00081196" not in stored
    failed = items(reply, "00081198")
    assert [f["00081197"]["Value"] for f in failed] == [
        [CANNOT_UNDERSTAND],
        [CANNOT_UNDERSTAND],
        [STUDY_MISMATCH],
        [CANNOT_UNDERSTAND],
    ]
    assert failed[2]["00081155"]["Value"] == [MR_DS.SOPInstanceUID]
    assert sop_count(frames_as_received) == 1
    with Archive.open(frames_as_received) as archive:
        assert not archive.index.locate("study", MR_DS.StudyInstanceUID)


def test_status_codes(frames_as_received: str, caplog: pytest.LogCaptureFixture) -> None:
    """200 when all are stored (again: unchanged), 409 when none is, 400 for a body that is not
    a whole multipart message, 415 for other media types; a differing file with a stored SOP
    Instance UID fails as a duplicate."""
    with stow_serving(frames_as_received) as url:
        assert post(f"{url}/studies", body(("application/dicom", CT))).status_code == 200
        again = post(f"{url}/studies", body(("application/dicom", CT)))
        assert again.status_code == 200 and len(items(again, "00081199")) == 1
        changed = bytearray(CT)  # a pixel value changed (the last byte is trailing padding,
        changed[CT.index(b"\xe0\x7f\x10\x00") + 100] ^= 0xFF  # which has no significance)
        conflict = post(f"{url}/studies", body(("application/dicom", bytes(changed))))
        assert conflict.status_code == 409
        assert items(conflict, "00081198")[0]["00081197"]["Value"] == [DUPLICATE_SOP_INSTANCE]
        assert "00081199" not in conflict.json()
        # the log line says what the operator can do: STOW-RS has no --replace
        assert "use --replace" not in caplog.text
        assert "ingest it with mkdicomweb --replace" in caplog.text
        cut = post(f"{url}/studies", body(("application/dicom", MR), end=False))
        assert cut.status_code == 400
        assert post(f"{url}/studies", f"--{BOUNDARY}--\r\n").status_code == 400
        for media_type in (
            "application/dicom+json",
            f'multipart/related; type="application/dicom+xml"; boundary={BOUNDARY}',
            "application/dicom",
        ):
            assert (
                post(f"{url}/studies", body(("application/dicom", MR)), media_type).status_code
                == 415
            )
        assert post(f"{url}/studies/1.2..3", body(("application/dicom", MR))).status_code == 400
    assert sop_count(frames_as_received) == 1


@pytest.mark.shared  # the serve process opens the store
def test_a_body_with_another_boundary_is_one_worded_line(frames_as_received: str) -> None:
    """A body whose parts are delimited by another boundary than its Content-Type's: 400 naming
    the boundary expected, in our words; the `serve` process's stderr has no line of the
    parser's own (only the access log)."""
    port = free_port()
    command = [sys.executable, "-m", "dicomweb_archive.cli.main", "serve", "-o"]
    process = subprocess.Popen(
        [*command, frames_as_received, "--port", str(port), "--allow-write"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    other = body(("application/dicom", MR)).replace(BOUNDARY.encode(), b"another-boundary")
    try:
        reply = None
        for _ in range(200):
            try:
                reply = post(f"http://127.0.0.1:{port}/dicomweb/studies", other)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert reply is not None and reply.status_code == 400
    assert reply.text == (
        f'the request body is not multipart/related with boundary "{BOUNDARY}" '
        "(the boundary its Content-Type gives; RFC 2046 5.1.1)\n"
    )
    lines = err.decode().splitlines()
    assert len(lines) == 2 and " POST /dicomweb/studies 400 " in lines[1], lines


def test_store_recompression_applies(store: str) -> None:
    """Received instances are recompressed as the store's recorded default says (JPEG-LS for a
    new store), and the stages run: the study is searchable."""
    Archive.create(store).close()
    with Archive.open(store) as archive:
        (outcome,) = receive_instances(archive, [("part 1", io.BytesIO(CT))])
        assert outcome.stored and outcome.warning_reason is None
        key = InstanceKey(CT_DS.StudyInstanceUID, CT_DS.SeriesInstanceUID, CT_DS.SOPInstanceUID)
        info = read_info(archive.storage, archive.keys, key)
        assert info.frames[0].recompressed
        assert archive.index.locate("study", CT_DS.StudyInstanceUID)


def test_a_request_is_one_revertible_change(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request's instances are committed as one "receive" change (journalled, so durable
    when acknowledged), which revert undoes; a change that cannot be committed fails every
    part with Refused: out of resources, and stores nothing; an unexpected error leaves
    nothing staged."""
    Archive.create(store).close()
    with Archive.open(store) as archive:
        outcomes = receive_instances(
            archive, [("part 1", io.BytesIO(CT)), ("part 2", io.BytesIO(MR))]
        )
        assert all(o.stored for o in outcomes)
        (change_id,) = change_ids(archive.storage)
        record = read_change(archive.storage, archive.keys, change_id)
        assert record["kind"] == "receive" and len(record["instances"]) == 2
        report = revert_change(archive, change_id)
        assert archive.index.counts()["instances"] == 0
        assert (report.plan.size, len(report.plan.studies)) == (2, 2)  # what revert prints

        def full(change: object) -> None:
            raise StoreFullError("no space left")

        monkeypatch.setattr(archive, "commit", full)
        (outcome,) = receive_instances(archive, [("part 1", io.BytesIO(CT))])
        assert outcome.failure_reason == OUT_OF_RESOURCES
        assert "part 1: not stored: no space left" in outcome.messages
        assert archive.index.counts()["instances"] == 0

        def broken(change: object) -> None:
            raise RuntimeError("unexpected")

        monkeypatch.setattr(archive, "commit", broken)
        with pytest.raises(RuntimeError):
            receive_instances(archive, [("part 1", io.BytesIO(CT))])
        assert not list(archive.storage.list_prefix(STAGING))


def test_read_only_without_allow_write(frames_as_received: str) -> None:
    """Without --allow-write a POST is 405 with an Allow header, and nothing is stored."""
    with stow_serving(frames_as_received, writable=False) as url:
        for path in ("/studies", f"/studies/{CT_DS.StudyInstanceUID}"):
            reply = post(url + path, body(("application/dicom", CT)))
            assert reply.status_code == 405
            assert "GET" in reply.headers["allow"] and "POST" not in reply.headers["allow"]
    assert sop_count(frames_as_received) == 0


def test_bearer_tokens(frames_as_received: str, caplog: pytest.LogCaptureFixture) -> None:
    """With tokens a write needs one (401 with WWW-Authenticate: Bearer, nothing stored,
    otherwise); reads need none unless --token-for-reads; no token reaches the log."""
    caplog.set_level(logging.INFO)
    data = body(("application/dicom", CT))
    with stow_serving(frames_as_received, tokens=["s3cret", "other"]) as url:
        missing = post(f"{url}/studies", data)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = post(f"{url}/studies", data, Authorization="Bearer s3cre")
        assert wrong.status_code == 401 and "invalid_token" in wrong.headers["www-authenticate"]
        assert sop_count(frames_as_received) == 0
        assert requests.get(f"{url}/studies").status_code == 200
        assert post(f"{url}/studies", data, Authorization="Bearer other").status_code == 200
    assert sop_count(frames_as_received) == 1
    with stow_serving(frames_as_received, tokens=["s3cret"], token_for_reads=True) as url:
        assert requests.get(f"{url}/studies").status_code == 401
        client = DICOMwebClient(url, headers={"Authorization": "Bearer s3cret"})
        assert len(client.search_for_studies()) == 1
    assert "POST /dicomweb/studies 401" in caplog.text
    assert "s3cre" not in caplog.text and "other" not in caplog.text


def test_upload_limit(frames_as_received: str) -> None:
    """A body over --max-upload is 413, whether Content-Length says so or it streams
    (chunked); nothing is stored."""
    data = body(("application/dicom", CT))
    with stow_serving(frames_as_received, max_upload=len(data) - 1) as url:
        assert post(f"{url}/studies", data).status_code == 413
        chunks = iter([data[:20000], data[20000:]])
        assert post(f"{url}/studies", chunks).status_code == 413
    assert sop_count(frames_as_received) == 0


def test_tls(frames_as_received: str, tmp_path: Path) -> None:
    """With --ssl-certfile/--ssl-keyfile the server speaks HTTPS: dicomweb-client stores and
    searches through it, checking a self-signed certificate made here."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    with stow_serving(frames_as_received, tls=(cert, key)) as url:
        session = requests.Session()
        session.verify = str(cert)
        session.trust_env = False  # else REQUESTS_CA_BUNDLE would replace ``verify``
        client = DICOMwebClient(url, session=session)
        response = client.store_instances([MR_DS])
        assert response.ReferencedSOPSequence[0].RetrieveURL.startswith("https://")
        assert len(client.search_for_studies()) == 1
        session.close()
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/studies")  # an unknown certificate is refused


def test_serve_options(frames_as_received: str, tmp_path: Path) -> None:
    """serve refuses open writes off loopback, --token-for-reads without tokens, an empty
    token file and a bad size (exit 2), and an unusable TLS pair (exit 6)."""
    tokens = tmp_path / "tokens"
    tokens.write_text("# none yet\n\n")
    base = ["serve", "-o", frames_as_received, "--port", "1"]
    for extra in (
        ["--allow-write", "--host", "0.0.0.0"],
        ["--token-for-reads"],
        ["--allow-write", "--token-file", str(tokens)],
        ["--max-upload", "lots"],
        ["--ssl-certfile", str(tokens)],
    ):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2, extra
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    bad = CliRunner().invoke(
        app, [*base, "--ssl-certfile", str(tokens), "--ssl-keyfile", str(tokens)]
    )
    assert bad.exit_code == EXIT_CANNOT_START and "TLS" in bad.stderr


def test_a_body_that_stops_coming_is_given_up(
    frames_as_received: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that sends its headers and part of its body, then nothing: answered 408 once
    the body has paused for the idle limit (it held the connection for ever), nothing stored."""
    import socket

    from dicomweb_archive.web import stow

    monkeypatch.setattr(stow, "BODY_IDLE_SECONDS", 0.5)
    with stow_serving(frames_as_received) as url:
        host, port = url.split("//")[1].split("/")[0].split(":")
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            sock.sendall(
                b"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: " + MULTIPART.encode() + b"\r\n"
                b"Content-Length: 100000\r\n\r\n--" + BOUNDARY.encode() + b"\r\n"
            )
            answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert sop_count(frames_as_received) == 0


@pytest.mark.shared  # a store in memory holds the instance in this process
def test_a_large_body_streams_with_bounded_memory(frames_as_received: str, tmp_path: Path) -> None:
    """A 20 MB instance sent chunked is spooled and stored without the body, or the instance,
    in memory: the server's allocations (traced in this process) stay under a quarter of it."""
    frames = 40
    ds = make_ct(
        study=uid("8.1"),
        series=uid("8.1.1"),
        sop=uid("8.1.1.1"),
        rows=512,
        columns=512,
        frames=frames,
    )
    path = tmp_path / "large.dcm"
    ds.save_as(path, enforce_file_format=True)
    del ds
    size = path.stat().st_size
    assert size > frames * 512 * 512 * 2

    def chunks() -> Iterator[bytes]:
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with path.open("rb") as file:
            while chunk := file.read(1 << 16):
                yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    with stow_serving(frames_as_received) as url:
        tracemalloc.start()
        try:
            reply = post(f"{url}/studies", chunks())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert reply.status_code == 200, reply.text
    assert sop_count(frames_as_received) == 1
    assert peak < size / 4, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB body"


def test_a_preamble_before_the_first_boundary_is_ignored(frames_as_received: str) -> None:
    """RFC 2046 5.1.1: text before the first delimiter is a preamble, to be ignored; the parts
    after it are stored, whether the body comes at once or a few bytes at a time (the delimiter
    split between chunks)."""
    preamble = f"This is a preamble.\r\n--{BOUNDARY}x is not a delimiter\r\n".encode()
    whole = preamble + body(("application/dicom", CT))
    with stow_serving(frames_as_received) as url:
        reply = post(f"{url}/studies", whole)
        assert reply.status_code == 200, reply.text
        again = post(
            f"{url}/studies/{MR_DS.StudyInstanceUID}",
            (chunk for chunk in _chunks(b"\r\n\r\n" + body(("application/dicom", MR)), 7)),
        )
        assert again.status_code == 200, again.text
        no_boundary = post(f"{url}/studies", b"a preamble and nothing else\r\n")
    assert no_boundary.status_code == 400
    assert sop_count(frames_as_received) == 2


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("application/dicom+xml", 406),
        ("application/dicom+json;q=0, */*", 406),
        ("text/html, application/xhtml+xml", 406),
        ("application/dicom+json", 200),
        ("application/*", 200),
        ("application/dicom+xml, */*;q=0.1", 200),
    ],
)
def test_accept_is_checked_before_anything_is_stored(
    frames_as_received: str, accept: str, status: int
) -> None:
    """The response is application/dicom+json only: an Accept that does not take it is
    answered 406 (PS3.18 8.7.4, 10.5.3) before the body is read, and nothing is stored."""
    with stow_serving(frames_as_received) as url:
        reply = post(f"{url}/studies", body(("application/dicom", CT)), Accept=accept)
    assert reply.status_code == status, reply.text
    assert sop_count(frames_as_received) == (1 if status == 200 else 0)
    if status == 406:
        assert reply.text.startswith("a Store Instances response is application/dicom+json")


def _one_bit() -> bytes:
    """A valid 1-bit instance: its frames are kept as received by a recompressing store."""
    ds = make_ct(study=uid("7.1"), series=uid("7.2"), sop=uid("7.3"), rows=16, columns=16)
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
        delattr(ds, keyword)
    ds.PixelData = bytes(range(32))
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_frames_kept_as_received_are_no_warning(
    store: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Frames a recompressing store keeps as received (here 1-bit) are neither a coercion nor
    a mismatch (PS3.18 I.2.2): the part is a plain success, 200 without Warning Reason; the
    log still says why the frames were kept."""
    Archive.create(store).close()  # recorded default: JPEG-LS lossless
    caplog.set_level(logging.WARNING, logger="dicomweb_archive")
    with stow_serving(store) as url:
        reply = post(f"{url}/studies", body(("application/dicom", _one_bit())))
    assert reply.status_code == 200, reply.text
    (item,) = items(reply, "00081199")
    assert "00081196" not in item
    assert any("kept as received" in r.getMessage() for r in caplog.records)
