"""serve: a real DICOMweb client against the server; static serving; safety and errors."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

from dicomweb_archive import Archive, ingest
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.model.syntax import NATIVE_PIXEL_DATA
from dicomweb_archive.ops.retrieve import LOSSY_SYNTAXES, NOT_FOR_THE_WEB
from dicomweb_archive.store.instance import InstanceKey, read_info
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.multipart import parse_part
from tests import stores
from tests.conftest import corpus_files, corpus_id
from tests.factory import refuse_overlay_frames, uid, write_odd_bits, write_series
from tests.parts_helpers import assert_same_instance
from tests.serving import Http, Reply, free_port, serving
from tests.stores import ingested
from tests.test_corpus import NOT_INGESTED

KEYS = StoreKeys()


def _testdata(name: str) -> str:
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The served store of this module (on the chosen storage), made once."""
    root = tmp_path_factory.mktemp("serve")
    files = write_series(root / "in" / "ct", count=3, patient_id="PAT-1", patient_name="DOE^JANE")
    for name in ("MR_small_jp2klossless.dcm", "CT_small.dcm"):
        source = get_testdata_file(name, download=False)
        assert isinstance(source, str)
        files.append(Path(shutil.copy(source, root / "in" / name)))
    location = stores.location(root, "store")
    with Archive.open_or_create(location, inline_public=1024, inline_private=64) as archive:
        report = ingest(archive, files)
    assert report.ok
    yield location
    stores.forget(location)


@pytest.fixture(scope="module")
def base_url(store: str) -> Iterator[str]:
    with serving(store) as url:
        yield url


def _ct_study(client: DICOMwebClient) -> dict[str, Any]:
    (study,) = client.search_for_studies(search_filters={"PatientID": "PAT-1"})
    result: dict[str, Any] = study
    return result


def test_qido_searches(base_url: str) -> None:
    """Studies, series and instances, with filters, wildcards, ranges and paging."""
    client = DICOMwebClient(base_url)
    studies = client.search_for_studies()
    assert len(studies) == 3
    assert [
        s["00100010"]["Value"][0]["Alphabetic"]
        for s in client.search_for_studies(search_filters={"PatientName": "doe*"})
    ] == ["DOE^JANE"]
    dated = client.search_for_studies(search_filters={"StudyDate": "20240101-20241231"})
    assert len(dated) == 1 and dated[0]["00201208"]["Value"] == [3]
    assert dated[0]["00081190"]["Value"][0].startswith(base_url + "/studies/")
    paged = client.search_for_studies(limit=1, get_remaining=True)
    assert len(paged) == 3
    study = dated[0]["0020000D"]["Value"][0]
    series = client.search_for_series(study)
    assert len(series) == 1 and series[0]["00201209"]["Value"] == [3]
    all_series = client.search_for_series(search_filters={"Modality": "CT"})
    assert len(all_series) == 2
    series_uid = series[0]["0020000E"]["Value"][0]
    instances = client.search_for_instances(
        study, series_uid, search_filters={"InstanceNumber": "2"}
    )
    assert len(instances) == 1 and instances[0]["00200013"]["Value"] == [2]
    assert len(client.search_for_instances()) == 5


def test_wado_metadata(base_url: str) -> None:
    """Study, series and instance metadata, with absolute BulkDataURIs."""
    client = DICOMwebClient(base_url)
    study = _ct_study(client)["0020000D"]["Value"][0]
    metadata = client.retrieve_study_metadata(study)
    assert len(metadata) == 3
    series = metadata[0]["0020000E"]["Value"][0]
    assert len(client.retrieve_series_metadata(study, series)) == 3
    sop = metadata[0]["00080018"]["Value"][0]
    instance = client.retrieve_instance_metadata(study, series, sop)
    assert instance["00080018"]["Value"] == [sop]
    assert instance["7FE00010"]["BulkDataURI"].startswith(base_url)


