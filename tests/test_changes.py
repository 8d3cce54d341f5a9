"""The one change machinery: every kind of change is recorded in history and audit under its
name, keeps what it removes, and ``revert`` undoes it (issue 11, defects 2 to 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive, reconstruct_p10
from dicomweb_archive.cli.main import SEED_APPS, app
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.ops.anonymize import anonymize_in_place
from dicomweb_archive.ops.delete import apply_delete, plan_delete
from dicomweb_archive.ops.history import audit_log, history
from dicomweb_archive.ops.purge import purge
from dicomweb_archive.ops.revert import revert_change
from dicomweb_archive.ops.update import update
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.keys import StoreKeys
from tests.factory import make_ct, uid, write_ct, write_series
from tests.stores import exists, index_dump, ingested, keys_under, tree_hashes

runner = CliRunner()
KEYS = StoreKeys()


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, normalise_argv(list(args)))
    return result.exit_code, result.output


def _audit(store: str) -> list[dict[str, object]]:
    code, output = _cli("audit", "-o", store)
    assert code == 0, output
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _exact(store: str, originals: list[Path]) -> None:
    """Every original is in the store and exports byte for byte; verify finds nothing."""
    with Archive.open(store) as archive:
        for path in originals:
            import pydicom

            sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            assert reconstruct_p10(archive, sop) == path.read_bytes()
        report = verify(archive)
    assert report.ok and report.complete, report.findings


def _bulk_file(path: Path) -> Path:
    """A CT with a value long enough to go to bulk data with ``-m 0``."""
    ds = make_ct(study=uid("7.1"), series=uid("7.2"), sop=uid("7.3"))
    ds.add_new(0x00291010, "OB", b"\x01\x02" * 40)  # private, to bulk data with -M 0
    ds.add_new(0x00091001, "LO", "x")
    ds.RedPaletteColorLookupTableData = b"\x00\x01" * 64  # public, OW: bulk data with -m 0
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_reject_then_restore_keeps_bulk_data(tmp_path: Path, store: str) -> None:
    """Defect 2: a rejected study's bulk data is kept aside and comes back with restore;
    verify is clean and every file exports byte for byte."""
    files = [_bulk_file(tmp_path / "in" / "bulk.dcm")]
    files += write_series(tmp_path / "in" / "other", count=2, patient_id="P2")
    code, output = (
        runner.invoke(
            SEED_APPS["mkdicomweb"], ["-m", "0", "-M", "0", "-o", store, str(tmp_path / "in")]
        ).exit_code,
        "",
    )
    assert code == 0
    assert keys_under(store, KEYS.bulkdata_dir(uid("7.1")))
    code, output = _cli(
        "update", "-o", store, "-delete", "-study", uid("7.1"), "--reject", "113001"
    )
    assert code == 0, output
    assert not keys_under(store, KEYS.study(uid("7.1")))  # nothing of it is served
    reject = _audit(store)[-1]
    assert reject["operation"] == "reject"
    code, output = _cli("restore", "-o", store, str(reject["change_id"]))
    assert code == 0, output
    assert _audit(store)[-1]["operation"] == "restore"
    _exact(store, files)
    code, output = _cli("verify", "-o", store)
    assert code == 0, output


def test_clean_is_a_recorded_revertible_change(tmp_path: Path, store: str) -> None:
    """Defect 3: ``mkdicomweb -c`` sets the study aside and writes the new input in one
    ``clean`` change: audited, in the history of every instance it removed or added, and
    reverted with every edit as it was (the new instances go with it)."""
    files = write_series(tmp_path / "a", count=5, patient_id="P1")
    assert ingested(store, files).ok
    with Archive.open(store) as archive:
        update(archive, "study", _study(files[0]), ["StudyDescription=EDITED"])
    edited = tree_hashes(store)
    again = write_series(tmp_path / "b", count=2, patient_id="P1", prefix="NEW")
    for path in again:  # two new files of the same study
        ds = make_ct(study=_study(files[0]), series=uid("8.8"), sop=_sop(path), seed=9)
        ds.save_as(path, enforce_file_format=True)
    result = runner.invoke(SEED_APPS["mkdicomweb"], ["-c", "-o", store, *map(str, again)])
    assert result.exit_code == 0, result.output
    assert "revert" in result.output  # the summary names the change and how to undo it
    rows = _audit(store)
    clean = [r for r in rows if r["operation"] == "clean"]
    assert len({r["change_id"] for r in clean}) == 1
    assert sorted(str(r["sop_instance_uid"]) for r in clean) == sorted(map(_sop, files + again))
    with Archive.open(store) as archive:
        assert [e["operation"] for e in history(archive, _sop(files[0]))] == ["edit", "clean"]
        assert archive.index.counts()["instances"] == 2
        revert_change(archive, str(clean[0]["change_id"]))
        assert archive.index.counts()["instances"] == 5
        report = verify(archive)
    assert report.ok and report.complete, report.findings
    now = tree_hashes(store)
    restored = {k: v for k, v in edited.items() if "/instances/" in k}
    assert {k: now.get(k) for k in restored} == restored


def test_replace_is_recorded_and_revertible(tmp_path: Path, store: str) -> None:
    """Defect 4: ``--replace`` is a ``replace`` change: history and audit say so, and revert
    brings the replaced files back byte for byte."""
    keys = {"study": uid("1.1"), "series": uid("1.2")}
    first = [write_ct(tmp_path / f"a{n}.dcm", seed=n, sop=uid(f"1.3.{n}"), **keys) for n in (1, 2)]
    second = [
        write_ct(tmp_path / f"b{n}.dcm", seed=10 + n, sop=uid(f"1.3.{n}"), **keys) for n in (1, 2)
    ]
    assert ingested(store, first).ok
    before = tree_hashes(store)
    result = runner.invoke(SEED_APPS["mkdicomweb"], ["--replace", "-o", store, *map(str, second)])
    assert result.exit_code == 0 and "(2 of them replacing a stored one)" in result.output, (
        result.output
    )
    _exact(store, second)
    with Archive.open(store) as archive:
        entries = history(archive, uid("1.3.1"))
        assert [e["operation"] for e in entries] == ["replace"]
        rows = [r for r in audit_log(archive) if r["operation"] == "replace"]
        assert len(rows) == 2
        revert_change(archive, str(rows[0]["change_id"]))
    assert tree_hashes(store) == before
    _exact(store, first)


def _study(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def _sop(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture
def edited_store(tmp_path: Path, store: str) -> tuple[str, list[Path]]:
    files = write_series(tmp_path / "a", count=3, patient_id="P1")
    files.append(
        write_ct(
            tmp_path / "b.dcm", study=uid(5), series=uid(6), sop=uid(7), frames=2, patient_id="P2"
        )
    )
    assert ingested(store, files).ok
    return store, files


KINDS = ["edit", "delete", "reject", "replace", "clean", "anonymize", "revert"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_recorded_and_reverted(
    kind: str, edited_store: tuple[str, list[Path]], tmp_path: Path
) -> None:
    """Each kind of change appears in history and audit under its name, and revert of it
    gives back every object and index row as they were (restore for a rejection)."""
    store, files = edited_store
    sop = _sop(files[0])
    with Archive.open(store) as archive:
        if kind == "revert":  # a revert is reverted like any change: the edit comes back
            edit = update(archive, "patient", "P1", ["PatientName=NEW^NAME"]).change_id
    before, rows = tree_hashes(store), index_dump(store)
    with Archive.open(store) as archive:
        if kind == "edit":
            change = update(archive, "patient", "P1", ["PatientName=NEW^NAME"]).change_id
        elif kind == "revert":
            change = revert_change(archive, edit).change_id
        elif kind in ("delete", "reject"):
            plan = plan_delete(archive, "instance", sop)
            change = apply_delete(
                archive, plan, reject="113001" if kind == "reject" else None
            ).change_id
        elif kind in ("replace", "clean"):
            other = make_ct(study=_study(files[0]), series=uid(60), sop=sop, seed=77)
            path = tmp_path / "other.dcm"
            other.save_as(path, enforce_file_format=True)
            from dicomweb_archive import ingest
            from dicomweb_archive.ops.ingest_types import PipelineOptions

            options = PipelineOptions(replace=kind == "replace", clean=kind == "clean")
            (change,) = ingest(archive, [path], options=options).changes
        else:
            change = anonymize_in_place(archive).change_id
        entries = history(archive, sop) if kind != "anonymize" else []
        audited = {r["operation"] for r in audit_log(archive) if r["change_id"] == change}
    assert audited == {kind}
    if kind != "anonymize":
        assert kind in [e["operation"] for e in entries]
    assert tree_hashes(store) != before
    with Archive.open(store) as archive:
        undo = revert_change(archive, change)
        expected = "restore" if kind == "reject" else "revert"
        assert {r["operation"] for r in audit_log(archive) if r["change_id"] == undo.change_id} == {
            expected
        }
        report = verify(archive)
    assert report.ok and report.complete, report.findings
    if kind != "revert":  # reverting a revert edits again: the files are not the originals
        _exact(store, files)
    if kind in ("edit", "revert"):  # the state before comes back as a new revision
        before = {k: v for k, v in before.items() if not _holds_revision(k)}
        assert {k: v for k, v in tree_hashes(store).items() if not _holds_revision(k)} == before
        return
    assert tree_hashes(store) == before
    assert {k: v for k, v in index_dump(store).items() if k != "audit"} == {
        k: v for k, v in rows.items() if k != "audit"
    }


def _holds_revision(key: str) -> bool:
    """Objects that hold an instance's revision number (info records, deduplicated data)."""
    return key.endswith("info.json.gz") or not key.startswith("studies/")


