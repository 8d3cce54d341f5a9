"""Encapsulated pixel data: frames found by EOT, BOT, fragment count or markers (PS3.5 A.4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.uid import UID, JPEGBaseline8Bit, RLELossless

from dicomweb_archive import Archive, ingest, reconstruct_p10
from dicomweb_archive.store.instance import InstanceKey, read_info, read_instance_metadata
from dicomweb_archive.store.multipart import parse_part
from tests.factory import make_ct, uid

#: Opaque "codestreams": frame splitting never decodes, so any bytes do; JPEG-like ones start
#: with SOI so that the marker heuristic can be exercised.
FRAMES = [b"\xff\xd8" + bytes([n]) * (1000 + 37 * n) + b"\xff\xd9" for n in range(5)]


def _write(path: Path, pixel_data: bytes, syntax: UID, **extra: bytes) -> Path:
    ds = make_ct(study=uid(1), series=uid(2), sop=uid(3), frames=len(FRAMES), rows=8, columns=8)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def _extended() -> tuple[bytes, dict[str, bytes]]:
    data, offsets, lengths = encapsulate_extended(FRAMES)
    return data, {"ExtendedOffsetTable": offsets, "ExtendedOffsetTableLengths": lengths}


CASES = {
    "basic offset table, one fragment per frame": lambda: (
        encapsulate(FRAMES, has_bot=True),
        {},
    ),
    "basic offset table, three fragments per frame": lambda: (
        encapsulate(FRAMES, fragments_per_frame=3, has_bot=True),
        {},
    ),
    "no offset table, one fragment per frame": lambda: (
        encapsulate(FRAMES, has_bot=False),
        {},
    ),
    "no offset table, several fragments, SOI markers": lambda: (
        encapsulate(FRAMES, fragments_per_frame=2, has_bot=False),
        {},
    ),
    "extended offset table": _extended,
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("syntax", [JPEGBaseline8Bit, RLELossless], ids=["jpeg", "rle"])
def test_frames_and_round_trip(case: str, syntax: UID, tmp_path: Path, store: str) -> None:
    """Each frame file holds exactly one frame; the file is rebuilt byte for byte."""
    pixel_data, extra = CASES[case]()
    path = _write(tmp_path / "enc.dcm", pixel_data, syntax, **extra)
    key = InstanceKey(uid(1), uid(2), uid(3))
    with Archive.open_or_create(store) as archive:
        report = ingest(archive, [path])
        assert report.ok, report.results[0].error
        storage, keys = archive.storage, archive.keys
        info = read_info(storage, keys, key)
        assert len(info.frames) == len(FRAMES)
        for number, frame in enumerate(FRAMES, start=1):
            name = keys.frame(key.study, key.series, key.sop, number)
            content_type, payload = parse_part(storage.get(name), source=name)
            # A stored frame is its fragments as received, with the even-length padding byte
            # encapsulation adds (PS3.5 A.4); decoders ignore bytes after the end of image.
            assert payload == frame + b"\0" * (len(frame) % 2)
            assert content_type.endswith(f"transfer-syntax={syntax}")
        assert reconstruct_p10(archive, uid(3)) == path.read_bytes()
        meta = read_instance_metadata(storage, keys, key)
    assert meta["00083002"] == {"vr": "UI", "Value": [str(syntax)]}
