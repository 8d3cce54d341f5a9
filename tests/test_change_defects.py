"""Defects an outside tester found in the change machinery after issue 11's first fixes:
bulk data shared by instances removed by different changes, objects set aside by a change
that was killed before its commit, ``-c`` made of two commits, purge of a reverted
de-identification, and revert of a purge. Each test failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive, reconstruct_p10
from dicomweb_archive.cli.main import SEED_APPS, UPDATE_APP
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.errors import UsageError
from dicomweb_archive.ops.anonymize import anonymize_in_place
from dicomweb_archive.ops.delete import apply_delete, plan_delete
from dicomweb_archive.ops.history import audit_log, history
from dicomweb_archive.ops.purge import purge
from dicomweb_archive.ops.revert import revert_change
from dicomweb_archive.ops.update import update
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.changes import change_ids
from dicomweb_archive.store.keys import ASIDE, StoreKeys
from dicomweb_archive.store.local import CRASH_AFTER_ENV
from tests.factory import make_ct, uid, write_series
from tests.stores import ingested, keys_under

runner = CliRunner()
KEYS = StoreKeys()
STUDY, SERIES = uid("50"), uid("50.1")


def _shared_bulk(folder: Path, count: int = 2) -> list[Path]:
    """``count`` instances of one series sharing one private bulk-data value (over -M 64)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        ds = make_ct(study=STUDY, series=SERIES, sop=uid(f"50.1.{i}"), instance_number=i + 1)
        block = ds.private_block(0x0011, "TESTCREATOR", create=True)
        block.add_new(0x01, "OB", bytes(range(256)) * 2)
        path = folder / f"b{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _clean(archive: Archive) -> None:
    report = verify(archive)
    assert report.ok and report.complete, report.findings


@pytest.mark.parametrize("order", ["revert then purge", "purge then revert"])
def test_revert_brings_back_bulk_data_a_later_change_set_aside(
    tmp_path: Path, store: str, order: str
) -> None:
    """Two instances share bulk data; deleting one keeps it (the other uses it), deleting the
    other sets it aside. Reverting the first delete, before or after the second is purged,
    gives an instance whose bulk data is there: verify is clean, export byte-exact."""
    files = _shared_bulk(tmp_path / "in")
    assert ingested(store, files).ok
    with Archive.open(store) as archive:
        first = apply_delete(archive, plan_delete(archive, "instance", uid("50.1.0"))).change_id
        second = apply_delete(archive, plan_delete(archive, "instance", uid("50.1.1"))).change_id
        if order == "purge then revert":
            purge(archive, second)
            revert_change(archive, first)
        else:
            revert_change(archive, first)
            purge(archive, second)
        _clean(archive)
        assert reconstruct_p10(archive, uid("50.1.0")) == files[0].read_bytes()


def test_bulk_data_gone_for_good_refuses_the_revert(tmp_path: Path, store: str) -> None:
    """A change recorded before changes kept copies of bulk data (simulated by removing the
    copy) cannot bring an instance back without it: the revert is refused, in words, and
    the store is unchanged."""
    files = _shared_bulk(tmp_path / "in")
    assert ingested(store, files).ok
    with Archive.open(store) as archive:
        first = apply_delete(archive, plan_delete(archive, "instance", uid("50.1.0"))).change_id
        second = apply_delete(archive, plan_delete(archive, "instance", uid("50.1.1"))).change_id
        purge(archive, second)
        for key in keys_under(store, KEYS.aside(first)):
            if "/bulkdata/" in key:
                archive.storage.delete(key)
        from dicomweb_archive.errors import CorruptStoreError

        with pytest.raises(CorruptStoreError, match=r"50\.1\.0 cannot be restored"):
            revert_change(archive, first)
        assert archive.index.counts()["instances"] == 0


#: runs a console entry point: argv[1] is its name (``dicomweb_archive``, ``mkdicomweb``)
RUN = "import sys; from dicomweb_archive.cli import entry; getattr(entry, sys.argv.pop(1))()"


def _kill_at_every_write(
    command: list[str], prepare: Callable[[str], None], new_store: Callable[[str], str]
) -> list[str]:
    """Run ``command`` (``{store}`` replaced) on a fresh copy of a prepared store, killed
    after write k for k = 1, 2, ... until it completes; returns the stores left."""
    stores = []
    k = 1
    while True:
        store = new_store(f"s{k}")
        prepare(store)
        args = [a.replace("{store}", store) for a in command]
        env = {**os.environ, CRASH_AFTER_ENV: str(k)}
        done = subprocess.run(
            [sys.executable, "-c", RUN, *args],
            env=env,
            check=False,
            capture_output=True,
        )
        stores.append(store)
        if done.returncode == 0:
            return stores
        assert done.returncode == 137, done.stderr
        k += 1