def test_a_later_removal_blocks_the_revert_of_an_earlier_edit(
    edited_store: tuple[str, list[Path]],
) -> None:
    """Reverting an edit of instances a later change removed is refused, naming the
    instance; reverting the later one first works."""
    store, _files = edited_store
    with Archive.open(store) as archive:
        first = update(archive, "patient", "P1", ["PatientName=A^B"])
        second = apply_delete(archive, plan_delete(archive, "patient", "P1"))
        from dicomweb_archive.errors import UsageError

        with pytest.raises(UsageError, match="revert the later change first"):
            revert_change(archive, first.change_id)
        revert_change(archive, second.change_id)
        revert_change(archive, first.change_id)
        assert verify(archive).ok


def test_revert_under_a_later_edit_keeps_the_later_edit(
    edited_store: tuple[str, list[Path]],
) -> None:
    """Reverting an edit that a later edit followed undoes the earlier one only, with a
    warning for each attribute both changed (the later value stays)."""
    store, _files = edited_store
    with Archive.open(store) as archive:
        first = update(archive, "patient", "P1", ["PatientName=A^B", "PatientSex=O"])
        second = update(archive, "patient", "P1", ["PatientName=C^D"])
        warnings: list[str] = []
        revert_change(archive, first.change_id, warn=warnings.append)
        (row,) = [r for r in archive.index.studies() if r["patient_id"] == "P1"]
        assert row["patient_name"] == "C^D"
        sops = {w.split(":")[0] for w in warnings}
        assert warnings and all("(0010,0010) PatientName was changed again" in w for w in warnings)
        assert all(second.change_id in w for w in warnings) and len(sops) == len(warnings)
        assert verify(archive).ok


