"""web/negotiate.py: a media range weighted q=0 is not acceptable (RFC 9110 12.4.2), and an
incomplete instance that is not stored in the default transfer syntax is not sent for an
Accept that names none (PS3.18 8.7.3.4)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from pydicom.uid import ImplicitVRLittleEndian

from dicomweb_archive.web.negotiate import Wanted, choose_instance_syntax, parse_accept
from tests.factory import make_ct, uid
from tests.serving import Http, serving
from tests.stores import ingested

DICOM = 'multipart/related; type="application/dicom"'
ELE = "1.2.840.10008.1.2.1"


def test_weight_zero_is_not_acceptable() -> None:
    """q=0 leaves the media range out; another weight keeps it."""
    assert parse_accept(f"{DICOM}; transfer-syntax=*; q=0") == []
    assert parse_accept(f"{DICOM}; transfer-syntax=*; q=0.000, */*;q=0.5") == [Wanted("*/*", None)]
    assert parse_accept(f"{DICOM}; q=1") == [Wanted("application/dicom", None)]


def test_incomplete_not_in_the_default_is_not_chosen_by_default() -> None:
    """No transfer syntax asked: an incomplete Implicit VR instance has no acceptable part;
    one stored in Explicit VR Little Endian, or received lossy, goes as stored."""
    bare = parse_accept(DICOM)
    implicit = str(ImplicitVRLittleEndian)
    assert choose_instance_syntax(bare, stored=implicit, lossy=False, transcodable=False) is None
    assert choose_instance_syntax(bare, stored=ELE, lossy=False, transcodable=False) == "*"
    assert choose_instance_syntax(bare, stored=implicit, lossy=True, transcodable=False) == "*"
    assert choose_instance_syntax(bare, stored=implicit, lossy=False) == ELE


def _incomplete_implicit(tmp_path: Path) -> Path:
    ds = make_ct(study=uid(71), series=uid(72), sop=uid(73), frames=3, rows=16, columns=16)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    path = tmp_path / "cut.dcm"
    path.write_bytes(buffer.getvalue()[: -(16 * 16 * 2) - 10])
    return path


def test_server_answers_406_for_what_cannot_be_sent(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """A bare application/dicom on an incomplete Implicit VR instance, and transfer-syntax=*
    weighted q=0, are 406 naming what is available; transfer-syntax=* gets it as received."""
    path = _incomplete_implicit(tmp_path)
    location = new_store("negotiation")
    assert ingested(location, [path]).ok
    url = f"/dicomweb/studies/{uid(71)}/series/{uid(72)}/instances/{uid(73)}"
    with serving(location) as base:
        raw = Http(base)
        bare = raw.get(url, {"Accept": DICOM})
        assert bare.status_code == 406, bare.status_code
        assert "incomplete" in bare.text and str(ImplicitVRLittleEndian) in bare.text
        refused = raw.get(url, {"Accept": f"{DICOM}; transfer-syntax=*; q=0"})
        assert refused.status_code == 406, refused.status_code
        stored = raw.get(url, {"Accept": f"{DICOM}; transfer-syntax=*"})
        assert stored.status_code == 200 and path.read_bytes() in stored.content
