"""De-identification into a new store appears whole or not at all; an instance that cannot
be de-identified is reported and left out (issue 11, defect 13)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import app
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.errors import NotAStoreError
from dicomweb_archive.ops import anonymize as anonymize_module
from dicomweb_archive.ops.ingest import write_streams as original
from dicomweb_archive.ops.verify import verify
from tests.factory import make_ct, uid, write_ct, write_series
from tests.stores import ingested

runner = CliRunner()


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, normalise_argv(list(args)))
    return result.exit_code, result.output


def test_an_instance_that_cannot_be_deidentified_is_left_out(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Defect 13: an instance that cannot be de-identified (its patient missing from the
    --map) is reported (one line, exit 1) and left out; every other instance is de-identified
    into a complete store that verifies clean."""
    source, out = new_store("source"), new_store("out")
    files = write_series(tmp_path / "in", count=3, patient_id="P1")
    files.append(
        write_ct(
            tmp_path / "other.dcm", study=uid(51), series=uid(52), sop=uid(53), patient_id="P5"
        )
    )
    assert ingested(source, files).ok
    table = tmp_path / "map.csv"
    table.write_text("P1,SUBJECT-1\n")
    code, output = _cli(
        "update", "-o", source, "-anonymize", "--all", "--out", out, "--map", str(table)
    )
    assert code == 1, output
    assert output.count("error:") == 1 and uid(53) in output and "cannot be de-identified" in output
    assert "3 instances de-identified" in output
    with Archive.open(out) as archive:
        assert archive.config.complete
        assert archive.index.counts()["instances"] == 3
        report = verify(archive)
    assert report.ok and report.complete, report.findings


def test_an_interrupted_deidentification_leaves_no_store(
    tmp_path: Path, new_store: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 13: a run stopped half-way leaves a store that nothing opens (not a half-built
    store that looks complete); the next run into the same place replaces it."""
    source, out = new_store("source"), new_store("out")
    files = write_series(tmp_path / "in", count=3, patient_id="P1")
    assert ingested(source, files).ok

    def stops(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise KeyboardInterrupt  # after the instances are in, before the store is whole

    monkeypatch.setattr(anonymize_module, "write_streams", stops)
    code, output = _cli("update", "-o", source, "-anonymize", "--all", "--out", out)
    assert code == 130, output
    with pytest.raises(NotAStoreError, match="left incomplete"):
        Archive.open(out)
    code, output = _cli("studies", "-o", out)
    assert code == 2 and "left incomplete" in output
    monkeypatch.setattr(anonymize_module, "write_streams", original)
    code, output = _cli("update", "-o", source, "-anonymize", "--all", "--out", out)
    assert code == 0, output
    with Archive.open(out) as archive:
        assert archive.index.counts()["instances"] == 3
        report = verify(archive)
    assert report.ok and report.complete, report.findings


def test_a_failure_names_the_instance_once(tmp_path: Path, new_store: Callable[[str], str]) -> None:
    """A value the instance's character set cannot hold (a mapped Patient's Name in Greek, an
    ISO_IR 100 instance with Latin-1 text) fails the instance with one error line that names
    its SOP Instance UID once, and the element."""
    source, out = new_store("source"), new_store("out")
    ds = make_ct(
        study=uid("64.1"), series=uid("64.2"), sop=uid("64.3"), patient_name="Müller^Jürgen"
    )
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    assert ingested(source, [tmp_path / "a.dcm"]).ok
    table = tmp_path / "map.csv"
    table.write_text("PAT001,SUBJ-1,Ψ^Ω\n", encoding="utf-8")
    code, output = _cli(
        "update", "-o", source, "-anonymize", "--all", "--out", out, "--map", str(table)
    )
    assert code == 1, output
    (line,) = [line for line in output.splitlines() if line.startswith("error:")]
    assert line.count(uid("64.3")) == 1 and "(0010,0010)" in line, line
    assert line.startswith(f"error: SOPInstanceUID {uid('64.3')}: cannot be de-identified: the ")
