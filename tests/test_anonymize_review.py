"""Burned-in text review by evidence (issue 14, part 2, item 4): an instance is flagged when
Burned In Annotation (0028,0301) is YES, or absent for a SOP class or modality where burned-in
text is common; not merely because the attribute is absent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.uid import SecondaryCaptureImageStorage, UltrasoundImageStorage

from dicomweb_archive import Archive
from dicomweb_archive.ops.anonymize import anonymize
from tests.deid_helpers import EVERYTHING
from tests.factory import uid, write_ct
from tests.stores import ingested

#: name -> (Modality, SOP class or None for CT's, Burned In Annotation or None, flagged)
CASES = {
    "ct-absent": ("CT", None, None, False),
    "ct-yes": ("CT", None, "YES", True),
    "ct-no": ("CT", None, "NO", False),
    "us-absent": ("US", UltrasoundImageStorage, None, True),
    "us-no": ("US", UltrasoundImageStorage, "NO", False),
    "xa-modality-absent": ("XA", None, None, True),
    "sc-class-absent": ("OT", SecondaryCaptureImageStorage, None, True),
    "mr-unknown-value": ("MR", None, "MAYBE", False),
}


def _file(tmp_path: Path, number: int, name: str) -> Path:
    modality, sop_class, burned, _flagged = CASES[name]
    path = write_ct(
        tmp_path / "in" / f"{name}.dcm",
        study=uid("66.1"),
        series=uid(f"66.2.{number}"),
        sop=uid(f"66.3.{number}"),
        modality=modality,
    )
    ds = pydicom.dcmread(path)
    if sop_class is not None:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    if burned is not None:
        ds.BurnedInAnnotation = burned
    ds.save_as(path, enforce_file_format=True)
    return path


def test_flagged_by_evidence(tmp_path: Path, new_store: Callable[[str], str]) -> None:
    """Only YES, or absence where burned-in text is common (US, XA, secondary capture), is
    flagged, each with its reason; a CT or MR without the attribute is not."""
    store = new_store("source")
    files = [_file(tmp_path, n, name) for n, name in enumerate(CASES)]
    assert ingested(store, files).ok
    with Archive.open(store) as archive:
        report = anonymize(archive, EVERYTHING, new_store("out"), dry_run=True)
    flagged = {uid(f"66.3.{n}") for n, case in enumerate(CASES.values()) if case[3]}
    assert set(report.burned_in) == flagged == set(report.review)
    assert report.review[uid("66.3.1")] == [
        "Burned In Annotation (0028,0301) is YES: check the pixels for text"
    ]
    assert "is not given" in report.review[uid("66.3.3")][0]
