"""STOW-RS with dicomweb-client: every pydicom test file that ingest accepts is stored and
exported byte-identical to what was sent; four clients at once store every instance once."""

from __future__ import annotations

import email.parser
import email.policy
import io
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import ExplicitVRLittleEndian

from dicomweb_archive import Archive, ingest
from dicomweb_archive.ops.receive import DOES_NOT_MATCH_SOP_CLASS
from dicomweb_archive.ops.reconstruct import reconstruct_p10
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.config import StoreConfig
from tests.conftest import corpus_files, corpus_id
from tests.factory import write_series
from tests.test_corpus import NOT_INGESTED
from tests.test_stow import MULTIPART, body, post, stow_serving

#: retrieval gives a data set sent without File Meta Information a preamble and File Meta
#: (PS3.10 7.1) before the data set's bytes as sent
FILE_META = b"DICM"
ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'

#: files pydicom cannot write again (dicomweb-client encodes datasets with dcmwrite): sent as
#: the file's own bytes instead
NOT_REWRITTEN = {"SC_rgb_jpeg.dcm": "(0008,0008) holds bytes pydicom cannot encode as a string"}


def _sent(path: Path) -> tuple[pydicom.Dataset | None, bytes]:
    """The dataset dicomweb-client is given and the bytes it sends (dcmwrite, as it does); the
    file's bytes for the files pydicom cannot write again."""
    if corpus_id(path) in NOT_REWRITTEN:
        return None, path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path, force=True)
        encoded = io.BytesIO()
        pydicom.dcmwrite(encoded, dataset)
    return dataset, encoded.getvalue()


Sent = tuple[str, pydicom.Dataset | None, bytes, Path]


def _rounds() -> list[list[Sent]]:
    """The accepted corpus in rounds whose SOP Instance UIDs differ (many test files share
    one: each round goes to a store of its own): (SOP Instance UID, dataset given to
    dicomweb-client, bytes sent, file) each."""
    rounds: list[list[Sent]] = []
    for path in corpus_files():
        if corpus_id(path) in NOT_INGESTED:
            continue
        dataset, data = _sent(path)
        sop = str(pydicom.dcmread(io.BytesIO(data), force=True).SOPInstanceUID)
        for round_ in rounds:
            if all(sop != sent[0] for sent in round_):
                round_.append((sop, dataset, data, path))
                break
        else:
            rounds.append([(sop, dataset, data, path)])
    return rounds


def _retrieve(url: str) -> bytes:
    """The instance at the Retrieve URL ``url`` as stored (WADO-RS, transfer-syntax=*)."""
    reply = requests.get(url, headers={"Accept": ANY_SYNTAX}, timeout=60)
    assert reply.status_code == 200, reply.text
    head = f"Content-Type: {reply.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + reply.content)
    (part,) = message.iter_parts()
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def _warned(round_: list[Sent], directory: Path) -> set[str]:
    """The SOP Instance UIDs of the round whose bytes mkdicomweb stores with a warning."""
    directory.mkdir()
    for number, (_, _, data, _) in enumerate(round_):
        (directory / f"{number}.dcm").write_bytes(data)
    config = StoreConfig(recompression=None)  # as the stores of the test
    with Archive.create(f"memory://stow-{directory.name}", config) as reference:
        report = ingest(reference, sorted(directory.iterdir()))
    assert report.ok
    return {r.key.sop for r in report.results if r.warnings and r.key}