def test_frames_compressed_and_uncompressed(base_url: str, store: str) -> None:
    """Frames as stored (JPEG-LS after the default recompression of native and JPEG 2000
    files); decoded for octet-stream; 406 for a compressed syntax they are not in."""
    client = DICOMwebClient(base_url)
    study = _ct_study(client)["0020000D"]["Value"][0]
    (first,) = client.search_for_instances(study, search_filters={"InstanceNumber": "1"})
    series, sop = first["0020000E"]["Value"][0], first["00080018"]["Value"][0]
    (frame,) = client.retrieve_instance_frames(study, series, sop, [1])
    frame_key = KEYS.frame(study, series, sop, 1)
    assert frame == bytes(parse_part(stores.read(store, frame_key), source=frame_key)[1])
    mr = pydicom.dcmread(_testdata("MR_small_jp2klossless.dcm"))
    ids = (str(mr.StudyInstanceUID), str(mr.SeriesInstanceUID), str(mr.SOPInstanceUID))
    # dicomweb-client's default asks for octet-stream with transfer-syntax=*: stored bytes
    (stored,) = client.retrieve_instance_frames(*ids, [1])
    assert stored.startswith(b"\xff\xd8\xff\xf7")  # JPEG-LS: SOI, SOF55, no SPIFF header
    (native,) = client.retrieve_instance_frames(
        *ids, [1], media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),)
    )
    pixels = np.frombuffer(native, dtype="<i2").reshape(64, 64)
    np.testing.assert_array_equal(pixels, pydicom.dcmread(_testdata("MR_small.dcm")).pixel_array)
    (jls,) = client.retrieve_instance_frames(
        *ids, [1], media_types=(("image/jls", "1.2.840.10008.1.2.4.80"),)
    )
    assert jls == stored
    path = "/".join(("", *base_url.split("//")[1].split("/")[1:], "studies", ids[0], "series"))
    url = f"{path}/{ids[1]}/instances/{ids[2]}/frames/1"
    refused = Http(base_url).get(url, {"Accept": 'multipart/related; type="image/jp2"'})
    assert refused.status_code == 406


