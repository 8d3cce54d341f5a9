"""Generated bad inputs, built from pydicom's test files (never downloaded).

Used by ``tests/test_malformed.py`` and ``tests/test_mutations.py``: files with bytes after
their last data element, sequences nested deep, a deflate bomb, and deterministic mutations
(truncations, byte flips in tags, VRs and lengths, nulls in strings) of real files.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian

from tests.factory import make_ct, uid

#: Files mutated by :func:`mutations` (explicit and implicit VR, big endian, encapsulated,
#: deflated, no pixel data, sequences).
MUTATED = (
    "CT_small.dcm",
    "MR_small.dcm",
    "rtplan.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle.dcm",
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",
    "rtstruct.dcm",
)


def pydicom_file(name: str) -> Path:
    found = get_testdata_file(name)
    assert found is not None, name
    return Path(found)


def write_trailing(path: Path, source: str, trailer: bytes) -> Path:
    """A copy of pydicom's ``source`` with ``trailer`` appended."""
    path.write_bytes(pydicom_file(source).read_bytes() + trailer)
    return path


def write_nested(path: Path, depth: int, *, sop: int = 3) -> Path:
    """A CT whose Referenced Image Sequence nests ``depth`` levels deep (one item each, all of
    undefined length), written byte by byte (pydicom's writer recurses once per level)."""
    ds = make_ct(study=uid(1), series=uid(2), sop=uid(sop))
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.save_as(path, enforce_file_format=True)
    sequence = struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    ends = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    data = path.read_bytes()
    empty = struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 8) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, 0
    )
    assert data.count(empty) == 1
    path.write_bytes(data.replace(empty, (sequence + item) * depth + ends * depth))
    return path


def write_deflate_bomb(path: Path, inflated_size: int) -> Path:
    """A Deflated Explicit VR Little Endian file whose data set inflates to about
    ``inflated_size`` bytes: a valid small data set, then a private OB element of zeros."""
    ds = make_ct(study=uid(1), series=uid(2), sop=uid(3))
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = _explicit_le_dataset(ds)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [compressor.compress(head)]
    header = struct.pack("<HH2sHI", 0x0009, 0x1000, b"OB", 0, inflated_size)
    parts.append(compressor.compress(header))
    block = bytes(1 << 20)
    left = inflated_size
    while left > 0:
        parts.append(compressor.compress(block[: min(left, len(block))]))
        left -= len(block)
    parts.append(compressor.flush())
    path.write_bytes(_file_meta_bytes(ds) + b"".join(parts))
    return path


def _explicit_le_dataset(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _file_meta_bytes(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_file_meta_info(buffer, ds.file_meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + buffer.getvalue()


def mutations(data: bytes, seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    """``count`` deterministic mutations of ``data``: (what was done, the mutated bytes)."""
    rng = random.Random(seed)
    size = len(data)
    kinds = ("truncate", "flip", "length", "vr", "tag", "null", "insert", "zero")
    for number in range(count):
        kind = kinds[number % len(kinds)]
        at = rng.randrange(132, size) if size > 140 else rng.randrange(size)
        out = bytearray(data)
        if kind == "truncate":
            del out[at:]
        elif kind == "flip":
            out[at] ^= 1 << rng.randrange(8)
        elif kind == "length":  # a 16- or 32-bit length-sized field overwritten
            value = rng.choice((0, 1, 0xFFFF, 0xFFFFFFFF, size, rng.randrange(1 << 32)))
            width = rng.choice((2, 4))
            out[at : at + width] = value.to_bytes(8, "little")[:width]
        elif kind == "vr":
            out[at : at + 2] = rng.choice((b"SQ", b"UN", b"OB", b"XX", b"\0\0", b"UT", b"AT"))
        elif kind == "tag":
            out[at : at + 4] = rng.choice(
                (b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0", b"\xfe\xff\x0d\xe0", b"\xe0\x7f\x10\x00")
            )
        elif kind == "null":
            out[at] = 0
        elif kind == "insert":
            out[at:at] = rng.randbytes(rng.randrange(1, 16))
        else:
            del out[at : at + rng.randrange(1, 64)]
        yield f"{kind}@{at}", bytes(out[: size + 64])
