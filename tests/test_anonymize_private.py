"""Retain Safe Private (PS3.15 E.3.10, Table E.3.10-1): with ``--retain retain-safe-private`` the
private attributes the table lists for their block's private creator are kept with that
creator, every other private attribute is removed; without it, all are (issue 14, part 3)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import app
from dicomweb_archive.model.deid import Profile, safe_private
from dicomweb_archive.model.deid_report import build_report, report_summary
from dicomweb_archive.model.standard_tables import SAFE_PRIVATE_EDITION
from dicomweb_archive.ops.anonymize import anonymize
from tests.deid_helpers import EVERYTHING, everything, exported, found, read_all
from tests.stores import ingested

runner = CliRunner()
#: values of private attributes that are not safe (or not under their listed creator)
UNSAFE = [
    "UNSAFE-SAME-CREATOR",
    "UNSAFE-OTHER-CREATOR",
    "ACME PRIVATE 77",
    "33.25",
    "ACME ONLY UNSAFE",
    "UNSAFE-BLOCK",
    "UNSAFE-IN-ITEM",
]
GE_ACQUISITION = "GEMS_ACQU_01"
PHILIPS = "Philips Imaging DD 001"


def _private_file(path: Path) -> Path:
    """pydicom's CT_small with its private groups replaced by: Table Speed (0019,xx23) and an
    unsafe attribute under GEMS_ACQU_01, the same offset and an unsafe one under another
    creator of the same group; a safe attribute in block 12 of group 0043 (GEMS_PARM_01); a
    block that keeps nothing (0045); a safe private sequence (Philips Display Shutter
    Sequence, 2001,xx69) whose item holds a safe and an unsafe private attribute."""
    testdata = get_testdata_file("CT_small.dcm", download=False)
    assert isinstance(testdata, str)
    ds = pydicom.dcmread(testdata)
    ds.remove_private_tags()
    ds.add_new(0x00190010, "LO", GE_ACQUISITION)
    ds.add_new(0x00191023, "DS", "12.5")  # Table Speed: safe
    ds.add_new(0x00191001, "LO", "UNSAFE-SAME-CREATOR")
    ds.add_new(0x00190011, "LO", "ACME PRIVATE 77")
    ds.add_new(0x00191123, "DS", "33.25")  # offset 23 under another creator: not safe
    ds.add_new(0x00191101, "LO", "UNSAFE-OTHER-CREATOR")
    ds.add_new(0x00430012, "LO", "GEMS_PARM_01")
    ds.add_new(0x00431239, "IS", "1000")  # 1st value is B Value: safe
    ds.add_new(0x00450010, "LO", "ACME ONLY UNSAFE")
    ds.add_new(0x00451002, "LO", "UNSAFE-BLOCK")  # offset 02 is safe for GEMS_HELIOS_01 only
    item = Dataset()
    item.add_new(0x20010010, "LO", PHILIPS)
    item.add_new(0x20011046, "CS", "SOLID")  # Graphic Line Style: safe
    item.add_new(0x20011099, "LO", "UNSAFE-IN-ITEM")
    ds.add_new(0x20010010, "LO", PHILIPS)
    ds.add_new(0x20011069, "SQ", [item])  # Display Shutter Sequence: safe
    ds.save_as(path, enforce_file_format=True)
    return path


def _anonymized(tmp_path: Path, new_store: Callable[[str], str], *retain: str) -> Dataset:
    source, out = new_store("source"), new_store("out")
    (tmp_path / "in").mkdir()
    assert ingested(source, [_private_file(tmp_path / "in" / "private.dcm")]).ok
    options = [arg for option in retain for arg in ("--retain", option)]
    result = runner.invoke(app, ["anonymize", "-o", source, "--all", "--out", out, *options])
    assert result.exit_code == 0, result.output
    assert found(UNSAFE, everything(out, tmp_path / "export")) == []
    (ds,) = read_all(exported(out, tmp_path / "again"))
    return ds


def _codes(ds: Dataset) -> set[str]:
    return {str(item.CodeValue) for item in ds.DeidentificationMethodCodeSequence}


def test_retain_safe_private_keeps_listed_attributes_and_their_creators(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """With --retain retain-safe-private, exactly the listed attributes (by creator and offset, in a
    kept sequence's item too) and their blocks' creators remain; 113111 is recorded."""
    ds = _anonymized(tmp_path, new_store, "retain-safe-private")
    kept = {int(e.tag) for e in ds if e.tag.is_private}
    assert kept == {0x00190010, 0x00191023, 0x00430012, 0x00431239, 0x20010010, 0x20011069}
    assert ds[0x00190010].value == GE_ACQUISITION
    assert float(ds[0x00191023].value) == 12.5
    assert ds[0x00430012].value == "GEMS_PARM_01"
    (item,) = ds[0x20011069].value
    assert {int(e.tag) for e in item} == {0x20010010, 0x20011046}
    assert item[0x20011046].value == "SOLID"
    assert "113111" in _codes(ds)


def test_without_the_option_every_private_attribute_goes(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Without --retain retain-safe-private, safe private attributes are removed like the others."""
    ds = _anonymized(tmp_path, new_store)
    assert [e.tag for e in ds if e.tag.is_private] == []
    assert "113111" not in _codes(ds)


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ({"00190010": {"vr": "LO", "Value": ["GEMS_ACQU_01 "]}, "00191024": {"vr": "DS"}}, 2),
        ({"00190011": {"vr": "LO", "Value": ["GEMS_ACQU_01"]}, "00191024": {"vr": "DS"}}, 0),
        ({"00191024": {"vr": "DS"}}, 0),
        ({"00190010": {"vr": "LO", "Value": ["GEMS_ACQU_01"]}, "00191002": {"vr": "SL"}}, 0),
    ],
)
def test_safe_private_matches_creator_of_the_block(
    dataset: dict[str, dict[str, object]], expected: int
) -> None:
    """An attribute is safe only under the creator of its own block (PS3.5 7.8.1), trailing
    padding of the creator ignored; without a creator it is not safe."""
    assert len(safe_private(dataset)) == expected


