"""UIDs safe as key steps but not conformant to PS3.5 9.1 are stored, warned of and flagged."""

from __future__ import annotations

import hashlib
import http.client as httplib
import json
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import pytest
from pydicom import config
from pydicom.data import get_testdata_file
from pydicom.uid import UID
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import app
from dicomweb_archive.model.uid import is_conformant_uid, is_safe_uid
from dicomweb_archive.ops.delete import apply_delete, plan_delete
from dicomweb_archive.ops.export import Selection, export
from dicomweb_archive.ops.history import history
from dicomweb_archive.ops.reindex import reindex
from dicomweb_archive.ops.revert import apply_revert, plan_revert
from dicomweb_archive.ops.update import apply_update, plan_update
from dicomweb_archive.ops.verify import verify
from tests.factory import uid, write_ct
from tests.serving import serving
from tests.stores import index_dump, ingested, read_json
from tests.test_schema import _validator

runner = CliRunner()
#: a hexadecimal hash as Study Instance UID, as some archives write them (64 characters)
STUDY = hashlib.sha256(b"study").hexdigest()
SERIES = "1.2.826.0.1.3680043.8.498.0012"  # a component with leading zeros
SOP = "1.2.826.0.1.3680043.8.498.abc-1"


def _write_ct_small(path: Path, *, study: str, series: str, sop: str) -> Path:
    """pydicom's CT_small.dcm with the given UIDs, written as they are."""
    source = get_testdata_file("CT_small.dcm", download=False)
    assert isinstance(source, str)
    ds = pydicom.dcmread(source)
    previous = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
        ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
    finally:
        config.settings.writing_validation_mode = previous
    return path


@pytest.fixture
def lenient(tmp_path: Path, store: str) -> tuple[str, Path]:
    """A store with one instance of non-conformant UIDs and one conformant instance."""
    odd = _write_ct_small(tmp_path / "in" / "odd.dcm", study=STUDY, series=SERIES, sop=SOP)
    write_ct(tmp_path / "in" / "good.dcm", study=uid(1), series=uid(2), sop=uid(3))
    report = ingested(store, [tmp_path / "in"])
    assert report.ok, [r.error for r in report.results]
    return store, odd


def test_conformance_is_ps3_5_9_1() -> None:
    """Digits and dots, no leading zero in a component of several digits, at most 64."""
    assert is_conformant_uid("1.2.0.30") and is_conformant_uid("0")
    assert not is_conformant_uid(SERIES)
    assert not is_conformant_uid(STUDY)
    assert not is_conformant_uid("1." + "2" * 63)


def test_nonconformant_uids_are_stored_with_warnings(lenient: tuple[str, Path]) -> None:
    """A hash, leading zeros and letters are stored, one warning each, flagged in the index."""
    store, odd = lenient
    report = ingested(store, [odd])  # the same file again: unchanged, nothing refused
    assert [r.status for r in report.results] == ["unchanged"]
    rows = {row["sop_instance_uid"]: row for row in index_dump(store)["instances"]}
    assert rows[SOP]["nonconformant_uid"] == 1
    assert rows[uid(3)]["nonconformant_uid"] == 0
    assert rows[SOP]["study_instance_uid"] == STUDY


def test_warning_names_each_uid(tmp_path: Path, store: str) -> None:
    """The ingest report warns of each non-conformant UID of the file, and only of those."""
    odd = _write_ct_small(tmp_path / "odd.dcm", study=uid(5), series=SERIES, sop=SOP)
    (result,) = ingested(store, [odd]).results
    assert result.status == "stored"
    assert len(result.warnings) == 2
    assert "SeriesInstanceUID" in result.warnings[0] and "PS3.5 9.1" in result.warnings[0]
    assert "SOPInstanceUID" in result.warnings[1]


def test_flag_survives_reindex_and_shows_in_verify(lenient: tuple[str, Path]) -> None:
    """reindex derives the flag again; verify flags the instance without a difference."""
    store, _ = lenient
    before = index_dump(store)
    with Archive.open(store) as archive:
        reindex(archive)
        result = verify(archive)
    assert index_dump(store) == before
    assert result.ok and result.complete, result.findings
    flags = {v.sop: v.flags for v in result.instances}
    assert flags == {SOP: ("nonconformant-uid",), uid(3): ()}
    assert result.to_json()["flags"] == {"nonconformant-uid": 1}
    cli = runner.invoke(app, ["verify", "-o", store])
    assert cli.exit_code == 0, cli.output
    assert "1 instance flagged nonconformant-uid" in cli.stdout


