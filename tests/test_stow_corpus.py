"""STOW-RS with dicomweb-client: every pydicom test file that ingest accepts is stored and
exported byte-identical to what was sent; four clients at once store every instance once."""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from dicomweb_archive import Archive
from dicomweb_archive.ops.reconstruct import reconstruct_p10
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.config import StoreConfig
from tests.conftest import corpus_files, corpus_id
from tests.factory import write_series
from tests.test_corpus import NOT_INGESTED
from tests.test_stow import MULTIPART, body, post, stow_serving

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


def _rounds() -> list[list[tuple[str, pydicom.Dataset | None, bytes]]]:
    """The accepted corpus in rounds whose SOP Instance UIDs differ (many test files share
    one: each round goes to a store of its own)."""
    rounds: list[list[tuple[str, pydicom.Dataset | None, bytes]]] = []
    for path in corpus_files():
        if corpus_id(path) in NOT_INGESTED:
            continue
        dataset, data = _sent(path)
        sop = str(pydicom.dcmread(io.BytesIO(data), force=True).SOPInstanceUID)
        for round_ in rounds:
            if all(sop != uid for uid, _, _ in round_):
                round_.append((sop, dataset, data))
                break
        else:
            rounds.append([(sop, dataset, data)])
    return rounds


@pytest.mark.slow
def test_corpus_through_stow(new_store: Callable[[str], str]) -> None:
    """dicomweb-client's store_instances stores every file ingest accepts (no failure, a
    Retrieve URL each); each exports byte-identical to the bytes sent; verify is clean."""
    rounds = _rounds()
    assert sum(len(r) for r in rounds) == len(corpus_files()) - len(NOT_INGESTED)
    for number, round_ in enumerate(rounds):
        store = new_store(f"round{number}")
        Archive.create(store, StoreConfig(recompression=None)).close()
        with stow_serving(store) as url:
            datasets = [d for _, d, _ in round_ if d is not None]
            response = DICOMwebClient(url).store_instances(datasets)
            referenced = {i.ReferencedSOPInstanceUID for i in response.ReferencedSOPSequence}
            assert "FailedSOPSequence" not in response
            raw = [data for _, d, data in round_ if d is None]
            if raw:
                reply = post(f"{url}/studies", body(*(("application/dicom", d) for d in raw)))
                assert reply.status_code in (200, 202) and "00081198" not in reply.json()
                referenced |= {i["00081155"]["Value"][0] for i in reply.json()["00081199"]["Value"]}
        assert referenced == {sop for sop, _, _ in round_}
        with Archive.open(store) as archive:
            for sop, _, data in round_:
                assert reconstruct_p10(archive, sop) == data, sop
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
