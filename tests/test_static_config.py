"""static-config: a real nginx serves the store with the printed configuration, and a DICOMweb
client gets from it what it gets from ``serve``."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from dicomweb_archive import Archive, ingest
from dicomweb_archive.cli.main import app
from dicomweb_archive.errors import UsageError
from dicomweb_archive.ops.ingest_types import PipelineOptions
from dicomweb_archive.ops.render import write_thumbnails
from dicomweb_archive.ops.static_config import StaticOptions, to_nginx_config
from dicomweb_archive.store.keys import StoreKeys
from tests import stores
from tests.factory import write_series
from tests.serving import serving

KEYS = StoreKeys()
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian package nginx; .ci/run installs it)"
)
RETRIEVE_URL = "00081190"
#: a stored frame as dicomweb-client for Python and serve give it: every stored byte
STORED_FRAMES = (("application/octet-stream", "*"),)
runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store on disk, made with -i (instance metadata), in a folder whose name has a space."""
    root = tmp_path_factory.mktemp("static")
    files = write_series(root / "in" / "ct", count=3, patient_id="PAT-1", patient_name="DOE^JANE")
    for name in ("MR_small_jp2klossless.dcm", "CT_small.dcm"):
        source = get_testdata_file(name, download=False)
        assert isinstance(source, str)
        files.append(Path(shutil.copy(source, root / "in" / name)))
    location = root / "my store"
    with Archive.open_or_create(location, inline_public=1024, inline_private=64) as archive:
        report = ingest(archive, files, options=PipelineOptions(instances=True))
        assert write_thumbnails(archive, report.studies) == 11  # 3 studies: 5 + 3 + 3
    assert report.ok
    return location


@contextlib.contextmanager
def nginx(store: Path, directory: Path, *cors: str) -> Iterator[str]:
    """nginx on a free loopback port with static-config's output; yields the DICOMweb root."""
    assert NGINX is not None
    port = _free_port()
    directory.mkdir()
    arguments = ["static-config", "-o", str(store), "--port", str(port)]
    for origin in cors:
        arguments += ["--cors-origin", origin]
    printed = runner.invoke(app, arguments)
    assert printed.exit_code == 0, printed.output
    config = directory / "nginx.conf"
    config.write_text(printed.stdout, encoding="utf-8")
    # as root, nginx's workers would run as nobody, who cannot read pytest's folders
    settings = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    process = subprocess.Popen(
        [NGINX, "-c", str(config), "-p", str(directory), "-g", settings],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(200):
            assert process.poll() is None, process.communicate()[1].decode()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.025)
        yield f"http://127.0.0.1:{port}/dicomweb"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture(scope="module")
def static_url(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nginx serving the module's store (no CORS origin)."""
    with nginx(store, tmp_path_factory.mktemp("nginx") / "run") as url:
        yield url


@pytest.fixture(scope="module")
def serve_url(store: Path) -> Iterator[str]:
    with serving(str(store)) as url:
        yield url


def _uid(item: dict[str, Any], tag: str) -> str:
    value: str = item[tag]["Value"][0]
    return value


def _without_retrieve_url(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != RETRIEVE_URL} for item in items]


