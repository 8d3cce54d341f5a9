"""web/retrieve.py: instances as conformant PS3.10 files in the transfer syntax asked for,
Pixel Data as bulk data, and nothing read through a link out of the store."""

from __future__ import annotations

import email.parser
import email.policy
import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

from dicomweb_archive import Archive, ingest, reconstruct_p10
from dicomweb_archive.ops.export import Selection, export
from dicomweb_archive.web.responses import MAX_FRAME_LIST
from tests import stores
from tests.factory import write_series
from tests.serving import Http, Reply, serving
from tests.stores import ingested

ELE = "1.2.840.10008.1.2.1"
JPEG_LS = "1.2.840.10008.1.2.4.80"
CT_FILES = ("CT_small.dcm", "MR_small_jp2klossless.dcm", "ExplVR_LitEndNoMeta.dcm")


def _testdata(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str)
    return Path(path)


def _ids(name: str) -> tuple[str, str, str]:
    ds = pydicom.dcmread(_testdata(name), force=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _path(*ids: str) -> str:
    names = ("studies", "series", "instances")
    return "/dicomweb/" + "/".join(f"{n}/{i}" for n, i in zip(names, ids, strict=False))


def _parts(reply: Reply) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related reply."""
    head = f"Content-Type: {reply.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + reply.content)
    parts = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts.append((str(part["content-type"]).replace('"', ""), payload))
    return parts


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("retrieve")
    files = write_series(root / "in" / "ct", count=2, patient_id="PAT-R")
    for name in (*CT_FILES, "rtdose.dcm", "SC_rgb_rle_2frame.dcm"):
        files.append(Path(shutil.copy(_testdata(name), root / "in" / name)))
    location = stores.location(root, "store")
    with Archive.open_or_create(location) as archive:
        assert ingest(archive, files).ok
    yield location
    stores.forget(location)


@pytest.fixture(scope="module")
def base_url(store: str) -> Iterator[str]:
    with serving(store) as url:
        yield url


def test_instance_without_file_meta_gets_it(base_url: str, store: str) -> None:
    """A data set received without File Meta Information comes back as a PS3.10 file that
    pydicom reads without force; the stored original and its export stay byte-exact."""
    source = _testdata("ExplVR_LitEndNoMeta.dcm")
    ids = _ids(source.name)
    reply = Http(base_url).get(
        _path(*ids), {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    )
    ((part_type, body),) = _parts(reply)
    assert part_type == f"application/dicom; transfer-syntax={ELE}"
    retrieved = pydicom.dcmread(io.BytesIO(body))  # no force: preamble, DICM, group 0002
    assert retrieved.file_meta.TransferSyntaxUID == ELE
    assert retrieved.file_meta.MediaStorageSOPInstanceUID == ids[2]
    assert retrieved.file_meta.MediaStorageSOPClassUID == retrieved.SOPClassUID
    assert body.endswith(source.read_bytes())  # the data set itself as received
    with Archive.open(store) as archive:
        assert reconstruct_p10(archive, ids[2]) == source.read_bytes()


def test_big_endian_original_comes_in_explicit_little_endian(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """transfer-syntax=* for an original in Explicit VR Big Endian (not allowed in web
    services, PS3.18 8.7.3) gives Explicit VR Little Endian with the same values."""
    source = _testdata("ExplVR_BigEndNoMeta.dcm")
    location = new_store("big")
    assert ingested(location, [Path(shutil.copy(source, tmp_path / source.name))]).ok
    with serving(location) as url:
        retrieved = DICOMwebClient(url).retrieve_instance(*_ids(source.name))
    assert retrieved.file_meta.TransferSyntaxUID == ELE
    original = pydicom.dcmread(source, force=True)
    assert [(e.tag, e.value) for e in retrieved] == [(e.tag, e.value) for e in original]


def test_instance_in_the_transfer_syntax_asked_for(base_url: str) -> None:
    """Instance, series and study retrieval honour transfer-syntax (transcoding losslessly);
    none given means Explicit VR Little Endian (PS3.18 8.7.3.4); * means as stored."""
    client = DICOMwebClient(base_url)
    ct = _ids("CT_small.dcm")
    expected = pydicom.dcmread(_testdata("CT_small.dcm")).pixel_array
    native = client.retrieve_instance(*ct, media_types=(("application/dicom", ELE),))
    assert native.file_meta.TransferSyntaxUID == ELE
    np.testing.assert_array_equal(native.pixel_array, expected)
    jls = client.retrieve_instance(*ct, media_types=(("application/dicom", JPEG_LS),))
    assert jls.file_meta.TransferSyntaxUID == JPEG_LS
    np.testing.assert_array_equal(jls.pixel_array, expected)
    mr = _ids("MR_small_jp2klossless.dcm")  # stored in JPEG-LS: no transfer syntax -> native
    reply = Http(base_url).get(
        _path(*mr), {"Accept": 'multipart/related; type="application/dicom"'}
    )
    ((part_type, body),) = _parts(reply)
    assert part_type == f"application/dicom; transfer-syntax={ELE}"
    decoded = pydicom.dcmread(io.BytesIO(body))
    mr_pixels = pydicom.dcmread(_testdata("MR_small_jp2klossless.dcm")).pixel_array
    np.testing.assert_array_equal(decoded.pixel_array, mr_pixels)
    as_stored = client.retrieve_instance(*mr, media_types=(("application/dicom", "*"),))
    assert as_stored.file_meta.TransferSyntaxUID == JPEG_LS
    series = client.retrieve_series(*ct[:2], media_types=(("application/dicom", ELE),))
    assert [s.file_meta.TransferSyntaxUID for s in series] == [ELE]
    (study,) = client.search_for_studies(search_filters={"PatientID": "PAT-R"})
    whole = client.retrieve_study(
        study["0020000D"]["Value"][0], media_types=(("application/dicom", JPEG_LS),)
    )
    assert [s.file_meta.TransferSyntaxUID for s in whole] == [JPEG_LS, JPEG_LS]


@pytest.mark.parametrize(
    "syntax", ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2", "1.2.840.10008.1.2.99"]
)
def test_unavailable_transfer_syntax_is_406(raw: Http, syntax: str) -> None:
    """A transfer syntax the instance is neither stored in nor can be transcoded to (JPEG
    baseline, Implicit VR, an unknown one) is 406 naming what was asked and what is there."""
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'
    reply = raw.get(_path(*_ids("CT_small.dcm")), {"Accept": accept})
    assert reply.status_code == 406
    assert syntax in reply.text and ELE in reply.text and JPEG_LS in reply.text
    assert "transfer-syntax * (as stored)" in reply.text


def test_native_pixel_data_is_one_part(base_url: str) -> None:
    """The BulkDataURI of native Pixel Data gives the attribute's value as one
    application/octet-stream part (frames recompressed at ingest decoded); encapsulated
    Pixel Data gives its frames."""
    client = DICOMwebClient(base_url)
    for name, parts in (("rtdose.dcm", 1), ("SC_rgb_rle_2frame.dcm", 2)):
        metadata = client.retrieve_instance_metadata(*_ids(name))
        pixel_data = client.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"])
        assert len(pixel_data) == parts
        if parts == 1:
            assert pixel_data[0] == pydicom.dcmread(_testdata(name)).PixelData


def test_frame_list_is_bounded(raw: Http) -> None:
    """A frame list longer than MAX_FRAME_LIST is 400 with a sentence."""
    frames = ",".join(["1"] * (MAX_FRAME_LIST + 1))
    reply = raw.get(_path(*_ids("rtdose.dcm")) + f"/frames/{frames}")
    assert reply.status_code == 400
    assert f"at most {MAX_FRAME_LIST} frames" in reply.text
    assert raw.get(_path(*_ids("rtdose.dcm")) + "/frames/1,2,3").status_code == 200


@pytest.fixture
def raw(base_url: str) -> Http:
    return Http(base_url)


@pytest.mark.local
@pytest.mark.parametrize("kind", ["frame", "bulk data"])
def test_links_out_of_the_store_are_not_read(
    tmp_path: Path, new_store: Callable[[str], str], kind: str
) -> None:
    """A frame or bulk data file replaced by a link to a file outside the store: every
    endpoint refuses it (never the outside bytes), and export fails that instance with a
    worded error."""
    location = new_store("linked")
    source = Path(shutil.copy(_testdata("CT_small.dcm"), tmp_path / "ct.dcm"))
    assert ingested(location, [source]).ok
    study, series, sop = _ids("CT_small.dcm")
    pattern = "frames/1.mht" if kind == "frame" else "bulkdata/*/*/*"
    victim = next(Path(location).rglob(pattern))
    outside = tmp_path / "outside"
    marker = b"OUTSIDE-THE-STORE!" * 64
    outside.write_bytes(victim.read_bytes()[:64] + marker)  # a valid part head, then foreign bytes
    victim.unlink()
    victim.symlink_to(outside)
    bulk = "/".join(victim.parts[-3:])
    with serving(location) as url:
        raw = Http(url)
        for path in (
            _path(study),
            _path(study, series),
            _path(study, series, sop),
            _path(study, series, sop) + "/frames",
            _path(study, series, sop) + "/frames/1",
            f"/dicomweb/studies/{study}/bulkdata/{bulk}",
        ):
            if kind == "bulk data" and path.endswith(("/frames", "/frames/1")):
                continue  # the frames do not use the bulk data file
            reply = raw.get(path)
            assert reply.status_code in (404, 500), path
            assert marker[:18] not in reply.content, path
    with Archive.open(location) as archive:
        report = export(archive, Selection(study=study), out=tmp_path / "out")
    assert not report.ok
    assert "outside the store" in (report.failures[0].error or "")
    assert not any((tmp_path / "out").rglob("*.dcm"))


def test_series_retrieval_streams_instance_by_instance(base_url: str) -> None:
    """A series comes as one part per instance, each with its transfer syntax."""
    client = DICOMwebClient(base_url)
    (study,) = client.search_for_studies(search_filters={"PatientID": "PAT-R"})
    study_uid = study["0020000D"]["Value"][0]
    (series,) = client.search_for_series(study_uid)
    reply = Http(base_url).get(
        _path(study_uid, series["0020000E"]["Value"][0]),
        {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    parts = _parts(reply)
    assert len(parts) == 2
    assert all(t.startswith("application/dicom; transfer-syntax=") for t, _ in parts)
    assert {pydicom.dcmread(io.BytesIO(b)).SeriesInstanceUID for _, b in parts} == {
        series["0020000E"]["Value"][0]
    }


def test_default_transfer_syntax(
    base_url: str, tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """No Accept header, or no transfer syntax: Explicit VR Little Endian (PS3.18 8.7.3.4),
    except for pixel data received lossy compressed, which comes as stored."""
    reply = Http(base_url).get(_path(*_ids("MR_small_jp2klossless.dcm")))  # stored JPEG-LS
    ((part_type, _body),) = _parts(reply)
    assert part_type == f"application/dicom; transfer-syntax={ELE}"
    lossy = _testdata("SC_rgb_jpeg_lossy_gdcm.dcm")
    location = new_store("lossy")
    assert ingested(location, [Path(shutil.copy(lossy, tmp_path / lossy.name))]).ok
    with serving(location) as url:
        reply = Http(url).get(
            _path(*_ids(lossy.name)), {"Accept": 'multipart/related; type="application/dicom"'}
        )
    ((part_type, body),) = _parts(reply)
    assert part_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert body == lossy.read_bytes()


def test_incomplete_instance_is_sent_as_received(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """An instance whose received file ends inside Pixel Data comes as received (transfer
    syntax * or none), is never transcoded (406 saying why), and its Pixel Data is 410."""
    received = _testdata("CT_small.dcm").read_bytes()[:-1000]
    path = tmp_path / "cut.dcm"
    path.write_bytes(received)
    location = new_store("incomplete")
    assert ingested(location, [path]).ok
    instance = _path(*_ids("CT_small.dcm"))
    dicom = 'multipart/related; type="application/dicom"'
    with serving(location) as url:
        raw = Http(url)
        for accept in (f"{dicom}; transfer-syntax=*", dicom):
            ((part_type, body),) = _parts(raw.get(instance, {"Accept": accept}))
            assert body == received and part_type.endswith(f"transfer-syntax={ELE}")
        refused = raw.get(instance, {"Accept": f"{dicom}; transfer-syntax={JPEG_LS}"})
        assert refused.status_code == 406 and "incomplete" in refused.text
        pixel_data = raw.get(instance + "/frames")
        assert pixel_data.status_code == 410 and "ends inside frame 1" in pixel_data.text
