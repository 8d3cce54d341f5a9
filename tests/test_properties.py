"""Property tests: any data set pydicom writes decomposes into parts that rebuild it exactly."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomweb_archive.dicom.parts import InlineLimits
from tests.parts_helpers import rebuild

TEXT = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ^", max_size=20)
DS_TEXT = st.sampled_from(["1", "1.0000", "+1.5", "-0.25", "1e3", "7.E-2", "  3 ", ".5", "00012"])
IS_TEXT = st.sampled_from(["0", "+12", "-7", "00042", " 9 "])


@st.composite
def datasets(draw: st.DrawFn, depth: int = 0) -> Dataset:
    ds = Dataset()
    if draw(st.booleans()):
        ds.PatientName = "=".join(draw(st.lists(TEXT, min_size=1, max_size=3)))
    if draw(st.booleans()):
        ds.add_new(0x00180050, "DS", "\\".join(draw(st.lists(DS_TEXT, min_size=1, max_size=4))))
    if draw(st.booleans()):
        ds.add_new(0x00200013, "IS", draw(IS_TEXT))
    if draw(st.booleans()):
        ds.add_new(0x00081030, "LO", draw(TEXT))
    if draw(st.booleans()):
        ds.add_new(0x00280106, "US", draw(st.integers(0, 65535)))
    if draw(st.booleans()):
        ds.add_new(0x00189087, "FD", draw(st.floats(allow_nan=False, allow_infinity=False)))
    if draw(st.booleans()):
        ds.add_new(0x00209165, "AT", [0x00100010, 0x00200013])
    if draw(st.booleans()):
        ds.add_new(0x00091010, "OB", draw(st.binary(max_size=200)))
        ds.add_new(0x00090010, "LO", "HYPOTHESIS")
    if draw(st.booleans()):
        ds.add_new(0x00420011, "OB", draw(st.binary(max_size=300)))
    if draw(st.booleans()):
        ds.add_new(
            0x54001010, "OW", draw(st.binary(max_size=300).map(lambda b: b[: len(b) // 2 * 2]))
        )
    if depth < 2 and draw(st.booleans()):
        items = draw(st.lists(datasets(depth + 1), max_size=3))
        ds.ReferencedImageSequence = Sequence(items)
    return ds


SYNTAXES = st.sampled_from([ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian])


def _write(ds: Dataset, syntax: UID, undefined_lengths: bool) -> bytes:
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ds.SOPClassUID)
    meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    for element in ds.iterall():
        if element.VR == "SQ":
            element.is_undefined_length = undefined_lengths
            for item in element.value:
                item.is_undefined_length_sequence_item = undefined_lengths
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ds=datasets(),
    syntax=SYNTAXES,
    undefined=st.booleans(),
    limit=st.sampled_from([0, 16, 64, 131074]),
)
def test_any_dataset_rebuilds_exactly(
    ds: Dataset, syntax: UID, undefined: bool, limit: int
) -> None:
    """Whatever the elements, encoding, lengths and bulk limit: the same bytes come back."""
    data = _write(ds, syntax, undefined)
    rebuilt, end = rebuild(data, InlineLimits(public=limit, private=limit))
    assert rebuilt == data
    metadata = end.metadata
    if "00180050" in metadata:  # every DS text drawn is a valid DS: all become JSON numbers
        assert all(isinstance(v, int | float) for v in metadata["00180050"]["Value"])