def test_frames_of_a_mixed_instance(
    tmp_path: Path, new_store: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames stored in different syntaxes (one kept as received): asked one at a time they
    come as stored; asked together, decoded to native."""
    refuse_overlay_frames(monkeypatch)
    path = write_odd_bits(tmp_path / "odd.dcm", study=uid(61), series=uid(62), sop=uid(63))
    mixed = new_store("mixed")
    assert ingested(mixed, [path]).ok
    with serving(mixed) as url:
        _mixed_frames(DICOMwebClient(url))


def _mixed_frames(client: DICOMwebClient) -> None:
    ids = (uid(61), uid(62), uid(63))
    (first,) = client.retrieve_instance_frames(*ids, [1])
    assert first.startswith(b"\xff\xd8\xff\xf7")
    (second,) = client.retrieve_instance_frames(*ids, [2])
    both = client.retrieve_instance_frames(*ids, [1, 2])
    values = np.arange(-512, 512, dtype=np.int16).reshape(32, 32)
    assert both[0] == values.tobytes()
    assert both[1] == second and len(second) == values.nbytes


def test_retrieve_instance_and_bulkdata(base_url: str) -> None:
    """A whole instance is the ingested P10 file; bulk data is the stored value."""
    client = DICOMwebClient(base_url)
    source = Path(_testdata("CT_small.dcm"))
    ds = pydicom.dcmread(source)
    ids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    retrieved = client.retrieve_instance(*ids)
    buffer = io.BytesIO()
    retrieved.save_as(buffer, enforce_file_format=True)
    assert retrieved == pydicom.dcmread(source)
    meta = client.retrieve_instance_metadata(*ids)
    bulk = {k: v["BulkDataURI"] for k, v in meta.items() if "BulkDataURI" in v and k != "7FE00010"}
    assert bulk
    for key, uri in bulk.items():
        (data,) = client.retrieve_bulkdata(uri)
        assert data == ds[int(key, 16)].value  # the value as in the original file


def test_retrieve_recompressed_compressed_instance(base_url: str) -> None:
    """A JPEG 2000 original stored as JPEG-LS comes back as a valid file in JPEG-LS, with the
    original's pixels and attributes (its codestreams are not kept)."""
    client = DICOMwebClient(base_url)
    source = Path(_testdata("MR_small_jp2klossless.dcm"))
    ds = pydicom.dcmread(source)
    ids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    retrieved = client.retrieve_instance(*ids)
    assert retrieved.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
    buffer = io.BytesIO()
    retrieved.save_as(buffer, enforce_file_format=True)
    assert_same_instance(buffer.getvalue(), source.read_bytes())


def test_prefix_and_base_url(store: str) -> None:
    """create_app's prefix is the DICOMweb root's path; its base_url is the public URL that
    RetrieveURL and BulkDataURI name (instead of the request's)."""
    public = "https://pacs.example/archive/dicomweb"
    with serving(store, prefix="/archive/dicomweb", base_url=public + "/") as url:
        raw = Http(url)
        assert raw.get("/dicomweb/studies").status_code == 404
        (study,) = raw.get("/archive/dicomweb/studies?PatientID=PAT-1").json()
        study_uid = study["0020000D"]["Value"][0]
        assert study["00081190"]["Value"] == [f"{public}/studies/{study_uid}"]
        metadata = raw.get(f"/archive/dicomweb/studies/{study_uid}/metadata").json()
        series_uid = metadata[0]["0020000E"]["Value"][0]
        sop_uid = metadata[0]["00080018"]["Value"][0]
        assert metadata[0]["7FE00010"]["BulkDataURI"] == (
            f"{public}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames"
        )


@pytest.mark.local
def test_serve_command(store: str) -> None:
    """`dicomweb-archive serve` in its own process opens the store and serves it, with an
    access log on stderr that leaves out query strings, and no CORS unless asked for."""
    import subprocess
    import sys

    port = free_port()
    command = [sys.executable, "-m", "dicomweb_archive.cli.main", "serve", "-o", store]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--prefix", "/web"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        raw = Http(f"http://127.0.0.1:{port}/web")
        studies: Reply | None = None
        for _ in range(200):
            try:
                studies = raw.get("/web/studies?PatientName=DOE*", {"Origin": "http://x.example"})
                break
            except OSError:
                time.sleep(0.05)
        assert studies is not None and studies.status_code == 200
        assert len(studies.json()) == 1
        assert "access-control-allow-origin" not in studies.headers
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    lines = err.decode().splitlines()
    assert f"serving {store} at http://127.0.0.1:{port}/web" in lines[0]
    assert f" 127.0.0.1 GET /web/studies 200 {len(studies.content)} " in lines[1]
    assert "DOE" not in err.decode() and "PatientName" not in err.decode()


@pytest.fixture
def raw(base_url: str) -> Http:
    return Http(base_url)


@pytest.mark.parametrize(
    "path",
    [
        "/dicomweb/studies/../../etc/passwd",
        "/dicomweb/studies/%2e%2e/metadata",
        "/dicomweb/studies/..%2F..%2Fetc/metadata",
        "/dicomweb/studies//etc/passwd/metadata",
        "/dicomweb/studies/1.2/bulkdata/../../../etc/passwd",
    ],
)
def test_no_path_escapes(raw: Http, path: str) -> None:
    """Traversal attempts are 404, never a file outside the store."""
    response = raw.get(path)
    assert response.status_code in (404, 400)
    assert b"root:" not in response.content


@pytest.mark.local
def test_symlink_out_of_store_is_not_served(store: str, raw: Http) -> None:
    """A symlink inside the store that points outside is not followed."""
    study = next(p for p in (Path(store) / "studies").iterdir() if p.is_dir())
    series = next(p for p in (study / "series").iterdir() if p.is_dir())
    metadata = series / "metadata.gz"
    saved = metadata.read_bytes()
    metadata.unlink()
    metadata.symlink_to("/etc/hostname")
    try:
        response = raw.get(f"/dicomweb/studies/{study.name}/series/{series.name}/metadata")
        assert response.status_code == 404
    finally:
        metadata.unlink()
        metadata.write_bytes(saved)


def test_status_codes_and_headers(raw: Http, store: str) -> None:
    """400 for bad parameters, 404 for unknown UIDs, 406 for unsatisfiable Accept; ETag, CORS."""
    assert raw.get("/dicomweb/studies?limit=abc").status_code == 400
    assert raw.get("/dicomweb/studies?Colour=blue").status_code == 400
    assert raw.get(f"/dicomweb/studies/{uid(999)}/metadata").status_code == 404
    study = raw.get("/dicomweb/studies?PatientID=PAT-1").json()[0]["0020000D"]["Value"][0]
    meta = raw.get(f"/dicomweb/studies/{study}/metadata")
    assert meta.status_code == 200
    assert (
        raw.get(
            f"/dicomweb/studies/{study}/metadata", headers={"If-None-Match": meta.headers["etag"]}
        ).status_code
        == 304
    )
    first = meta.json()[0]
    frames = (
        f"/dicomweb/studies/{study}/series/{first['0020000E']['Value'][0]}/instances/"
        f"{first['00080018']['Value'][0]}/frames"
    )
    assert raw.get(frames + "/9").status_code == 404
    assert raw.get(frames + "/x").status_code == 400
    assert (
        raw.get(
            frames + "/1", headers={"Accept": 'multipart/related; type="image/png"'}
        ).status_code
        == 406
    )
    cors = raw.get("/dicomweb/studies", headers={"Origin": "http://viewer.example"})
    assert "access-control-allow-origin" not in cors.headers  # no CORS unless asked for
    gz = raw.get(f"/dicomweb/studies/{study}/metadata", headers={"Accept-Encoding": "gzip"})
    assert gz.headers.get("content-encoding") == "gzip"
    assert json.loads(gzip.decompress(gz.content)) == meta.json()


@pytest.mark.local
def test_plain_static_server(store: str) -> None:
    """Python's http.server serves the layout's files; DICOMweb URLs need rewrites or serve."""
    import gzip as gz
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=store,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/studies/index.json.gz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        with urllib.request.urlopen(url + "/studies/index.json.gz") as response:
            studies = json.loads(gz.decompress(response.read()))
        assert len(studies) == 3
        study = studies[0]["0020000D"]["Value"][0]
        series_list = f"{url}/studies/{study}/series/index.json.gz"
        with urllib.request.urlopen(series_list) as response:
            series = json.loads(gz.decompress(response.read()))[0]["0020000E"]["Value"][0]
        metadata = f"{url}/studies/{study}/series/{series}/metadata.gz"
        with urllib.request.urlopen(metadata) as response:
            assert json.loads(gz.decompress(response.read()))[0]["0020000D"]["Value"] == [study]
        with pytest.raises(urllib.error.HTTPError):  # a DICOMweb URL: needs rewrites or serve
            urllib.request.urlopen(f"{url}/studies/{study}/series/{series}/metadata")
    finally:
        process.terminate()
        process.wait(timeout=10)


CORPUS_SERVED = [p for p in corpus_files() if corpus_id(p) not in NOT_INGESTED]
ELE = "1.2.840.10008.1.2.1"
JPEG_LS = "1.2.840.10008.1.2.4.80"


@pytest.mark.slow
@pytest.mark.parametrize("path", CORPUS_SERVED, ids=corpus_id)
def test_dicomweb_client_whole_api_on_the_corpus(
    path: Path, tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Every pydicom test file the store takes, through dicomweb-client's search, metadata,
    retrieve (as stored and in Explicit VR Little Endian), frames and bulk data calls, each
    answer checked against the file."""
    location = new_store("corpus")
    assert ingested(location, [Path(shutil.copy(path, tmp_path / path.name))]).ok
    original = pydicom.dcmread(path, force=True)
    ids = (str(original.StudyInstanceUID), str(original.SeriesInstanceUID))
    sop = str(original.SOPInstanceUID)
    with serving(location) as url:
        client = DICOMwebClient(url)
        _search(client, original, ids, sop)
        metadata = _metadata(client, ids, sop)
        with Archive.open(location) as archive:
            info = read_info(archive.storage, archive.keys, InstanceKey(*ids, sop))
        if incomplete_frame(info.skeleton) is not None:
            _incomplete(client, path, ids, sop, metadata)
            return
        _retrieve(client, path, original, ids, sop, rebuilds=info.rebuilds_original())
        _bulk(client, original, metadata, frames=len(info.frames), name=path.name)


def _search(client: DICOMwebClient, original: Any, ids: tuple[str, str], sop: str) -> None:
    (study,) = client.search_for_studies(search_filters={"StudyInstanceUID": ids[0]})
    assert study["00201208"]["Value"] == [1]
    (series,) = client.search_for_series(ids[0], fields=["all"])
    assert series["0020000E"]["Value"] == [ids[1]]
    (instance,) = client.search_for_instances(*ids, fields=["all"])
    assert instance["00080018"]["Value"] == [sop]
    name = original.get("PatientName")
    words = str(name or "").replace("^", " ").split()
    if words and all(w.isalnum() for w in words):
        fuzzy = client.search_for_studies(
            search_filters={"PatientName": words[-1].lower()[:3]}, fuzzymatching=True
        )
        assert ids[0] in [s["0020000D"]["Value"][0] for s in fuzzy]


def _metadata(client: DICOMwebClient, ids: tuple[str, str], sop: str) -> dict[str, Any]:
    (from_study,) = client.retrieve_study_metadata(ids[0])
    (from_series,) = client.retrieve_series_metadata(*ids)
    instance: dict[str, Any] = client.retrieve_instance_metadata(*ids, sop)
    assert from_study == from_series == instance
    assert instance["00080018"]["Value"] == [sop]
    return instance


def _retrieve(
    client: DICOMwebClient,
    path: Path,
    original: Any,
    ids: tuple[str, str],
    sop: str,
    *,
    rebuilds: bool,
) -> None:
    as_stored = client.retrieve_instance(*ids, sop, media_types=(("application/dicom", "*"),))
    syntax = str(original.file_meta.get("TransferSyntaxUID", ""))
    if not rebuilds:  # JPEG 2000 recompressed at ingest: pixels and attributes as received
        buffer = io.BytesIO()
        as_stored.save_as(buffer, enforce_file_format=True)
        assert_same_instance(buffer.getvalue(), path.read_bytes())
    elif syntax in NOT_FOR_THE_WEB:  # sent in Explicit VR Little Endian: the same values
        _same_values(as_stored, original, pixels=path.name not in NOT_DECODED)
    else:  # as received (with File Meta Information where it had none)
        assert as_stored == original
    (in_study,) = client.retrieve_study(ids[0], media_types=(("application/dicom", "*"),))
    (in_series,) = client.retrieve_series(*ids, media_types=(("application/dicom", "*"),))
    assert in_study == in_series == as_stored
    if path.name in NOT_TRANSCODED:
        return
    native = client.retrieve_instance(*ids, sop, media_types=(("application/dicom", ELE),))
    assert native.file_meta.TransferSyntaxUID == ELE
    lossy = syntax in LOSSY_SYNTAXES or original.get("LossyImageCompression") == "01"
    pixels = path.name not in NOT_DECODED
    _same_values(native, as_stored, pixels=pixels, tolerance=LOSSY_TOLERANCE if lossy else 0)


def _incomplete(
    client: DICOMwebClient, path: Path, ids: tuple[str, str], sop: str, metadata: dict[str, Any]
) -> None:
    """A file that ends inside Pixel Data: as received, never transcoded, Pixel Data gone."""
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    reply = Http(client.base_url).get(
        "/dicomweb/" + "/".join(("studies", ids[0], "series", ids[1], "instances", sop)),
        {"Accept": accept},
    )
    assert reply.status_code == 200 and path.read_bytes() in reply.content
    with pytest.raises(requests.HTTPError, match="406"):
        client.retrieve_instance(*ids, sop, media_types=(("application/dicom", JPEG_LS),))
    if "BulkDataURI" in metadata["7FE00010"]:  # else the received bytes are inline
        with pytest.raises(requests.HTTPError, match="410"):
            client.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"])


def _same_values(ours: Any, theirs: Any, *, pixels: bool, tolerance: int = 0) -> None:
    """The same attributes and values, apart from group lengths and the encoding of Pixel
    Data (and what re-encoding it changes); with ``pixels``, the same pixels (within
    ``tolerance``: lossy codestreams decode a little differently from decoder to decoder)."""
    skip = {0x7FE00010, 0x7FE00001, 0x7FE00002, 0x00280006, 0x00280004}

    def values(ds: Any) -> list[tuple[Any, Any]]:
        return [(e.tag, e.value) for e in ds if e.tag.element and e.tag not in skip]

    assert values(ours) == values(theirs)
    if pixels and "PixelData" in theirs:
        difference = ours.pixel_array.astype(np.int64) - theirs.pixel_array.astype(np.int64)
        assert int(np.abs(difference).max()) <= tolerance


#: Corpus files whose pixels pydicom cannot decode (the server still sends them)
NOT_DECODED = {
    "JPEG-lossy.dcm": "12-bit JPEG Extended: no pydicom plugin here decodes it",
    "badVR.dcm": "NumberOfFrames is '1A'",
}
#: Largest pixel difference between JPEG decoders (imagecodecs here, pydicom's plugins there),
#: which round the inverse DCT and the YCbCr to RGB conversion differently
LOSSY_TOLERANCE = 3
#: Corpus files that cannot be transcoded (406 when asked for another transfer syntax)
NOT_TRANSCODED = {
    "JPEG2000-embedded-sequence-delimiter.dcm": "OpenJPEG cannot read its codestream header",
}
#: Corpus files whose Pixel Data value is longer than its frames: the bulk data is the frames
PADDED_PIXEL_DATA = {
    "MR_small_padded.dcm": "bytes after the frame in the Pixel Data value",
    "badVR.dcm": "NumberOfFrames '1A' is read as 1: one frame is stored, the value holds more",
}


def _little_endian(original: Any) -> bytes:
    """The Pixel Data value of ``original`` in little endian byte order."""
    value: bytes = original.PixelData
    if original.file_meta.get("TransferSyntaxUID") != "1.2.840.10008.1.2.2":
        return value
    width = int(original.BitsAllocated) // 8
    if width <= 1:  # bytes: swapped in 16-bit words when the VR is OW
        width = 2 if original["PixelData"].VR == "OW" else 1
    if width == 1:
        return value
    swapped = np.frombuffer(value[: len(value) // width * width], f">u{width}").astype(f"<u{width}")
    return swapped.tobytes() + value[len(value) // width * width :]


def _bulk(
    client: DICOMwebClient, original: Any, metadata: dict[str, Any], *, frames: int, name: str
) -> None:
    for key, value in metadata.items():
        uri = value.get("BulkDataURI") if isinstance(value, dict) else None
        if uri is None:
            continue
        parts = client.retrieve_bulkdata(uri)
        if key != "7FE00010":
            assert parts == [original[int(key, 16)].value]
        elif original.file_meta.get("TransferSyntaxUID", ELE) in NATIVE_PIXEL_DATA:
            assert len(parts) == 1  # the value: one part, little endian (PS3.18 8.7.3.3.2)
            if name not in PADDED_PIXEL_DATA:
                assert parts[0] == _little_endian(original)
        else:
            assert len(parts) == frames  # encapsulated: its frames
    if frames:
        study, series, sop = (metadata[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
        assert len(client.retrieve_instance_frames(study, series, sop, [1])) == 1


def test_serve_exclusions_name_real_files() -> None:
    """The corpus test's exclusion tables list only files it serves."""
    names = {p.name for p in CORPUS_SERVED}
    tables = (NOT_DECODED, NOT_TRANSCODED, PADDED_PIXEL_DATA)
    assert set().union(*tables) <= names
