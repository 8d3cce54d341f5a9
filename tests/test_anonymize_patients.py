"""Patients stay apart under de-identification (issue 14, item 4): keyed pseudonyms for
Patient ID and Patient's Name by default, or the values of a patient map (``--map``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import app
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.errors import UsageError
from dicomweb_archive.model.deid import Profile, read_patient_map
from dicomweb_archive.ops.anonymize import anonymize
from tests.deid_helpers import EVERYTHING, exported, read_all
from tests.factory import make_ct, uid, write_series
from tests.stores import ingested, objects

KEY = b"patient-key"
runner = CliRunner()


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, normalise_argv(list(args)))
    return result.exit_code, result.output


@pytest.fixture
def two_patients(tmp_path: Path, new_store: Callable[[str], str]) -> str:
    """Two patients, one study of two instances each."""
    store = new_store("source")
    files = [
        *write_series(tmp_path / "a", count=2, study=uid("61.1"), patient_id="ALPHA-1"),
        *write_series(tmp_path / "b", count=2, study=uid("62.1"), patient_id="BRAVO-2"),
    ]
    assert ingested(store, files).ok
    return store


def _patients(store: str) -> set[tuple[str, str]]:
    with Archive.open(store) as archive:
        return {(r["patient_id"], r["patient_name"]) for r in archive.index.studies()}


def _run(store: str, out: str, **kwargs: Any) -> None:
    with Archive.open(store) as archive:
        report = anonymize(archive, EVERYTHING, out, **kwargs)
    assert report.ok, [r.error for r in report.results]


def test_two_patients_stay_two(two_patients: str, new_store: Callable[[str], str]) -> None:
    """Each original patient becomes one de-identified patient with a keyed pseudonym."""
    out = new_store("out")
    _run(two_patients, out, key=KEY)
    profile = Profile(KEY)
    assert _patients(out) == {profile.patient("ALPHA-1"), profile.patient("BRAVO-2")}
    with Archive.open(out) as archive:
        assert archive.index.counts()["patients"] == 2


def test_pseudonyms_stable_per_key(two_patients: str, new_store: Callable[[str], str]) -> None:
    """The same key gives the same pseudonyms in two runs; another key gives others."""
    one, two, other = new_store("one"), new_store("two"), new_store("other")
    _run(two_patients, one, key=KEY)
    _run(two_patients, two, key=KEY)
    _run(two_patients, other, key=b"another key")
    assert _patients(one) == _patients(two)
    assert not _patients(one) & _patients(other)
    assert all(p[0].startswith("DEID-") for p in _patients(other))


def test_map_applied(two_patients: str, tmp_path: Path, new_store: Callable[[str], str]) -> None:
    """--map gives each patient the mapped Patient ID and Patient's Name (name defaulting to
    the ID), in the index and the exported files."""
    out = new_store("out")
    table = tmp_path / "patients.csv"
    table.write_text(
        "original_patient_id,patient_id,patient_name\nALPHA-1,SUBJ-001,SUBJ^ONE\nBRAVO-2,SUBJ-002\n"
    )
    code, output = _cli(
        "update", "-o", two_patients, "-anonymize", "--all", "--out", out, "--map", str(table)
    )
    assert code == 0, output
    assert _patients(out) == {("SUBJ-001", "SUBJ^ONE"), ("SUBJ-002", "SUBJ-002")}
    datasets = read_all(exported(out, tmp_path / "export"))
    assert sorted(str(ds.PatientID) for ds in datasets) == ["SUBJ-001"] * 2 + ["SUBJ-002"] * 2


def test_patient_missing_from_map_is_an_error(
    two_patients: str, tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """A patient the map does not name is reported, one line per instance, and left out
    (exit 1); the mapped patient is de-identified."""
    out = new_store("out")
    table = tmp_path / "patients.csv"
    table.write_text("ALPHA-1,SUBJ-001\n")
    code, output = _cli(
        "update", "-o", two_patients, "-anonymize", "--all", "--out", out, "--map", str(table)
    )
    assert code == 1, output
    assert output.count("error:") == 2 and output.count("not in the patient map") == 2
    assert "BRAVO-2" not in output  # the original identifier is not echoed
    assert "2 instances de-identified" in output
    assert _patients(out) == {("SUBJ-001", "SUBJ-001")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A,X\nB,X\n", "line 2: Patient ID 'X' is given to 'A' already"),
        ("A,X\nA,Y\n", "line 2: Patient ID 'A' is mapped twice"),
        ("A\n", "line 1: give original Patient ID, new Patient ID"),
        ("A,BAD\\ID\n", "line 1: a Patient ID of at most 64 characters, no backslash"),
    ],
    ids=["collapse", "twice", "short", "backslash"],
)
def test_bad_map_refused(text: str, message: str) -> None:
    """A map that would merge patients, maps one twice, or has an unusable row is refused,
    naming the line."""
    with pytest.raises(UsageError, match=message.replace("\\", "\\\\")):
        read_patient_map(text, name="map.csv")


@pytest.fixture
def two_patients_to_review(tmp_path: Path, new_store: Callable[[str], str]) -> str:
    """Two patients, two ultrasound-like instances each (Burned In Annotation absent: to
    review for burned-in text)."""
    store = new_store("source")
    files = []
    for number, patient in enumerate(["ALPHA-1", "ALPHA-1", "BRAVO-2", "BRAVO-2"]):
        ds = make_ct(
            study=uid(f"63.{patient[0]}"),
            series=uid(f"63.{patient[0]}.2"),
            sop=uid(f"63.3.{number}"),
            patient_id=patient,
            modality="US",
            seed=number,
        )
        files.append(tmp_path / f"{number}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    assert ingested(store, files).ok
    return store


def test_counts_are_of_instances_written(
    two_patients_to_review: str, tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """The summary and the report count, as to review and with pixels cleaned, only the
    instances written: those of the patient the map leaves out failed and are in neither."""
    out = new_store("out")
    table, rules = tmp_path / "patients.csv", tmp_path / "rules.txt"
    table.write_text("ALPHA-1,SUBJ-001\n")
    rules.write_text("US | * | * | * : 0,0,4,4\n")
    code, output = _cli(
        "update", "-o", two_patients_to_review, "-anonymize", "--all", "--out", out,
        "--map", str(table), "--clean-pixels", str(rules),
    )  # fmt: skip
    assert code == 1, output
    assert "2 instances de-identified" in output
    assert "2 to review for burned-in annotation, 2 instances with pixels cleaned" in output
    assert output.count("warning: ") == 2
    (found,) = [
        json.loads(data)
        for key, data in objects(out, private=True).items()
        if "deidentification/" in key and key.endswith(".json")
    ]
    assert len(found["instances_to_review"]) == len(found["instances_pixels_cleaned"]) == 2
    assert len(found["instances_failed"]) == 2


def test_dry_run_says_what_the_run_would_do(
    two_patients_to_review: str, tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """With --map, --dry-run plans what the run does: the instances of the patient the map
    leaves out would fail (counted, their Patient ID not echoed; exit 1 as the run), the others
    would be de-identified, and only those are to review; in place nothing would change.
    Nothing is written."""
    out = new_store("out")
    table = tmp_path / "patients.csv"
    table.write_text("ALPHA-1,SUBJ-001\n")
    args = ["update", "-o", two_patients_to_review, "-anonymize", "--all", "--map", str(table)]
    code, output = _cli(*args, "--out", out, "--dry-run")
    assert code == 1, output
    assert "error: 2 instances would fail: their Patient ID is not in the patient map" in output
    assert "plan: 2 instances would be de-identified, 2 would fail, 2 to review" in output
    assert output.count("  review: ") == 2 and "BRAVO-2" not in output
    assert not Path(out).exists()
    code, output = _cli(*args, "--in-place", "--dry-run")
    assert code == 1 and "plan: nothing would change" in output, output
    code, output = _cli(*args, "--out", out)
    assert code == 1 and "2 instances de-identified" in output, output