def test_commands_take_nonconformant_uids(lenient: tuple[str, Path], tmp_path: Path) -> None:
    """Update, history, revert, export and delete work on such UIDs; export is byte-exact."""
    store, odd = lenient
    with Archive.open(store) as archive:
        apply_update(archive, plan_update(archive, "study", STUDY, ["StudyDescription=X"]))
        apply_update(archive, plan_update(archive, "instance", SOP, ["InstanceNumber=7"]))
        assert [e["revision"] for e in history(archive, SOP)] == [1, 2]
        apply_revert(archive, plan_revert(archive, SOP, 0))
        out = export(archive, Selection(study=STUDY, series=SERIES), out=tmp_path / "o")
        assert out.ok
        assert Path(out.items[0].name).read_bytes() == odd.read_bytes()
        assert Path(out.items[0].name).relative_to(tmp_path / "o").parts == (
            STUDY,
            SERIES,
            f"{SOP}.dcm",
        )
        assert verify(archive).ok
        apply_delete(archive, plan_delete(archive, "study", STUDY), reason="test")
        assert verify(archive).ok
    cli = runner.invoke(app, ["history", "-o", store, SOP])
    assert cli.exit_code == 0, cli.output
    assert [r["study_instance_uid"] for r in index_dump(store)["studies"]] == [uid(1)]


def test_served_under_nonconformant_uids(lenient: tuple[str, Path]) -> None:
    """The server answers metadata and frames under such UIDs."""
    store, _ = lenient
    with serving(store) as base:
        parts = urlsplit(base)
        connection = httplib.HTTPConnection(parts.hostname or "", parts.port)
        path = f"{parts.path}/studies/{STUDY}/series/{SERIES}/instances/{SOP}"
        try:
            connection.request("GET", f"{path}/metadata")
            response = connection.getresponse()
            assert response.status == 200
            (metadata,) = json.loads(response.read())
            assert metadata["0020000D"]["Value"] == [STUDY]
            connection.request("GET", f"{path}/frames/1")
            response = connection.getresponse()
            assert response.status == 200 and b"transfer-syntax=" in response.read()
        finally:
            connection.close()


def test_searched_by_nonconformant_uids(lenient: tuple[str, Path]) -> None:
    """QIDO finds studies, series and instances by the non-conformant UIDs the store holds
    (a viewer searches by the UIDs it was given); an unsafe UID is still a 400."""
    store, _ = lenient
    with serving(store) as base:
        parts = urlsplit(base)
        connection = httplib.HTTPConnection(parts.hostname or "", parts.port)
        try:
            for query, tag, want in (
                (f"/studies?StudyInstanceUID={STUDY}", "0020000D", STUDY),
                (f"/studies/{STUDY}/series?SeriesInstanceUID={SERIES}", "0020000E", SERIES),
                (f"/instances?SOPInstanceUID={SOP}", "00080018", SOP),
            ):
                connection.request("GET", parts.path + query)
                response = connection.getresponse()
                assert response.status == 200, (query, response.read())
                (found,) = json.loads(response.read())
                assert found[tag]["Value"] == [want]
            connection.request("GET", f"{parts.path}/studies?StudyInstanceUID=a..b")
            response = connection.getresponse()
            assert response.status == 400
            response.read()
        finally:
            connection.close()


def test_cli_ingest_warns(tmp_path: Path, store: str) -> None:
    """mkdicomweb -v prints the warning under the stored file; the exit code is 0."""
    odd = _write_ct_small(tmp_path / "in" / "odd.dcm", study=STUDY, series=uid(2), sop=uid(3))
    result = runner.invoke(app, ["create", "-o", store, "-v", str(odd)])
    assert result.exit_code == 0, result.output
    assert "StudyInstanceUID" in result.stderr and "not a conformant UID" in result.stderr


@pytest.mark.parametrize(
    "value", [STUDY, SERIES, SOP, "1.2.3", "a..b", "1.2.gz", "-1", "1.", "1/2", "x" * 65]
)
def test_schemas_take_the_safe_uids(value: str) -> None:
    """The info record schema's UID is the safe UID of model/uid.py."""
    schema = _validator("info-record.schema.json")
    uid_schema = {"$ref": "info-record.schema.json#/$defs/uid"}
    assert schema.evolve(schema=uid_schema).is_valid(value) is is_safe_uid(value)


def test_info_record_validates(lenient: tuple[str, Path]) -> None:
    """The info record of an instance with non-conformant UIDs validates against its schema."""
    store, _ = lenient
    key = f"studies/{STUDY}/series/{SERIES}/instances/{SOP}/info.json.gz"
    _validator("info-record.schema.json").validate(read_json(store, key))
