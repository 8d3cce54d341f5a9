"""A file that ends exactly where a frame's last item ends has that frame whole (PS3.5 A.4):
at an offset of the Basic Offset Table, and for RLE (one fragment per frame) always."""

from __future__ import annotations

import io
from pathlib import Path

from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from dicomweb_archive import Archive, ingest
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.ops.export import Selection, export
from dicomweb_archive.store.instance import InstanceKey, read_info
from tests.factory import make_ct, uid

FRAGMENT = 8 + 40  # an item header and a 40-byte fragment


def _three_frames_two_fragments_each() -> bytes:
    """A 3-frame encapsulated instance, two fragments per frame, with a Basic Offset Table."""
    ds = make_ct(study=uid(91), series=uid(92), sop=uid(93), frames=3, rows=8, columns=8)
    frames = [bytes([n]) * 80 for n in range(1, 4)]
    ds.PixelData = encapsulate(frames, fragments_per_frame=2, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_frame_ending_at_an_offset_is_whole(tmp_path: Path, store: str) -> None:
    """Cut after frame 2's last item: frames 1-2 whole, 3 not; exported as received."""
    data = _three_frames_two_fragments_each()
    cut = data[: -(2 * FRAGMENT + 8)]  # frame 3's two items and the sequence delimiter
    path = tmp_path / "cut.dcm"
    path.write_bytes(cut)
    with Archive.open_or_create(store) as archive:
        (result,) = ingest(archive, [path]).results
        assert result.status == "stored", result.error
        assert any("frames 1-2 are whole" in w for w in result.warnings)
        info = read_info(archive.storage, archive.keys, InstanceKey(uid(91), uid(92), uid(93)))
        assert (len(info.frames), incomplete_frame(info.skeleton)) == (2, 3)
        out = export(archive, Selection(study=uid(91)), out=tmp_path / "out")
        assert out.ok and Path(out.items[0].name).read_bytes() == cut


def test_frame_cut_between_its_fragments_is_not_whole(tmp_path: Path, store: str) -> None:
    """Cut after frame 2's first item: frame 1 whole, frame 2 not (its second item unseen)."""
    data = _three_frames_two_fragments_each()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: -(3 * FRAGMENT + 8)])
    with Archive.open_or_create(store) as archive:
        (result,) = ingest(archive, [path]).results
        assert result.status == "stored", result.error
        info = read_info(archive.storage, archive.keys, InstanceKey(uid(91), uid(92), uid(93)))
        assert (len(info.frames), incomplete_frame(info.skeleton)) == (1, 2)
