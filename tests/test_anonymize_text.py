"""Free text under de-identification (issue 14, part 2, item 2): a removed value repeated in
a kept attribute (Code Meaning, Structure Set Label), descriptions, comments and SR text in
sequences, device data; per Table E.1-1 and the Clean Descriptors, Clean Structured Content
and Retain Device Identity options."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from dicomweb_archive import Archive
from dicomweb_archive.model.deid import DUMMY, Profile
from dicomweb_archive.ops.anonymize import anonymize
from tests.deid_helpers import EVERYTHING, everything, exported, found, read_all
from tests.stores import ingested

KEY = b"text-key"
DESCRIPTION = "KNEE LEFT SMITHERSON PROTOCOL"
SECRETS = [
    DESCRIPTION,
    "Comment naming Mrs Jones",
    "Nested comment naming Mr Brown",
    "Patient Alicia complains of pain",
    "RP-5555",
    "NET-ZX81",
    "19990505",
    "PERFAE77",
]


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _texts(path: Path) -> Path:
    """pydicom's CT_small with the Study Description repeated as Code Meaning of Procedure
    Code Sequence and of Requested Procedure Code Sequence (in Request Attributes Sequence),
    comments at the top and in a kept sequence, an SR TEXT content item, and device data."""
    source = get_testdata_file("CT_small.dcm", download=False)
    assert isinstance(source, str)
    ds = pydicom.dcmread(source)
    ds.StudyDescription = DESCRIPTION
    ds.ProcedureCodeSequence = Sequence([_code("P123", "99LOCAL", DESCRIPTION.lower())])
    request = Dataset()
    request.RequestedProcedureID = "RP-5555"
    request.RequestedProcedureDescription = DESCRIPTION
    request.RequestedProcedureCodeSequence = Sequence([_code("P123", "99LOCAL", DESCRIPTION)])
    ds.RequestAttributesSequence = Sequence([request])
    ds.ImageComments = "Comment naming Mrs Jones"
    kept = Dataset()
    kept.ImageComments = "Nested comment naming Mr Brown"
    kept.RadionuclideTotalDose = "100"
    ds.RadiopharmaceuticalInformationSequence = Sequence([kept])  # (0054,0016): kept
    content = Dataset()
    content.RelationshipType, content.ValueType = "CONTAINS", "TEXT"
    content.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    content.TextValue = "Patient Alicia complains of pain"
    ds.ContentSequence = Sequence([content])
    ds.NetworkID = "NET-ZX81"
    ds.DateOfLastCalibration = "19990505"
    ds.TimeOfLastCalibration = "101500"
    ds.PerformedStationAETitle = "PERFAE77"
    ds.save_as(path, enforce_file_format=True)
    return path


def _run(store: str, out: str, **kwargs: Any) -> None:
    with Archive.open(store) as archive:
        report = anonymize(archive, EVERYTHING, out, key=KEY, **kwargs)
    assert report.ok, [r.error for r in report.results]


@pytest.fixture
def texts(tmp_path: Path, new_store: Callable[[str], str]) -> str:
    store = new_store("source")
    assert ingested(store, [_texts(tmp_path / "texts.dcm")]).ok
    return store


def test_basic_profile_leaves_no_free_text(
    texts: str, tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Under the Basic Profile no removed text survives, not even repeated as the Code
    Meaning of a kept code sequence; the code itself stays; SR content and device data go."""
    out = new_store("out")
    _run(texts, out)
    assert found(SECRETS, everything(out, tmp_path / "export")) == []
    (ds,) = read_all(exported(out, tmp_path / "again"))
    (code,) = ds.ProcedureCodeSequence
    assert (code.CodeValue, code.CodeMeaning) == ("P123", DUMMY["LO"])
    assert "RequestAttributesSequence" not in ds
    assert ds.get("ContentSequence", []) == []
    assert "NetworkID" not in ds and "DateOfLastCalibration" not in ds
    assert "ImageComments" not in ds.RadiopharmaceuticalInformationSequence[0]
    assert ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose == "100"


