"""Dates and times under de-identification (issue 14, item 1): PS3.15 Table E.1-1 of the
current edition, and every DA, DT and TM attribute the table does not name, follow the chosen
temporal option, in sequences too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomweb_archive import Archive
from dicomweb_archive.model.deid import Profile
from dicomweb_archive.model.standard_tables import CONFIDENTIALITY_PROFILE, EDITION
from dicomweb_archive.ops.anonymize import anonymize
from tests.deid_helpers import EVERYTHING, everything, exported, found, read_all
from tests.stores import ingested

KEY = b"date-key"
TEMPORAL = ("DA", "DT", "TM")


def _dated(path: Path) -> Path:
    """pydicom's CT_small with dates the 2020b table lacked, dates no table row names, and a
    kept sequence holding dates."""
    source = get_testdata_file("CT_small.dcm", download=False)
    assert isinstance(source, str)
    ds = pydicom.dcmread(source)
    ds.PatientBirthDate = "19550923"
    ds.InstanceCreationDate = "19880412"  # (0008,0012), in the table since after 2020b
    ds.InstanceCreationTime = "101112"  # (0008,0013)
    ds.ExpirationDateTime = "19990817235959"  # (0008,0416): not in Table E.1-1
    ds.DateOfGainCalibration = "19770605"  # (0014,3076): not in Table E.1-1
    ds.TimeOfGainCalibration = "134455"
    item = Dataset()
    item.DateOfGainCalibration = "19660708"
    item.TimeOfGainCalibration = "151617"
    item.RadiopharmaceuticalStartDateTime = "19660708151617"
    ds.RadiopharmaceuticalInformationSequence = Sequence([item])  # (0054,0016): kept
    ds.save_as(path, enforce_file_format=True)
    return path


def _temporal_values(ds: Dataset) -> dict[str, str]:
    """Keyword -> value of every DA, DT and TM element, nested ones included."""
    return {e.keyword: str(e.value) for e in ds.iterall() if e.VR in TEMPORAL and e.value}


def _run(store: str, out: str, **kwargs: Any) -> None:
    with Archive.open(store) as archive:
        report = anonymize(archive, EVERYTHING, out, key=KEY, **kwargs)
    assert report.ok, [r.error for r in report.results]


@pytest.fixture
def dated(tmp_path: Path, new_store: Callable[[str], str]) -> tuple[str, Path]:
    store = new_store("source")
    file = _dated(tmp_path / "dated.dcm")
    assert ingested(store, [file]).ok
    return store, file


def test_current_edition_names_instance_creation_date() -> None:
    """The shipped Table E.1-1 is the current edition's: it names Instance Creation Date and
    Time, which the 2020b edition did not."""
    assert "2026c" in EDITION
    assert CONFIDENTIALITY_PROFILE["00080012"][0] == "X/D"
    assert CONFIDENTIALITY_PROFILE["00080013"][0] == "X/Z/D"


def test_no_original_date_or_time_survives(
    dated: tuple[str, Path], tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Under the basic profile no original value of any DA, DT or TM element is left in the
    metadata, info records, index or exported P10 bytes."""
    store, file = dated
    out = new_store("out")
    _run(store, out)
    values = _temporal_values(pydicom.dcmread(file))
    assert len(values) >= 14
    assert found(sorted(set(values.values())), everything(out, tmp_path / "export")) == []


def test_modified_dates_shift_every_date(
    dated: tuple[str, Path], tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Retain Longitudinal Temporal Information with Modified Dates shifts every date (those
    no table row names and those in sequences included) by the patient's offset, and keeps
    times of day."""
    store, file = dated
    out = new_store("out")
    _run(store, out, options=frozenset({"retain-modified-dates"}))
    (ds,) = read_all(exported(out, tmp_path / "export"))
    profile = Profile(KEY)
    days = profile.date_offset(str(pydicom.dcmread(file).PatientID))
    assert ds.InstanceCreationDate == profile.shift("DA", "19880412", days) != "19880412"
    assert ds.DateOfGainCalibration == profile.shift("DA", "19770605", days)
    assert ds.ExpirationDateTime == profile.shift("DT", "19990817235959", days)
    (item,) = ds.RadiopharmaceuticalInformationSequence
    assert item.DateOfGainCalibration == profile.shift("DA", "19660708", days)
    assert item.TimeOfGainCalibration == "151617"
    assert ds.InstanceCreationTime == "101112"


def test_full_dates_keep_every_date(
    dated: tuple[str, Path], tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Retain Longitudinal Temporal Information Full Dates keeps the dates the table marks K
    for it and those it does not name; Patient's Birth Date still goes (no such column)."""
    store, _file = dated
    out = new_store("out")
    _run(store, out, options=frozenset({"retain-full-dates"}))
    (ds,) = read_all(exported(out, tmp_path / "export"))
    assert ds.InstanceCreationDate == "19880412"
    assert ds.StudyDate == "20040119"
    assert ds.ExpirationDateTime == "19990817235959"
    assert ds.RadiopharmaceuticalInformationSequence[0].DateOfGainCalibration == "19660708"
    assert ds.get("PatientBirthDate", "") == ""


@pytest.mark.parametrize(
    "case",
    [
        (frozenset(), "REMOVED", ["113100"]),
        (frozenset({"retain-modified-dates"}), "MODIFIED", ["113100", "113107"]),
        (
            frozenset({"retain-full-dates", "retain-device-identity"}),
            "UNMODIFIED",
            ["113100", "113106", "113109"],
        ),
    ],
    ids=["basic", "modified-dates", "full-dates"],
)
def test_longitudinal_temporal_information_modified(
    dated: tuple[str, Path],
    tmp_path: Path,
    new_store: Callable[[str], str],
    case: tuple[frozenset[str], str, list[str]],
) -> None:
    """(0028,0303) is REMOVED, MODIFIED or UNMODIFIED per the temporal option (PS3.15 E.3.6)
    and (0012,0064) lists the profile and exactly the options applied (CID 7050)."""
    options, term, codes = case
    store, _file = dated
    out = new_store("out")
    _run(store, out, options=options)
    (ds,) = read_all(exported(out, tmp_path / "export"))
    assert ds.LongitudinalTemporalInformationModified == term
    assert sorted(item.CodeValue for item in ds.DeidentificationMethodCodeSequence) == codes
    assert {item.CodingSchemeDesignator for item in ds.DeidentificationMethodCodeSequence} == {
        "DCM"
    }
