"""verify of frames recompressed from a native original: the whole rebuilt file's SHA-256
proves their pixels, and a frame that decodes to other pixels is still found and named."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom

from dicomweb_archive import Archive, ingest
from dicomweb_archive.dicom.codecs import encode
from dicomweb_archive.model.syntax import JPEG_LS_LOSSLESS
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.instance import read_info
from dicomweb_archive.store.multipart import boundary_for, parse_part, part_header, part_trailer
from dicomweb_archive.store.storage import json_gz
from tests.factory import write_series


def test_verify_names_the_frame_that_decodes_to_other_pixels(tmp_path: Path, store: str) -> None:
    """A recompressed frame replaced by another valid JPEG-LS frame whose file hash is
    recorded (the store agrees with itself but not with the received file) fails as a pixel
    difference that names the frame."""
    (source,) = write_series(tmp_path / "in", count=1, realistic=True)
    with Archive.open_or_create(store) as archive:
        key = ingest(archive, [source]).results[0].key
        assert key is not None
        info = read_info(archive.storage, archive.keys, key)
        assert info.frames[0].transfer_syntax_uid == JPEG_LS_LOSSLESS
        assert info.rebuilds_original()
        pixels = pydicom.dcmread(source).pixel_array.astype(np.uint16)
        pixels[3, 3] += 1
        payload = encode(pixels, JPEG_LS_LOSSLESS)
        frame = archive.keys.frame(key.study, key.series, key.sop, 1)
        content_type, _old = parse_part(archive.storage.get(frame), source=frame)
        sha = hashlib.sha256(payload).hexdigest()
        boundary = boundary_for(sha)
        archive.storage.put(
            frame, part_header(boundary, content_type) + payload + part_trailer(boundary)
        )
        info.frames[0].sha256, info.frames[0].size = sha, len(payload)
        archive.storage.put(
            archive.keys.info(key.study, key.series, key.sop), json_gz(info.to_json())
        )
        report = verify(archive)
    pixel_findings = [f.message for f in report.findings if f.kind == "pixels"]
    assert pixel_findings == [
        "frame 1: it decodes to pixels that differ from the source's (SHA-256)"
    ]
    assert report.instances[0].equivalence == "failed"
