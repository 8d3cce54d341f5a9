"""Issue 15: the store receives over DICOM networking and STOW-RS at once. Four storescu
associations (DCMTK) and four STOW-RS clients send into one store together, each a series of
its own and one instance all eight send: every instance is stored once, nothing is lost,
verify is clean."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
import requests

from dicomweb_archive import Archive
from dicomweb_archive.ops.verify import verify
from tests.dimse_peers import DCMTK, HAVE_DCMTK, scp
from tests.factory import write_series
from tests.test_stow import MULTIPART, body, stow_serving

pytestmark = [
    pytest.mark.skipif(not HAVE_DCMTK, reason="DCMTK's network tools are not installed"),
    pytest.mark.local,  # DCMTK processes and two servers: once is enough
]


def test_storescu_and_stow_clients_at_once(store: str, tmp_path: Path) -> None:
    """Eight senders, two protocols, one store: 4 x 6 + 4 x 6 own instances and 1 shared."""
    shared = write_series(tmp_path / "shared", count=1, prefix="SH")
    dimse = [write_series(tmp_path / f"d{n}", count=6, patient_id=f"D{n}") for n in range(4)]
    web = [write_series(tmp_path / f"w{n}", count=6, patient_id=f"W{n}") for n in range(4)]
    tool = DCMTK["storescu"]
    assert tool is not None
    Archive.create(store).close()
    errors: list[BaseException] = []
    statuses: list[int] = []

    def send(files: list[Path], url: str) -> None:
        try:
            for start in range(0, len(files), 3):
                chunk = [f.read_bytes() for f in files[start : start + 3]]
                reply = requests.post(
                    f"{url}/studies",
                    body(*(("application/dicom", data) for data in chunk)),
                    headers={"Content-Type": MULTIPART},
                    timeout=300,
                )
                statuses.append(reply.status_code)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    with scp(store) as (port, _server), stow_serving(store) as url:
        processes = [
            subprocess.Popen(
                [tool, "-nh", "-xe", "-aec", "ARCHIVE", "127.0.0.1", str(port)]
                + [str(f) for f in [*files, *shared]],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for files in dimse
        ]
        threads = [threading.Thread(target=send, args=([*f, *shared], url)) for f in web]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for process in processes:
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr
    assert not errors
    assert statuses and all(status == 200 for status in statuses), statuses
    with Archive.open(store) as archive:
        assert archive.index.counts()["instances"] == 4 * 6 + 4 * 6 + 1
        assert verify(archive).ok
