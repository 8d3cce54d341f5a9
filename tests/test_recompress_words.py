"""Native frames with bits above Bits Stored that are not sign bits are recompressed at Bits
Allocated precision, and still exported byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO

from dicomweb_archive import Archive, ingest
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.model.syntax import HTJ2K_LOSSLESS, JPEG_LS_LOSSLESS
from dicomweb_archive.ops.export import Selection, export
from dicomweb_archive.ops.ingest_types import PipelineOptions
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.instance import InstanceKey, read_frame, read_info
from tests.factory import make_ct, uid

KEY = InstanceKey(uid(71), uid(72), uid(73))
FRAMES = 2


def _write_high_bits(path: Path, *, signed: bool) -> Path:
    """A native 16-bit CT with Bits Stored 12 whose words use bits 12 to 15 for something else
    (overlay-like garbage), two frames."""
    ds = make_ct(study=KEY.study, series=KEY.series, sop=KEY.sop, rows=32, columns=32)
    ds.NumberOfFrames = FRAMES
    ds.PixelRepresentation = int(signed)
    rng = np.random.default_rng(7)
    values = rng.integers(0, 1 << 12, size=(FRAMES, 32, 32), dtype=np.uint16)
    garbage = rng.integers(0, 16, size=values.shape, dtype=np.uint16) << 12
    ds.PixelData = (values | garbage).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("target", [None, HTJ2K_LOSSLESS], ids=["default", "htj2k"])
def test_high_bits_are_compressed_and_exported_exactly(
    tmp_path: Path, store: str, signed: bool, target: str | None
) -> None:
    """Every frame is stored compressed, verify says bytes, export is byte-identical, and
    pydicom decodes each stored frame to the received words."""
    path = _write_high_bits(tmp_path / "high.dcm", signed=signed)
    policy = Recompression() if target is None else Recompression(grey=target)
    with Archive.open_or_create(store) as archive:
        (result,) = ingest(archive, [path], options=PipelineOptions(recompression=policy)).results
        assert result.status == "stored" and result.frames_recompressed == FRAMES
        assert result.frames_kept == 0
        info = read_info(archive.storage, archive.keys, KEY)
        stored_syntax = target or JPEG_LS_LOSSLESS
        assert [info.frame_syntax(n) for n in (1, 2)] == [stored_syntax] * FRAMES
        for n in (1, 2):  # the Content-Type of the frame's part names the compressed syntax
            part = archive.storage.get(archive.keys.frame(KEY.study, KEY.series, KEY.sop, n))
            assert f"transfer-syntax={stored_syntax}".encode() in part[:200]
        report = verify(archive)
        assert report.ok and [v.equivalence for v in report.instances] == ["bytes"]
        out = export(archive, Selection(study=KEY.study), out=tmp_path / "out")
        assert out.ok and Path(out.items[0].name).read_bytes() == path.read_bytes()
        codestreams = [bytes(read_frame(archive.storage, archive.keys, KEY, n)) for n in (1, 2)]
    received = pydicom.dcmread(path)
    words = np.frombuffer(received.PixelData, dtype="<i2" if signed else "<u2")
    compressed = pydicom.dcmread(path)
    compressed.file_meta.TransferSyntaxUID = pydicom.uid.UID(stored_syntax)
    compressed.PixelData = encapsulate(codestreams)
    compressed["PixelData"].VR = "OB"
    compressed["PixelData"].is_undefined_length = True
    buffer = DicomBytesIO()
    compressed.save_as(buffer, enforce_file_format=True)
    decoded = pydicom.dcmread(DicomBytesIO(buffer.getvalue())).pixel_array
    assert np.array_equal(decoded.reshape(-1), words)