@pytest.mark.shared
def test_a_killed_change_leaves_nothing_aside(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """A change killed while it sets objects aside, before its commit, leaves copies without
    a change record: verify reports them (exit 4 class ``interrupted``), the next writer
    removes them, and the store is as before."""
    inputs = write_series(tmp_path / "in", count=3, study=uid("1"), patient_id="P1")

    def prepare(store: str) -> None:
        assert ingested(store, inputs).ok

    stores = _kill_at_every_write(
        ["dicomweb_archive", "delete", "-o", "{store}", "--study", uid("1")], prepare, new_store
    )
    assert len(stores) > 3
    left_aside = 0
    for store in stores[:-1]:
        with Archive.open(store) as archive:
            recorded = set(change_ids(archive.storage))
            orphans = [k for k in keys_under(store, ASIDE) if k.split("/")[2] not in recorded]
            if orphans:
                left_aside += 1
                findings = verify(archive).findings
                assert any(f.kind == "interrupted" and "aside" in f.where for f in findings)
            with archive.writing("test"):  # the next writer recovers
                pass
            recorded = set(change_ids(archive.storage))
            assert all(k.split("/")[2] in recorded for k in keys_under(store, ASIDE))
            _clean(archive)
            assert archive.index.counts()["instances"] in (0, 3)
    assert left_aside  # some kill point really was between the copies and the commit


@pytest.mark.shared
def test_clean_is_one_change_at_every_kill_point(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """``mkdicomweb -c`` sets the study aside and writes the new input in one change: killed
    at any write, the store recovers to the study as it was (3 instances) or as the input
    makes it (1 instance), never to an empty study."""
    inputs = write_series(tmp_path / "in", count=3, study=uid("1"), patient_id="P1")
    one = tmp_path / "one"
    one.mkdir()
    (one / "x.dcm").write_bytes(inputs[0].read_bytes())

    def prepare(store: str) -> None:
        assert ingested(store, inputs).ok

    command = ["mkdicomweb", "-c", "-o", "{store}", str(one)]
    stores = _kill_at_every_write(command, prepare, new_store)
    for store in stores:
        with Archive.open(store) as archive:
            with archive.writing("test"):
                pass
            assert archive.index.counts()["instances"] in (1, 3), store
            _clean(archive)
    with Archive.open(stores[-1]) as archive:
        kinds = {r["operation"] for r in audit_log(archive)}
        assert kinds == {"clean"}
        assert len({r["change_id"] for r in audit_log(archive)}) == 1


def test_purge_of_a_reverted_deidentification_keeps_the_history(tmp_path: Path, store: str) -> None:
    """A de-identification that was reverted has its originals live: purging it frees what
    it set aside but keeps every earlier change record and the history."""
    files = write_series(tmp_path / "in", count=3, study=uid("1"), patient_id="P1")
    assert ingested(store, files).ok
    with Archive.open(store) as archive:
        edit = update(archive, "study", uid("1"), ["StudyDescription=A"]).change_id
        change = anonymize_in_place(archive).change_id
        revert_change(archive, change)
        purge(archive, change)
        assert edit in set(change_ids(archive.storage))
        assert edit in {r["change_id"] for r in audit_log(archive)}
        sop = str(__import__("pydicom").dcmread(files[0]).SOPInstanceUID)
        assert [e["operation"] for e in history(archive, sop)] == ["edit", "anonymize", "revert"]
        assert not keys_under(store, KEYS.aside(change))
        _clean(archive)


def test_purge_of_a_deidentification_in_effect_removes_every_trace(
    tmp_path: Path, store: str
) -> None:
    """Purging a de-identification in effect removes the earlier changes' records, and the
    revert and re-revert of it (whose set-aside objects hold the originals)."""
    files = write_series(tmp_path / "in", count=2, study=uid("1"), patient_id="P1")
    assert ingested(store, files).ok
    with Archive.open(store) as archive:
        update(archive, "study", uid("1"), ["StudyDescription=A"])
        change = anonymize_in_place(archive).change_id
        undo = revert_change(archive, change).change_id
        redo = revert_change(archive, undo).change_id
        purge(archive, change)
        left = set(change_ids(archive.storage))
        assert not {undo, redo} & left
        assert not keys_under(store, KEYS.aside(undo)) and not keys_under(store, KEYS.aside(redo))
        _clean(archive)


def test_a_purge_cannot_be_reverted(tmp_path: Path, store: str) -> None:
    files = write_series(tmp_path / "in", count=2, study=uid("1"), patient_id="P1")
    assert ingested(store, files).ok
    with Archive.open(store) as archive:
        change = apply_delete(archive, plan_delete(archive, "study", uid("1"))).change_id
        purged = purge(archive, change)
        with pytest.raises(UsageError, match="is a purge"):
            revert_change(archive, purged)


def test_removal_needs_no_double_dash(tmp_path: Path, store: str) -> None:
    """``mkdicomwebupdate -instance UID -00111001`` removes the attribute (the seed's form);
    the parser would take ``-00111001`` for an option."""
    files = _shared_bulk(tmp_path / "in", count=1)
    result = runner.invoke(SEED_APPS["mkdicomweb"], ["-o", store, str(files[0])])
    assert result.exit_code == 0, result.output
    args = ["-o", store, "-instance", uid("50.1.0"), "-00111001", "ImageComments=x"]
    result = runner.invoke(UPDATE_APP, normalise_argv(args))
    assert result.exit_code == 0, result.output
    with Archive.open(store) as archive:
        (entry,) = history(archive, uid("50.1.0"))
        changed = sorted(c["attribute"] for c in entry["changes"])
        assert changed == ["(0011,1001) private", "(0020,4000) ImageComments"]
        _clean(archive)


def test_clean_refuses_a_uid_stored_in_another_study(tmp_path: Path, store: str) -> None:
    """``-c`` looks for the input's SOP Instance UID in other studies too (it stored a second
    copy, and the index then refused every command): refused as without ``-c``; with
    ``--replace`` the copy in the other study is set aside."""
    from dicomweb_archive import ingest
    from dicomweb_archive.ops.ingest_types import PipelineOptions
    from tests.factory import write_ct

    write_ct(tmp_path / "a" / "a.dcm", study=uid("1"), series=uid("1.1"), sop=uid("1.1.1"))
    b = write_ct(tmp_path / "b" / "b.dcm", study=uid("2"), series=uid("2.1"), sop=uid("1.1.1"))
    assert ingested(store, [tmp_path / "a"]).ok
    with Archive.open(store) as archive:
        report = ingest(archive, [b], options=PipelineOptions(clean=True))
        assert "already stored" in (report.failures[0].error or "")
        _clean(archive)
        replaced = ingest(archive, [b], options=PipelineOptions(clean=True, replace=True))
        assert replaced.ok and archive.index.counts()["instances"] == 1
        _clean(archive)


def test_one_input_cannot_give_a_uid_twice(tmp_path: Path, store: str) -> None:
    """Two different files with one SOP Instance UID in one run are refused (the second),
    even with ``--replace``: the run's change stays revertible."""
    from dicomweb_archive import ingest
    from tests.factory import write_ct

    keys = {"study": uid("1"), "series": uid("1.1"), "sop": uid("1.1.1")}
    write_ct(tmp_path / "a" / "a.dcm", **keys)
    assert ingested(store, [tmp_path / "a"]).ok
    twice = [write_ct(tmp_path / "n" / f"x{i}.dcm", seed=3 + i, **keys) for i in (0, 1)]
    with Archive.open(store) as archive:
        report = ingest(archive, twice, replace=True)
        assert "given twice" in (report.failures[0].error or "")
        (change,) = report.changes
        revert_change(archive, change)
        _clean(archive)
        assert reconstruct_p10(archive, uid("1.1.1")) == (tmp_path / "a" / "a.dcm").read_bytes()


def test_revert_sets_aside_bulk_data_no_instance_uses(tmp_path: Path, store: str) -> None:
    """Reverting a revert of a delete removes the instance again, and its bulk data with it
    (verify found it orphaned)."""
    files = _shared_bulk(tmp_path / "in", count=1)
    assert ingested(store, files).ok
    with Archive.open(store) as archive:
        delete = apply_delete(archive, plan_delete(archive, "instance", uid("50.1.0"))).change_id
        back = revert_change(archive, delete).change_id
        revert_change(archive, back)
        _clean(archive)
        assert not keys_under(store, KEYS.bulkdata_dir(STUDY))


def test_a_revert_of_a_purged_change_cannot_be_reverted(tmp_path: Path, store: str) -> None:
    """De-identify, revert, purge the de-identification: reverting the revert would bring the
    de-identified data back without what the purge removed (and left patient data no purge
    could reach): refused."""
    files = write_series(tmp_path / "in", count=2, study=uid("1"), patient_id="P1")
    assert ingested(store, files).ok
    with Archive.open(store) as archive:
        change = anonymize_in_place(archive).change_id
        back = revert_change(archive, change).change_id
        purge(archive, change)
        with pytest.raises(UsageError, match="was purged since"):
            revert_change(archive, back)
        _clean(archive)


def test_one_attribute_edited_twice_is_refused(tmp_path: Path, store: str) -> None:
    """``-ImageComments ImageComments=new``: removals are moved after ``--`` for the parser,
    so the order of two edits of one attribute would be lost: refused."""
    files = _shared_bulk(tmp_path / "in", count=1)
    assert ingested(store, files).ok
    args = ["-o", store, "-instance", uid("50.1.0"), "-ImageComments", "ImageComments=new"]
    result = runner.invoke(UPDATE_APP, normalise_argv(args))
    assert result.exit_code != 0 and "more than once" in result.output