def _bulk_uris(node: Any, found: list[str]) -> list[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "BulkDataURI":
                found.append(value)
            else:
                _bulk_uris(value, found)
    elif isinstance(node, list):
        for item in node:
            _bulk_uris(item, found)
    return found


def _resolved(node: Any, series_url: str) -> Any:
    """BulkDataURIs resolved against the series URL (they are relative to it in the store)."""
    if isinstance(node, dict):
        return {
            key: urljoin(series_url + "/", value)
            if key == "BulkDataURI"
            else _resolved(value, series_url)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_resolved(item, series_url) for item in node]
    return node


def _body_part(message: bytes) -> bytes:
    """The content of a one-part multipart body, its boundary taken from its first line (as
    dicomweb-client for JavaScript, which OHIF uses, reads a static frame file)."""
    first, _, rest = message.partition(b"\r\n")
    assert first.startswith(b"--")
    _, _, content = rest.partition(b"\r\n\r\n")
    closing = b"\r\n" + first + b"--"
    assert content.endswith(closing)
    return content[: -len(closing)]


@pytest.mark.local
@needs_nginx
def test_nginx_answers_as_serve(static_url: str, serve_url: str) -> None:
    """Searches without filters, series and instance metadata, frames and bulk data from nginx
    are serve's answers (less RetrieveURL; BulkDataURIs relative to the series)."""
    static, ours = DICOMwebClient(static_url), DICOMwebClient(serve_url)
    studies = static.search_for_studies()
    by_uid = sorted(ours.search_for_studies(), key=lambda s: _uid(s, "0020000D"))
    assert len(studies) == 3 and studies == _without_retrieve_url(by_uid)
    bulk_values = frames = 0
    for study in (_uid(s, "0020000D") for s in studies):
        series_list = static.search_for_series(study)
        assert series_list == _without_retrieve_url(ours.search_for_series(study))
        for series in (_uid(s, "0020000E") for s in series_list):
            instances = static.search_for_instances(study, series)
            assert instances == _without_retrieve_url(ours.search_for_instances(study, series))
            series_url = f"{static_url}/studies/{study}/series/{series}"
            metadata = ours.retrieve_series_metadata(study, series)
            resolved = _resolved(static.retrieve_series_metadata(study, series), series_url)
            assert json.dumps(resolved).replace(static_url, serve_url) == json.dumps(metadata)
            for sop in (_uid(i, "00080018") for i in instances):
                one = static.retrieve_instance_metadata(study, series, sop)
                assert json.dumps(_resolved(one, series_url)).replace(
                    static_url, serve_url
                ) == json.dumps(ours.retrieve_instance_metadata(study, series, sop))
                (part,) = static.retrieve_instance_frames(study, series, sop, [1])
                (frame,) = ours.retrieve_instance_frames(
                    study, series, sop, [1], media_types=STORED_FRAMES
                )
                assert _body_part(part) == frame
                frames += 1
            for uri in _bulk_uris(resolved, []):
                if not uri.endswith("/frames"):
                    served = ours.retrieve_bulkdata(uri.replace(static_url, serve_url))
                    assert static.retrieve_bulkdata(uri) == served
                    bulk_values += 1
    assert frames == 5 and bulk_values > 0


@pytest.mark.local
@needs_nginx
def test_nginx_content_types_and_gzip(static_url: str) -> None:
    """JSON is application/dicom+json, gzipped for a client that accepts it and plain for one
    that does not; frames and bulk data are multipart/related; no CORS header by default."""
    studies_url = static_url + "/studies"
    zipped = requests.get(studies_url, headers={"Accept-Encoding": "gzip"}, stream=True)
    assert zipped.status_code == 200
    assert zipped.headers["Content-Type"] == "application/dicom+json"
    assert zipped.headers["Content-Encoding"] == "gzip"
    studies = json.loads(gzip.decompress(zipped.raw.read()))
    plain = requests.get(studies_url, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and plain.json() == studies
    study = _uid(studies[0], "0020000D")
    (one,) = requests.get(studies_url, params={"StudyInstanceUID": study}).json()
    assert one == studies[0]
    series = _uid(requests.get(f"{studies_url}/{study}/series").json()[0], "0020000E")
    singleton = requests.get(f"{studies_url}/{study}/series", params={"0020000E": series})
    assert _uid(singleton.json()[0], "0020000E") == series
    series_url = f"{studies_url}/{study}/series/{series}"
    assert (
        requests.get(series_url + "/metadata").headers["Content-Type"] == "application/dicom+json"
    )
    sop = _uid(requests.get(series_url + "/instances").json()[0], "00080018")
    frame = requests.get(f"{series_url}/instances/{sop}/frames/1", headers={"Origin": "http://x"})
    assert frame.headers["Content-Type"] == "multipart/related"
    assert "Content-Encoding" not in frame.headers
    assert not any(name.lower().startswith("access-control") for name in frame.headers)


@pytest.mark.local
@needs_nginx
def test_nginx_serves_thumbnails(static_url: str, serve_url: str) -> None:
    """The thumbnails --thumbnails wrote are served as image/jpeg at the study, series and
    instance thumbnail URLs, the bytes serve gives."""
    study = _uid(requests.get(static_url + "/studies").json()[0], "0020000D")
    series = _uid(requests.get(f"{static_url}/studies/{study}/series").json()[0], "0020000E")
    series_path = f"/studies/{study}/series/{series}"
    sop = _uid(requests.get(f"{static_url}{series_path}/instances").json()[0], "00080018")
    for path in (f"/studies/{study}", series_path, f"{series_path}/instances/{sop}"):
        static = requests.get(f"{static_url}{path}/thumbnail")
        assert static.status_code == 200, path
        assert static.headers["Content-Type"] == "image/jpeg"
        assert static.content == requests.get(f"{serve_url}{path}/thumbnail").content
    assert (
        requests.get(f"{static_url}{series_path}/instances/{sop}/frames/1/thumbnail").status_code
        == 404
    )


@pytest.mark.local
@needs_nginx
def test_nginx_refuses_what_needs_serve_and_private_files(static_url: str, store: Path) -> None:
    """Filtered or paged searches are 400; other DICOMweb URLs, the private folder, info
    records and the store's files by their own names are 404, dot segments or not."""
    studies = requests.get(static_url + "/studies").json()
    study = _uid(studies[0], "0020000D")
    series = _uid(requests.get(f"{static_url}/studies/{study}/series").json()[0], "0020000E")
    instances = f"{static_url}/studies/{study}/series/{series}/instances"
    sop = _uid(requests.get(instances).json()[0], "00080018")
    for url, params in [
        (static_url + "/studies", {"PatientID": "PAT-1"}),
        (static_url + "/studies", {"limit": "1"}),
        (f"{static_url}/studies/{study}/series", {"Modality": "CT"}),
        (instances, {"SOPInstanceUID": sop}),
    ]:
        refused = requests.get(url, params=params)
        assert refused.status_code == 400 and "dicomweb-archive serve" in refused.text
    assert requests.get(static_url + "/studies", params={"includefield": "all"}).json() == studies
    host = static_url.split("/")[2]
    for path in [
        "/dicomweb/series",
        f"/dicomweb/studies/{study}",
        f"/dicomweb/studies/{study}/metadata",
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1,1",
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/info.json.gz",
        f"/studies/{study}/series/{series}/instances/{sop}/info.json.gz",
        "/studies/index.json.gz",
        "/.dicomweb-archive/config.json",
        "/.dicomweb-archive/local/index.sqlite",
        "/dicomweb/../.dicomweb-archive/config.json",
        "/dicomweb/studies/%2e%2e/%2e%2e/.dicomweb-archive/config.json",
        f"/dicomweb/studies/{study}/series/../../../.dicomweb-archive/generation",
        f"/notifications/study/{study}",
    ]:
        connection = http.client.HTTPConnection(host, timeout=10)
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        assert response.status == 404, path
        assert b"dicomweb-archive store" not in body and b"SQLite" not in body
    assert (store / ".dicomweb-archive" / "config.json").exists()


@pytest.mark.local
@needs_nginx
def test_nginx_follows_no_symlink(static_url: str, store: Path, tmp_path: Path) -> None:
    """A link in the store, to a file or a folder outside it, is never followed."""
    outside = tmp_path / "outside"
    (outside / "series").mkdir(parents=True)
    secret = b"not part of the store"
    (outside / "series" / "index.json.gz").write_bytes(gzip.compress(secret))
    (outside / "value").write_bytes(secret)
    study = _uid(requests.get(static_url + "/studies").json()[0], "0020000D")
    linked_study = store / "studies" / "1.2.3.999"
    linked_value = store / KEYS.bulkdata(study, "a" * 64)
    linked_value.parent.mkdir(parents=True)
    linked_study.symlink_to(outside, target_is_directory=True)
    linked_value.symlink_to(outside / "value")
    try:
        for url in [
            static_url + "/studies/1.2.3.999/series",
            f"{static_url}/studies/{study}/bulkdata/aaa/aa/{'a' * 59}",
        ]:
            response = requests.get(url, headers={"Accept-Encoding": "identity"})
            assert response.status_code in {403, 404} and secret not in response.content
    finally:
        linked_study.unlink()
        linked_value.unlink()
        shutil.rmtree(store / KEYS.bulkdata_dir(study) / "aaa")


@pytest.mark.local
@needs_nginx
def test_nginx_cors_origins(store: Path, tmp_path: Path) -> None:
    """--cors-origin: only the named origins get CORS headers, and a preflight is answered;
    * lets any origin read."""
    viewer = "https://viewer.example:8443"
    with nginx(store, tmp_path / "named", viewer, "http://other.example") as url:
        allowed = requests.get(url + "/studies", headers={"Origin": viewer})
        assert allowed.headers["Access-Control-Allow-Origin"] == viewer
        assert "ETag" in allowed.headers["Access-Control-Expose-Headers"]
        stranger = requests.get(url + "/studies", headers={"Origin": "https://evil.example"})
        assert stranger.status_code == 200
        assert "Access-Control-Allow-Origin" not in stranger.headers
        preflight = requests.options(
            url + "/studies",
            headers={
                "Origin": viewer,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "accept",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Headers"] == "accept"
        assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
    with nginx(store, tmp_path / "any", "*") as url:
        anyone = requests.get(url + "/studies", headers={"Origin": "https://evil.example"})
        assert anyone.headers["Access-Control-Allow-Origin"] == "*"


def test_static_config_refuses_a_store_in_memory(tmp_path: Path) -> None:
    """A memory store has no directory to serve: one line, exit code 2."""
    location = f"memory://static-{tmp_path.name}"
    with Archive.open_or_create(location) as archive:
        assert archive.location == location
    try:
        result = runner.invoke(app, ["static-config", "-o", location])
    finally:
        stores.forget(location)
    assert result.exit_code == 2 and result.stdout == ""
    assert (
        result.stderr
        == f"error: {location} is not a directory: a static server serves a store on disk\n"
    )


def test_static_config_refuses_unsafe_values(tmp_path: Path) -> None:
    """Values that would change the configuration's meaning are refused, naming the option."""
    root = tmp_path / "store"
    for options, named in [
        (StaticOptions(port=80, prefix="/dicom web"), "--prefix"),
        (StaticOptions(port=80, prefix="/a;b"), "--prefix"),
        (StaticOptions(port=80, cors_origins=('https://x" always; #',)), "--cors-origin"),
        (StaticOptions(port=80, host="0.0.0.0; include /etc"), "--host"),
        (StaticOptions(port=80, cors_origins=("https://[::1]:8443", "ftp://a b")), "ftp://a b"),
        (StaticOptions(port=0), "--port"),
    ]:
        with pytest.raises(UsageError, match=named):
            to_nginx_config(root, KEYS, options)
    for bad in ("/srv/$store", '/srv/a"b', "/srv/a;b", "relative/store"):
        with pytest.raises(UsageError, match="nginx cannot be given this directory"):
            to_nginx_config(Path(bad), KEYS, StaticOptions(port=80))


def test_static_config_layout_and_options(tmp_path: Path) -> None:
    """The configuration maps DICOMweb URLs to the layout's files, under --prefix, listening
    where asked, with pid and logs in nginx's prefix folder and no CORS unless asked."""
    text = to_nginx_config(
        tmp_path, StoreKeys(), StaticOptions(port=5000, host="::1", prefix="/web/dicom")
    )
    assert "listen [::1]:5000;" in text and f'root "{tmp_path}";' in text
    assert "pid nginx.pid;" in text and "error_log error.log" in text
    assert "daemon" not in text.replace("'daemon off;'", "")
    assert "disable_symlinks on" in text and "Access-Control" not in text
    assert "location = /web/dicom/studies {" in text
    assert "/studies/$dwa_study/series/$dwa_series/metadata? break;" in text
    assert "/frames/$dwa_frame.mht? break;" in text
    cors = to_nginx_config(tmp_path, StoreKeys(), StaticOptions(port=1, cors_origins=("*",)))
    assert "add_header Access-Control-Allow-Origin $dwa_cors_origin always;" in cors


@needs_nginx
def test_static_config_is_valid_nginx(tmp_path: Path) -> None:
    """nginx -t accepts the configuration, with and without CORS origins."""
    assert NGINX is not None
    for number, origins in enumerate([(), ("*",), ("https://a.example", "http://b:81")]):
        run = tmp_path / str(number)
        run.mkdir()
        config = run / "nginx.conf"
        config.write_text(
            to_nginx_config(tmp_path, StoreKeys(), StaticOptions(port=8080, cors_origins=origins)),
            encoding="utf-8",
        )
        checked = subprocess.run(
            [NGINX, "-t", "-q", "-c", str(config), "-p", str(run), "-g", "daemon off;"],
            capture_output=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr.decode()
