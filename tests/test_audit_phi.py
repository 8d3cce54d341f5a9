"""No patient data in default error lines or the audit log: a -patient target is recorded by
a keyed hash of the PatientID; -v shows the value on the terminal only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import UPDATE_APP, app
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.dicom.edit import encode_value
from dicomweb_archive.errors import EditRefusedError
from dicomweb_archive.ops.delete import apply_delete, plan_delete
from dicomweb_archive.ops.update import apply_update, plan_update
from dicomweb_archive.store.changes import change_ids
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.storage import from_json_gz
from tests.factory import uid, write_series
from tests.stores import ingested

runner = CliRunner()


def _store(tmp_path: Path, store: str) -> str:
    files = [
        *write_series(tmp_path / "a", count=1, patient_id="SECRET-7", study=uid(41)),
        *write_series(tmp_path / "b", count=1, patient_id="OTHER-8", study=uid(42)),
    ]
    assert ingested(store, files).ok
    return store


def test_audit_target_is_a_keyed_hash(tmp_path: Path, store: str) -> None:
    """Audit rows and change records name a patient by one key per patient, never its ID."""
    _store(tmp_path, store)
    with Archive.open(store) as archive:
        for patient in ("SECRET-7", "SECRET-7", "OTHER-8"):
            plan = plan_update(archive, "patient", patient, ["PatientSex=F"])
            apply_update(archive, plan)
        apply_delete(archive, plan_delete(archive, "patient", "OTHER-8"))
        records = [
            from_json_gz(archive.storage.get(StoreKeys().change(cid)))
            for cid in change_ids(archive.storage)
        ]
    audit = runner.invoke(app, ["audit", "-o", store])
    assert audit.exit_code == 0, audit.output
    rows = [json.loads(line) for line in audit.stdout.splitlines()]
    assert len(rows) == 4 and "SECRET-7" not in audit.stdout and "OTHER-8" not in audit.stdout
    assert not any("SECRET-7" in json.dumps(r) or "OTHER-8" in json.dumps(r) for r in records)
    by_study: dict[str, set[str]] = {}
    for row in rows:
        assert row["target"].startswith("PatientID-key:") and len(row["target"]) == 34
        by_study.setdefault(row["study_instance_uid"], set()).add(row["target"])
    assert all(len(targets) == 1 for targets in by_study.values())
    assert by_study[uid(41)] != by_study[uid(42)]


def test_unknown_patient_is_not_named_without_verbose(tmp_path: Path, store: str) -> None:
    """`-patient ID` of no study: the error line does not repeat the ID; -v adds it."""
    _store(tmp_path, store)
    args = normalise_argv(["-o", store, "-patient", "DOE-NOSUCH", "PatientSex=F"])
    result = runner.invoke(UPDATE_APP, args)
    assert result.exit_code == 1, result.output
    assert "no study of the PatientID given" in result.stderr
    assert "DOE-NOSUCH" not in result.stderr
    verbose = runner.invoke(UPDATE_APP, [*args, "-v"])
    assert verbose.exit_code == 1 and "DOE-NOSUCH" in verbose.stderr


def test_unencodable_value_is_not_repeated() -> None:
    """A value the character set cannot hold is refused without echoing it (phi has it)."""
    with pytest.raises(EditRefusedError) as refused:
        encode_value("LO", "Ωmega-DOE", ["iso8859"], little=True)
    assert "cannot be written in the character set" in str(refused.value)
    assert "Ωmega-DOE" not in str(refused.value) and "Ωmega-DOE" in refused.value.phi