def test_clean_options_keep_structure_without_text(
    texts: str, tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Clean Descriptors and Clean Structured Content keep descriptions, comments (nested
    ones too), Request Attributes and SR content items, with dummy text and coded concepts
    kept; device data is removed (no Retain Device Identity)."""
    out = new_store("out")
    options = frozenset({"clean-descriptors", "clean-structured-content"})
    _run(texts, out, options=options)
    assert found(SECRETS, everything(out, tmp_path / "export")) == []
    (ds,) = read_all(exported(out, tmp_path / "again"))
    assert ds.StudyDescription == ds.ImageComments == DUMMY["LO"]
    assert ds.RadiopharmaceuticalInformationSequence[0].ImageComments == DUMMY["LT"]
    (request,) = ds.RequestAttributesSequence
    assert request.RequestedProcedureDescription == DUMMY["LO"]
    assert "RequestedProcedureID" not in request
    assert request.RequestedProcedureCodeSequence[0].CodeMeaning == DUMMY["LO"]
    (content,) = ds.ContentSequence
    assert content.TextValue == DUMMY["UT"]
    assert content.ConceptNameCodeSequence[0].CodeMeaning == "Finding"
    assert "NetworkID" not in ds and "DateOfLastCalibration" not in ds
    assert "PerformedStationAETitle" not in ds
    codes = sorted(item.CodeValue for item in ds.DeidentificationMethodCodeSequence)
    assert codes == ["113100", "113104", "113105"]


def test_retain_device_identity_follows_the_2025b_letters(
    texts: str, tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Retain Device Identity, per the option column of the 2025b edition: Date and Time of
    Last Calibration (rows added since 2020b, K) kept; Network ID (added since 2020b, C) and
    Performed Station AE Title (K in 2020b, C since) become dummies, found nowhere in the
    output; the free text stays removed."""
    out = new_store("out")
    _run(texts, out, options=frozenset({"retain-device-identity"}))
    hidden = [s for s in SECRETS if s != "19990505"]
    assert found(hidden, everything(out, tmp_path / "export")) == []
    (ds,) = read_all(exported(out, tmp_path / "again"))
    assert (ds.DateOfLastCalibration, ds.TimeOfLastCalibration) == ("19990505", "101500")
    assert ds.NetworkID == ds.PerformedStationAETitle == DUMMY["AE"]
    codes = sorted(item.CodeValue for item in ds.DeidentificationMethodCodeSequence)
    assert codes == ["113100", "113109"]


def test_retain_device_identity_with_modified_dates_shifts_calibration(
    texts: str, tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Retain Device Identity keeps Date of Last Calibration (K), Modified Dates shifts it
    (C): together, the more protective C, shifted by the patient's offset like the other
    dates; the original date is found nowhere in the output; the time is kept (a shift by
    whole days)."""
    out = new_store("out")
    options = frozenset({"retain-device-identity", "retain-modified-dates"})
    _run(texts, out, options=options)
    assert found(SECRETS, everything(out, tmp_path / "export")) == []
    (ds,) = read_all(exported(out, tmp_path / "again"))
    source = pydicom.dcmread(_texts(tmp_path / "original.dcm"))
    profile = Profile(KEY, options)
    days = profile.date_offset(str(source.PatientID))
    assert ds.DateOfLastCalibration == profile.shift("DA", "19990505", days)
    assert ds.StudyDate == profile.shift("DA", str(source.StudyDate), days)
    assert ds.TimeOfLastCalibration == "101500"


def test_full_dates_keep_date_of_last_calibration(
    texts: str, tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Date of Last Calibration follows the temporal option: kept with Full Dates."""
    out = new_store("out")
    _run(texts, out, options=frozenset({"retain-full-dates"}))
    (ds,) = read_all(exported(out, tmp_path / "export"))
    assert ds.DateOfLastCalibration == "19990505"


def test_structure_set_label_repeating_study_id(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """pydicom's rtstruct.dcm repeats its Study ID as Structure Set Label and Name: the value
    survives nowhere in the de-identified store or its export."""
    source = get_testdata_file("rtstruct.dcm", download=False)
    assert isinstance(source, str)
    ds = pydicom.dcmread(source, force=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    path = tmp_path / "rtstruct.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert ds.StudyID == ds.StructureSetLabel == ds.StructureSetName == "sep30"
    store, out = new_store("source"), new_store("out")
    assert ingested(store, [path]).ok
    _run(store, out)
    assert found(["sep30", "Phantom30sep"], everything(out, tmp_path / "export")) == []
