"""One request that holds the same SOP Instance UID twice (STOW-RS parts, or streams of one
``write_streams`` batch): found by a tester, the instance was lost (the second copy was taken
as a replacement of the first inside the request's own change, which then held nothing) while
both parts were acknowledged."""

from __future__ import annotations

import io
from pathlib import Path

from pydicom.data import get_testdata_file

from dicomweb_archive import Archive
from dicomweb_archive.ops.receive import DUPLICATE_SOP_INSTANCE, receive_instances
from dicomweb_archive.ops.verify import verify


def _bytes(name: str) -> bytes:
    return Path(str(get_testdata_file(name))).read_bytes()


def test_the_same_instance_twice_in_one_request(store: str) -> None:
    """Identical parts: stored once, both acknowledged; a different file with the same SOP
    Instance UID fails alone (0x0111); the request's other parts are stored; verify clean."""
    mr, ct = _bytes("MR_small.dcm"), _bytes("CT_small.dcm")
    changed = bytearray(mr)
    changed[-5] ^= 1
    with Archive.open_or_create(store) as archive:
        outcomes = receive_instances(
            archive,
            [
                ("p1", io.BytesIO(mr)),
                ("p2", io.BytesIO(ct)),
                ("p3", io.BytesIO(mr)),
                ("p4", io.BytesIO(bytes(changed))),
            ],
        )
        assert [o.stored for o in outcomes] == [True, True, True, False]
        assert outcomes[3].failure_reason == DUPLICATE_SOP_INSTANCE
        assert archive.index.counts()["instances"] == 2
        assert verify(archive).ok