def test_report_names_the_safe_private_table() -> None:
    """The curator's report names the edition and source of Table E.3.10-1 and code 113111."""
    profile = Profile(key=b"k", options=frozenset({"retain-safe-private"}))
    report = build_report(profile, applied=[], review={}, failed={}, created="now")
    assert report["safe_private_edition"] == SAFE_PRIVATE_EDITION
    assert ["113111", "DCM", "Retain Safe Private Option"] in report["method_codes"]
    assert f"safe private attributes: {SAFE_PRIVATE_EDITION}" in report_summary(report)


@pytest.mark.parametrize(
    ("temporal", "date", "time"),
    [
        (None, "19000101", "000000"),
        ("retain-full-dates", "19870601", "101112"),
        ("retain-modified-dates", "shifted", "101112"),
    ],
    ids=["basic", "full-dates", "modified-dates"],
)
def test_kept_safe_private_dates_follow_the_temporal_option(
    temporal: str | None,
    date: str,
    time: str,
    tmp_path: Path,
    new_store: Callable[[str], str],
) -> None:
    """A date and a time in safe private attributes (GEMS_ACQU_01 offsets 23 and 24, written
    with VR DA and TM) kept by Retain Safe Private follow the temporal option like any date:
    dummies without one (the original date found nowhere in the output), kept with Full Dates,
    the date shifted by the patient's offset with Modified Dates."""
    testdata = get_testdata_file("CT_small.dcm", download=False)
    assert isinstance(testdata, str)
    ds = pydicom.dcmread(testdata)
    ds.remove_private_tags()
    ds.add_new(0x00190010, "LO", GE_ACQUISITION)
    ds.add_new(0x00191023, "DA", "19870601")
    ds.add_new(0x00191024, "TM", "101112")
    source, out = new_store("source"), new_store("out")
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "dated.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert ingested(source, [path]).ok
    options = frozenset({"retain-safe-private", *([temporal] if temporal else [])})
    with Archive.open(source) as archive:
        report = anonymize(archive, EVERYTHING, out, key=b"private-key", options=options)
    assert report.ok, [r.error for r in report.results]
    (result,) = read_all(exported(out, tmp_path / "export"))
    if date == "shifted":
        profile = Profile(b"private-key", options)
        date = profile.shift("DA", "19870601", profile.date_offset(str(ds.PatientID)))
        assert date != "19870601"
    assert (result[0x00191023].value, result[0x00191024].value) == (date, time)
    if temporal is None:
        assert found(["19870601", "101112"], everything(out, tmp_path / "all")) == []
