"""The de-identification report a curator signs (issue 14, part 2, item 3): JSON and a
readable summary in the output store's private folder, its path printed; no original value
in it, the key only as a hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import app
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.model.deid import Profile
from dicomweb_archive.model.standard_tables import EDITION
from dicomweb_archive.ops.anonymize import anonymize
from dicomweb_archive.store.reports import REPORTS
from tests import stores
from tests.deid_helpers import EVERYTHING, found
from tests.factory import uid, write_ct
from tests.stores import ingested, objects

KEY = b"report-key-0123456789"
runner = CliRunner()
ORIGINALS = ["REPORT-PATIENT-1", "HUBERTSON^OLGA", "Clinic Of Origin", "SCANNER-7", "19490101"]


def _source(tmp_path: Path, store: str) -> list[str]:
    """Two CTs of one patient (one with Burned In Annotation YES, one NO); their SOP UIDs."""
    sops = [uid("88.3"), uid("88.4")]
    files = []
    for sop, burned in zip(sops, ["YES", "NO"], strict=True):
        path = write_ct(
            tmp_path / "in" / f"{sop}.dcm",
            study=uid("88.1"),
            series=uid("88.2"),
            sop=sop,
            patient_id=ORIGINALS[0],
            patient_name=ORIGINALS[1],
        )
        ds = pydicom.dcmread(path)
        ds.InstitutionName, ds.StationName, ds.PatientBirthDate = ORIGINALS[2:]
        ds.BurnedInAnnotation = burned
        ds.add_new(0x00090010, "LO", "ACME")
        ds.add_new(0x00091001, "LO", "PRIVATE")
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    assert ingested(store, files).ok
    return sops


def _reports(store: str) -> dict[str, bytes]:
    return {k: v for k, v in objects(store, private=True).items() if k.startswith(REPORTS)}


def test_report_per_attribute_without_phi(tmp_path: Path, new_store: Callable[[str], str]) -> None:
    """The report names each attribute changed (tag, keyword, action, instance count), the
    instances to review by their new UID and why, the key's SHA-256, the edition and the
    options; no original value, UID or the key itself is in it."""
    store, out = new_store("source"), new_store("out")
    sops = _source(tmp_path, store)
    options = frozenset({"retain-modified-dates"})
    with Archive.open(store) as archive:
        result = anonymize(archive, EVERYTHING, out, key=KEY, options=options)
    assert result.ok
    reports = _reports(out)
    (json_key,) = [k for k in reports if k.endswith(".json")]
    (text_key,) = [k for k in reports if k.endswith(".txt")]
    assert result.report_path.endswith(text_key)
    report: dict[str, Any] = json.loads(reports[json_key])
    rows = {(a["tag"], a["keyword"], a["action"]): a["instances"] for a in report["attributes"]}
    assert rows[("(0010,0020)", "PatientID", "keyed pseudonym")] == 2
    assert rows[("(0008,0018)", "SOPInstanceUID", "UID replaced")] == 2
    assert rows[("(0009,1001)", "(private)", "removed")] == 2
    assert rows[("(0008,1010)", "StationName", "dummy value")] == 2
    assert rows[("(0008,0020)", "StudyDate", "shifted")] == 2
    assert report["key_sha256"] == hashlib.sha256(KEY).hexdigest()
    assert report["table_edition"] == EDITION
    assert report["options"] == ["retain-modified-dates"]
    assert report["longitudinal_temporal_information_modified"] == "MODIFIED"
    assert report["instances_deidentified"] == 2
    (review,) = report["instances_to_review"]
    assert review["sop_instance_uid"] == Profile(KEY).uid(sops[0])
    assert "(0028,0301)" in review["reasons"][0]
    text = reports[text_key].decode()
    assert f"key SHA-256: {report['key_sha256']}" in text
    assert "(0010,0020) PatientID: keyed pseudonym, 2" in text
    secrets = [*ORIGINALS, *sops, uid("88.1"), uid("88.2"), KEY.decode()]
    assert found(secrets, list(reports.values())) == []


def test_cli_prints_the_summary_path(tmp_path: Path, new_store: Callable[[str], str]) -> None:
    """dicomweb-archive anonymize prints where the summary is; in place, the report goes
    into the store itself, named by the change. Hard links are mentioned only where both
    stores are directories (not on S3 or in memory, nor in place)."""
    store, out = new_store("source"), new_store("out")
    _source(tmp_path, store)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    args = ["anonymize", "-o", store, "--all", "--out", out, "--key-file", str(key_file)]
    result = runner.invoke(app, normalise_argv(args))
    assert result.exit_code == 0, result.output
    (text_key,) = [k for k in _reports(out) if k.endswith(".txt")]
    assert f"de-identification report: {out.rstrip('/')}/{text_key}" in result.stdout
    assert ("shared by hard link" in result.stdout) == (stores.BACKEND == "local")
    args = ["anonymize", "-o", store, "--all", "--in-place", "--key-file", str(key_file)]
    result = runner.invoke(app, normalise_argv(args))
    assert result.exit_code == 0, result.output
    assert "hard link" not in result.stdout
    (text_key,) = [k for k in _reports(store) if k.endswith(".txt")]
    assert f"de-identification report: {store.rstrip('/')}/{text_key}" in result.stdout
    assert "change " + text_key.rsplit("/", 1)[1].removesuffix(".txt") in result.stdout