def test_purge_frees_what_a_delete_kept(edited_store: tuple[str, list[Path]]) -> None:
    """A delete keeps its instances aside until purge; after purge they are gone and the
    delete can no longer be reverted."""
    store, _files = edited_store
    with Archive.open(store) as archive:
        plan = plan_delete(archive, "study", uid(5))
        change = apply_delete(archive, plan).change_id
        assert keys_under(store, KEYS.aside(change))
        purge_id = purge(archive, change)
        assert not keys_under(store, KEYS.aside(change))
        assert {r["operation"] for r in audit_log(archive)} >= {"delete", "purge"}
        assert purge_id != change
        from dicomweb_archive.errors import UsageError

        with pytest.raises(UsageError, match="purged"):
            revert_change(archive, change)
        report = verify(archive)
    assert report.ok and report.complete, report.findings
    assert not exists(store, KEYS.instance(uid(5), uid(6), uid(7)) + "info.json.gz")


def test_change_records_and_configuration_validate(
    edited_store: tuple[str, list[Path]], tmp_path: Path
) -> None:
    """Every change record of every kind, and the configuration, validate against schema/
    (change-record.schema.json, config.schema.json)."""
    import json as json_module

    from tests.test_schema import _validator

    store, files = edited_store
    with Archive.open(store) as archive:
        edit = update(archive, "patient", "P1", ["PatientName=A^B"]).change_id
        revert_change(archive, edit)
        delete = apply_delete(archive, plan_delete(archive, "study", uid(5))).change_id
        purge(archive, delete)
        apply_delete(archive, plan_delete(archive, "instance", _sop(files[0])), reject="113001")
        anonymize_in_place(archive)
        from dicomweb_archive.store.changes import change_ids, read_change

        records = [
            read_change(archive.storage, archive.keys, c) for c in change_ids(archive.storage)
        ]
        config = json_module.loads(archive.storage.get(".dicomweb-archive/config.json"))
    kinds = {r["kind"] for r in records}
    assert kinds == {"edit", "revert", "delete", "purge", "reject", "anonymize"}
    validator = _validator("change-record.schema.json")
    for record in records:
        errors = list(validator.iter_errors(record))
        assert not errors, (record["kind"], errors[0].message)
    assert not list(_validator("config.schema.json").iter_errors(config))
