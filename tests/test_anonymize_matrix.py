"""The PS3.15 Table E.1-1 matrix (issue 14, Done when): every row of the shipped table
(model/confidentiality_profile.tsv) present in the input is handled per its action, under the
Basic Profile and under each option its option columns define, checked on the exported P10
file. The expected action is derived here from the table file itself, not from
``Profile.action``.

The input is one instance holding an attribute for nearly every row (its dictionary VR, a
value of that VR), plus an overlay. Rows the input cannot hold as such: File Meta rows other
than Media Storage SOP Instance UID, curve rows (50xx, retired, VR per element), the private
attribute row (test_anonymize_private.py), Patient ID and Patient's Name (keyed pseudonyms,
test_anonymize_patients.py), and a few whose dictionary VR is not a single VR. The Clean
Graphics column (cleanGraphOpt) is an option not offered, so its rows keep their Basic
Profile action under every option here. Rows whose option columns neither source gives ("?",
docs/spec/deidentification.md) are checked against their Basic Profile action, except dates
and times, which follow the temporal option (kept with Full Dates, shifted with Modified
Dates). Where two chosen options' columns disagree (Retain Device Identity K, Modified Dates
C), the more protective action is expected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import dicomweb_archive.model
from dicomweb_archive import Archive
from dicomweb_archive.errors import UsageError
from dicomweb_archive.model.deid import DUMMY, OPTIONS, Profile
from dicomweb_archive.ops.anonymize import anonymize
from tests import stores
from tests.deid_helpers import EVERYTHING, exported
from tests.factory import make_ct, uid
from tests.stores import ingested

KEY = b"matrix-key"
TABLE = Path(dicomweb_archive.model.__file__).parent / "confidentiality_profile.tsv"
CHOICES = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}
TEMPORAL = {"DA", "DT", "TM"}
TEXT_VRS = {"UI", "PN", "LO", "SH", "LT", "ST", "UT", "UC", "AT", "SQ"}
NUMERIC = {"DS", "IS", "FD", "FL", "SL", "SS", "UL", "US", "SV", "UV"}
#: set by the test input (they make it an instance) or not attributes of a data set
SKIPPED = {0x00100010, 0x00100020}
#: one value per VR (numbers and binary values of the VR's size)
VALUES: dict[str, Any] = {
    "AE": "ORIGAE",
    "AS": "045Y",
    "CS": "ORIGCODE",
    "DA": "20190517",
    "DS": "1.5",
    "DT": "20190517101112",
    "FD": 1.5,
    "FL": 1.5,
    "IS": "7",
    "SL": 3,
    "SS": 3,
    "SV": 3,
    "TM": "101112",
    "UL": 3,
    "US": 3,
    "UV": 3,
    "OB": b"\x01\x02",
    "OD": b"\x01" * 8,
    "OF": b"\x01" * 4,
    "OL": b"\x01" * 4,
    "OV": b"\x01" * 8,
    "OW": b"\x01\x02",
    "UN": b"\x01\x02",
    "UR": "http://example.org/orig",
}


def _table() -> dict[int, tuple[str, dict[str, str] | None]]:
    """Table rows by tag (repeating groups at their first group): (Basic Profile action,
    option column -> action, or None when the row has no option columns here)."""
    rows: dict[int, tuple[str, dict[str, str] | None]] = {}
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            continue
        tag, basic, columns = line.split("\t")
        if not all(c in "0123456789ABCDEFx" for c in tag):
            continue  # the private attribute row
        cells = dict(c.split("=") for c in columns.split(",") if "=" in c)
        rows[int(tag.replace("x", "0"), 16)] = (basic, None if columns == "?" else cells)
    return rows


ROWS = _table()


def expected(tag: int, vr: str, option: str | None) -> str:
    """The action Table E.1-1 gives the attribute under ``option`` (None: Basic Profile)."""
    basic, columns = ROWS[tag]
    if columns is None:
        if vr in TEMPORAL and option == "retain-full-dates":
            return "K"
        if vr in TEMPORAL and option == "retain-modified-dates":
            return "C"
        return CHOICES.get(basic, basic)
    if option is not None and OPTIONS[option] in columns:
        return columns[OPTIONS[option]]
    return CHOICES.get(basic, basic)


def expected_combined(tag: int, vr: str, options: frozenset[str]) -> str:
    """The action under a combination of options: the action of the chosen options' columns,
    else the Basic Profile's. Where they disagree (only Retain Device Identity K against
    Modified Dates C, on calibration and manufacture dates and times), C: the date is shifted
    with the others."""
    basic, columns = ROWS[tag]
    if columns is None:
        temporal = [o for o in ("retain-full-dates", "retain-modified-dates") if o in options]
        return expected(tag, vr, temporal[0] if temporal else None)
    chosen = {columns[OPTIONS[o]] for o in options if OPTIONS[o] in columns}
    if len(chosen) > 1:
        assert chosen == {"K", "C"}, (hex(tag), chosen)
        assert {"retain-device-identity", "retain-modified-dates"} <= options, hex(tag)
        return "C"
    return chosen.pop() if chosen else CHOICES.get(basic, basic)


#: every combination of the options but those with both temporal options (they exclude each
#: other: ``Profile`` refuses them)
COMBINATIONS = [
    frozenset(chosen)
    for size in range(len(OPTIONS) + 1)
    for chosen in combinations(sorted(OPTIONS), size)
    if not {"retain-full-dates", "retain-modified-dates"} <= set(chosen)
]


def _value(tag: int, vr: str) -> Any:
    if vr == "UI":
        return uid(f"44.{tag}")
    if vr == "PN":
        return f"ORIGNAME^T{tag:08X}"
    if vr in TEXT_VRS - {"AT", "SQ"}:
        return f"ORIG{tag:08X}"
    if vr == "AT":
        return 0x00100010
    if vr == "SQ":
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator = "X1", "99TEST"
        item.CodeMeaning = f"ORIG{tag:08X}"
        return Sequence([item])
    return VALUES[vr]


def _rich(path: Path) -> tuple[Path, dict[int, str]]:
    """A CT with an attribute for every row it can hold; returns it and tag -> VR added."""
    ds = make_ct(study=uid("44.1"), series=uid("44.2"), sop=uid("44.3"))
    added: dict[int, str] = {}
    for tag in sorted(ROWS):
        group = tag >> 16
        if tag in SKIPPED or group in (0x0000, 0x0002, 0x5000) or tag in ds:
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if vr not in VALUES and vr not in TEXT_VRS:
            continue  # "US or SS" and the like
        ds.add_new(tag, vr, _value(tag, vr))
        added[tag] = vr
    for tag in (0x0020000D, 0x0020000E, 0x00080018, 0x00080020, 0x00080030, 0x00080050):
        added[tag] = dictionary_VR(tag)  # the instance's own, in the table too
    ds.save_as(path, enforce_file_format=True)
    return path, added


def _check(action: str, vr: str, original: Any, element: Any, option: str | None) -> str:
    """What is wrong with the output ``element`` (None: absent) for ``action`` ("" when
    nothing)."""
    value: Any = None if element is None else element.value
    if action == "D" and vr == "SQ":
        action = "Z"  # no dummy item: emptied
    if action in ("D", "C") and vr not in DUMMY and vr != "SQ":
        action = "X"  # no dummy value for this VR: removed
    if action == "C" and vr in TEMPORAL and option == "retain-modified-dates":
        if vr == "TM":
            return "" if value == original else f"time changed: {value!r}"
        ok = isinstance(value, str) and value != original and value[:8].isdigit()
        return "" if ok else f"not shifted: {value!r}"
    if action == "C" and vr == "SQ":
        return "" if element is not None and len(value) == len(original) else "items lost"
    if action == "C":
        action = "D"
    if action == "X":
        return "" if element is None else "not removed"
    if element is None:
        return "missing"
    if action == "Z":
        return "" if value in (None, "", b"") or (vr == "SQ" and len(value) == 0) else "not empty"
    if action == "K":
        return "" if value == original else f"changed: {value!r}"
    if action == "U" and vr == "UI":
        return "" if value == Profile(KEY).uid(str(original)) else f"not remapped: {value!r}"
    if action == "U":
        return ""  # a sequence of references: its UIDs remapped inside (test_anonymize.py)
    if vr in NUMERIC:
        return "" if float(value) == 0 else f"not a dummy: {value!r}"
    text = str(value)
    return "" if text == DUMMY[vr] else f"not the dummy: {text!r}"


@pytest.fixture(scope="module")
def source(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[int, str], Dataset]]:
    """The rich input ingested once into a store of the chosen backend."""
    where = tmp_path_factory.mktemp("matrix")
    path, added = _rich(where / "rich.dcm")
    store = stores.location(where, "source")
    assert ingested(store, [path]).ok
    yield store, added, pydicom.dcmread(path)
    stores.forget(store)


@pytest.mark.parametrize("option", [None, *OPTIONS], ids=["basic", *OPTIONS])
def test_every_table_row_per_option(
    option: str | None,
    source: tuple[str, dict[int, str], Dataset],
    new_store: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Each Table E.1-1 row present in the input gets the action the table's column for the
    option (or the Basic Profile) gives it, checked per action code on the exported file."""
    store, added, original = source
    out = new_store("out")
    options = frozenset() if option is None else frozenset({option})
    with Archive.open(store) as archive:
        report = anonymize(archive, EVERYTHING, out, key=KEY, options=options)
    assert report.ok, [r.error for r in report.results]
    (path,) = exported(out, tmp_path / "export")
    ds = pydicom.dcmread(path)
    wrong = {}
    counts: dict[str, int] = {}
    for tag, vr in added.items():
        action = expected(tag, vr, option)
        counts[action] = counts.get(action, 0) + 1
        problem = _check(action, vr, original[tag].value, ds.get(tag), option)
        if problem:
            wrong[f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword_for_tag(tag)} {action}"] = problem
    assert wrong == {}
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert len(added) > 500
    assert {"X", "Z", "D", "U"} <= counts.keys()
    if option in ("retain-uids", "retain-full-dates", "retain-device-identity"):
        assert counts["K"] > 5
    if option in ("clean-descriptors", "retain-modified-dates"):
        assert counts["C"] > 5