def _check_retrieved(retrieved: bytes, sent: bytes, name: str) -> None:
    """WADO-RS (transfer-syntax=*) gives the bytes sent (``ops/retrieve.py``): behind a
    preamble and File Meta where none was sent; in Explicit VR Little Endian, the same values,
    where they were sent in Implicit VR Little Endian or Explicit VR Big Endian (PS3.18 8.7.3
    allows neither in web services)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = pydicom.dcmread(io.BytesIO(sent), force=True)
    if original.original_encoding != (False, True):
        got = pydicom.dcmread(io.BytesIO(retrieved))
        assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian, name
        pixels = ("PixelData", "PlanarConfiguration")  # frames may come colour-by-pixel
        assert [(e.tag, e.value) for e in got if e.keyword not in pixels] == [
            (e.tag, e.value) for e in original if e.keyword not in pixels
        ], name
        if "PixelData" in original:
            assert (got.pixel_array == original.pixel_array).all(), name
    elif sent[128:132] == FILE_META:
        assert retrieved == sent, name
    else:
        assert retrieved[128:132] == FILE_META, name
        assert retrieved.endswith(sent), name


@pytest.mark.slow
def test_corpus_through_stow(new_store: Callable[[str], str], tmp_path: Path) -> None:
    """dicomweb-client's store_instances stores every file ingest accepts: no failure, and for
    each a Referenced SOP Sequence item with its SOP Class, its Retrieve URL, and Warning
    Reason 0xB007 exactly for the files mkdicomweb stores with a warning;
    retrieving each from its Retrieve URL gives the bytes sent (as _check_retrieved says);
    each exports byte-identical; verify is clean."""
    rounds = _rounds()
    assert sum(len(r) for r in rounds) == len(corpus_files()) - len(NOT_INGESTED)
    for number, round_ in enumerate(rounds):
        warned = _warned(round_, tmp_path / f"round{number}")
        store = new_store(f"round{number}")
        Archive.create(store, StoreConfig(recompression=None)).close()
        with stow_serving(store) as url:
            datasets = [d for _, d, _, _ in round_ if d is not None]
            response = DICOMwebClient(url).store_instances(datasets)
            assert "FailedSOPSequence" not in response
            items = [
                (i.ReferencedSOPInstanceUID, i.ReferencedSOPClassUID, i.RetrieveURL, i)
                for i in response.ReferencedSOPSequence
            ]
            raw = [data for _, d, data, _ in round_ if d is None]
            if raw:
                reply = post(f"{url}/studies", body(*(("application/dicom", d) for d in raw)))
                assert reply.status_code in (200, 202) and "00081198" not in reply.json()
                items += [
                    (
                        i["00081155"]["Value"][0],
                        i["00081150"]["Value"][0],
                        i["00081190"]["Value"][0],
                        i,
                    )
                    for i in reply.json()["00081199"]["Value"]
                ]
            assert sorted(sop for sop, _, _, _ in items) == sorted(s[0] for s in round_)
            retrieved = {}
            for sop, sop_class, retrieve_url, item in items:
                sent = pydicom.dcmread(
                    io.BytesIO(next(s[2] for s in round_ if s[0] == sop)), force=True
                )
                assert sop_class == sent.SOPClassUID
                assert retrieve_url == (
                    f"{url}/studies/{sent.StudyInstanceUID}/series/"
                    f"{sent.SeriesInstanceUID}/instances/{sop}"
                )
                if isinstance(item, pydicom.Dataset):
                    reason = item.get("WarningReason")
                else:
                    reason = item.get("00081196", {}).get("Value", [None])[0]
                assert (reason == DOES_NOT_MATCH_SOP_CLASS) == (sop in warned), sop
                assert reason in (None, DOES_NOT_MATCH_SOP_CLASS)
                retrieved[sop] = _retrieve(retrieve_url)
        with Archive.open(store) as archive:
            for sop, _, data, path in round_:
                assert reconstruct_p10(archive, sop) == data, sop
                _check_retrieved(retrieved[sop], data, corpus_id(path))
            assert verify(archive).ok


def test_four_clients_at_once(store: str, tmp_path: Path) -> None:
    """Four clients storing at once, each three series of its own and one file every client
    sends: every instance is stored once, the shared one acknowledged to all, verify clean."""
    Archive.create(store).close()
    shared = write_series(tmp_path / "shared", count=1)[0].read_bytes()
    batches = []
    for client in range(4):
        files = [
            p.read_bytes()
            for series in range(3)
            for p in write_series(
                tmp_path / f"c{client}s{series}", count=3, study=f"1.2.3.{client}"
            )
        ]
        batches.append([shared, *files])
    errors: list[BaseException] = []
    replies: list[requests.Response] = []

    def send(files: list[bytes], url: str) -> None:
        try:
            for start in range(0, len(files), 4):
                chunk = files[start : start + 4]
                replies.append(
                    requests.post(
                        f"{url}/studies",
                        body(*(("application/dicom", f) for f in chunk)),
                        headers={"Content-Type": MULTIPART},
                        timeout=120,
                    )
                )
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    with stow_serving(store) as url:
        threads = [threading.Thread(target=send, args=(b, url)) for b in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert [r.status_code for r in replies] == [200] * len(replies)
        instances = DICOMwebClient(url).search_for_instances()
    uids = [i["00080018"]["Value"][0] for i in instances]
    assert len(uids) == len(set(uids)) == 1 + 4 * 9
    with Archive.open(store) as archive:
        assert archive.index.counts()["instances"] == 37
        assert verify(archive).ok