def test_every_option_combination_per_row() -> None:
    """All 384 combinations of the nine options: for every row of the table, the action the
    profile takes is the one its chosen options' columns give (else the Basic Profile's)."""
    assert len(COMBINATIONS) == 2**9 - 2**7
    rows = []
    for tag in ROWS:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if tag not in SKIPPED and len(vr) == 2:
            rows.append((tag, vr))
    assert len(rows) > 500
    for options in COMBINATIONS:
        profile = Profile(KEY, options)
        wrong = {
            f"{tag:08X}": (profile.action(tag, vr), expected_combined(tag, vr, options))
            for tag, vr in rows
            if profile.action(tag, vr) != expected_combined(tag, vr, options)
        }
        assert wrong == {}, sorted(options)


def test_the_temporal_options_exclude_each_other() -> None:
    """Full Dates and Modified Dates give every temporal row different actions: refused."""
    with pytest.raises(UsageError, match="exclude each other"):
        Profile(KEY, frozenset({"retain-full-dates", "retain-modified-dates"}))
    with pytest.raises(UsageError, match="unknown"):
        Profile(KEY, frozenset({"retain-everything"}))


@pytest.mark.parametrize(
    "options",
    [
        frozenset(OPTIONS) - {"retain-modified-dates"},
        frozenset(OPTIONS) - {"retain-full-dates"},
        frozenset({"clean-descriptors", "retain-patient-characteristics", "retain-uids"}),
    ],
    ids=["all-with-full-dates", "all-with-modified-dates", "three"],
)
def test_combined_options_on_the_exported_file(
    options: frozenset[str],
    source: tuple[str, dict[int, str], Dataset],
    new_store: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Options combined, end to end: each row present is handled per the combined action,
    checked on the exported P10 file."""
    store, added, original = source
    out = new_store("out")
    with Archive.open(store) as archive:
        report = anonymize(archive, EVERYTHING, out, key=KEY, options=options)
    assert report.ok, [r.error for r in report.results]
    (path,) = exported(out, tmp_path / "export")
    ds = pydicom.dcmread(path)
    dates = "retain-modified-dates" if "retain-modified-dates" in options else None
    wrong = {}
    for tag, vr in added.items():
        action = expected_combined(tag, vr, options)
        problem = _check(action, vr, original[tag].value, ds.get(tag), dates)
        if problem:
            wrong[f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword_for_tag(tag)} {action}"] = problem
    assert wrong == {}
