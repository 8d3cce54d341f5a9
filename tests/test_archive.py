"""The Archive: a store's recorded configuration, only stores are opened, format-1 stores are
upgraded in place (issue 11, defects 1 and 7)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive, reconstruct_p10
from dicomweb_archive.cli.main import PART10_APP, SEED_APPS, UPDATE_APP, app
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.errors import NotAStoreError, StoreConfigError
from dicomweb_archive.ops.history import audit_log, history
from dicomweb_archive.ops.revert import revert_change
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.keys import CONFIG, STUDIES_INDEX, StoreKeys
from tests.factory import make_ct, uid, write_series
from tests.stores import keys_under, read_json, served_metadata

runner = CliRunner()
FORMAT_1 = Path(__file__).parent / "data" / "format1-store.tar.gz"


def _seed(command: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(SEED_APPS[command], list(args))
    return result.exit_code, result.output


def _umbrella(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, normalise_argv(list(args)))
    return result.exit_code, result.output


def test_layout_settings_are_recorded_and_kept(tmp_path: Path, store: str) -> None:
    """Defect 1: --path-deduplicated and --path-instances are recorded when the store is
    made; an update uses them (no stray tree), a later group and study stage keeps the edit,
    and a disagreeing value is refused."""
    files = write_series(tmp_path / "in", count=3, patient_id="P1")
    study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    code, output = _seed(
        "mkdicomweb",
        "--path-deduplicated",
        "dd",
        "--path-instances",
        "ii",
        "-o",
        store,
        str(tmp_path / "in"),
    )
    assert code == 0, output
    config = read_json_plain(store, CONFIG)
    assert (config["path_deduplicated"], config["path_instances"]) == ("dd", "ii")
    code, output = _umbrella("update", "-o", store, "-study", study, "StudyDescription=FIXED")
    assert code == 0, output
    everything = keys_under(store, "")
    assert not [k for k in everything if k.startswith(("deduplicated/", "instances/"))]
    assert [k for k in everything if k.startswith("dd/")]
    for command in ("mkdicomwebdeduplicatedgroup", "mkdicomwebstudy"):
        code, output = _seed(command, "-o", store, study)
        assert code == 0, output
    keys = StoreKeys("ii", "dd")
    (query,) = read_json(store, keys.study_index(study))
    assert query["00081030"]["Value"] == ["FIXED"]
    code, output = _umbrella("verify", "-o", store)
    assert code == 0, output
    code, output = _seed("mkdicomweb", "--path-deduplicated", "other", "-o", store, str(files[0]))
    assert code == 2 and "disagrees with the store" in output and "dd" in output
    code, output = _seed("mkdicomweb", "-m", "10", "-o", store, str(files[0]))
    assert code == 2 and "-m/--maximum-inline-public-length 10 disagrees" in output


def read_json_plain(store: str, key: str) -> dict[str, object]:
    import json

    with Archive.open(store) as archive:
        value: dict[str, object] = json.loads(archive.storage.get(key))
    return value


def test_edits_keep_the_stores_inline_limits(tmp_path: Path, store: str) -> None:
    """An edit derives metadata with the store's -m/-M: a value that went to bulk data at
    ingest stays bulk data (it was inlined before)."""
    ds = make_ct(study=uid("4.1"), series=uid("4.2"), sop=uid("4.3"))
    ds.RedPaletteColorLookupTableData = b"\x00\x01" * 64
    path = tmp_path / "lut.dcm"
    ds.save_as(path, enforce_file_format=True)
    code, output = _seed("mkdicomweb", "-m", "0", "-o", store, str(path))
    assert code == 0, output
    where = (uid("4.1"), uid("4.2"), uid("4.3"))
    assert "BulkDataURI" in served_metadata(store, *where)["00281201"]
    code, output = _umbrella("update", "-o", store, "-study", uid("4.1"), "StudyID=2")
    assert code == 0, output
    assert "BulkDataURI" in served_metadata(store, *where)["00281201"]


@pytest.mark.parametrize(
    "args",
    [
        ["studies"],
        ["verify"],
        ["reindex"],
        ["history", uid(1)],
        ["audit"],
        ["update", "-study", uid(1), "StudyDescription=x"],
        ["edit", "--study", uid(1), "StudyDescription=x"],
        ["delete", uid(1)],
        ["revert", "0" * 32],
        ["restore", "0" * 32],
        ["purge", "0" * 32],
        ["anonymize", "--all", "--out", "elsewhere"],
        ["export", uid(1), "--out", "out"],
        ["serve", "--port", "1"],
    ],
    ids=lambda args: args[0],
)
def test_a_path_that_is_not_a_store_is_refused(
    args: list[str], tmp_path: Path, new_store: object
) -> None:
    """Defect 7: every command but ingest and the stages refuses a location that is not a
    store (exit code 2, one line) and creates nothing."""
    missing = str(tmp_path / "nonexistent")
    command, *rest = args
    result = runner.invoke(app, normalise_argv([command, "-o", missing, *rest]))
    assert result.exit_code == 2, result.output
    assert "no such store" in result.output
    assert not Path(missing).exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not a store")
    result = runner.invoke(app, normalise_argv([command, "-o", str(plain), *rest]))
    assert result.exit_code == 2 and "is not a dicomweb-archive store" in result.output
    assert sorted(p.name for p in plain.iterdir()) == ["notes.txt"]
    result = runner.invoke(app, normalise_argv([command, "-o", "memory://none-such", *rest]))
    assert result.exit_code == 2 and "no such store" in result.output


def test_seed_commands_refuse_a_path_that_is_not_a_store(tmp_path: Path) -> None:
    """mkdicomwebpart10 and mkdicomwebupdate refuse a non-store too."""
    missing = str(tmp_path / "nowhere")
    result = runner.invoke(PART10_APP, ["-o", missing, uid(1), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and not Path(missing).exists()
    result = runner.invoke(UPDATE_APP, normalise_argv(["-o", missing, "-study", uid(1), "X=1"]))
    assert result.exit_code == 2 and not Path(missing).exists()


def test_open_create_and_config_errors(store: str) -> None:
    """open refuses what is not a store; create refuses a store; the configuration says what
    disagrees."""
    with pytest.raises(NotAStoreError):
        Archive.open(store)
    with Archive.create(store) as archive:
        assert archive.config.path_deduplicated == "deduplicated"
    with pytest.raises(StoreConfigError, match="a store already"):
        Archive.create(store)
    with pytest.raises(StoreConfigError, match="--path-instances x disagrees"):
        Archive.open_or_create(store, path_instances="x")
    with Archive.open_or_create(store, path_instances="instances") as archive:
        assert archive.config.path_instances == "instances"


@pytest.mark.local
def test_a_format_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    """A store written by the previous version (tests/data/make_format1_store.py) opens: its
    configuration is recorded (its --path-deduplicated found, the stray tree format 1's update
    wrote set aside), its history, audit and rejection become change records, verify is clean,
    every instance exports as before, and the rejection can be restored."""
    with tarfile.open(FORMAT_1) as tar:
        _extract(tar, tmp_path)
    store = tmp_path / "store"
    inputs = {p.name: p for p in (tmp_path / "in").iterdir()}
    assert not (store / CONFIG).exists()
    with Archive.open(store) as archive:
        assert archive.config.version == 2
        assert archive.config.path_deduplicated == "dd"
        from dicomweb_archive.ops.reindex import ensure_index

        ensure_index(archive)
        assert archive.index.counts()["instances"] == 3
        assert {r["operation"] for r in audit_log(archive)} == {"edit", "reject"}
        entries = history(archive, uid("91.1.1.1"))
        assert [(e["operation"], e["revision"]) for e in entries] == [("edit", 1)]
        report = verify(archive)
        assert report.ok and report.complete, report.findings
        assert reconstruct_p10(archive, uid("91.2.1.1")) == inputs["b1.dcm"].read_bytes()
        edited = pydicom.dcmread(io.BytesIO(reconstruct_p10(archive, uid("91.1.1.1"))))
        assert str(edited.PatientName) == "RENAMED^ONCE"
        (reject,) = [r for r in audit_log(archive) if r["operation"] == "reject"]
        revert_change(archive, str(reject["change_id"]))
        restored = reconstruct_p10(archive, uid("91.1.1.3"))
        assert pydicom.dcmread(io.BytesIO(restored)).SOPInstanceUID == uid("91.1.1.3")
        report = verify(archive)
        assert report.ok and report.complete, report.findings
    assert not (store / "deduplicated").exists()
    assert (store / ".dicomweb-archive" / "format-1-leftovers" / "deduplicated").is_dir()
    assert len(read_json(str(store), STUDIES_INDEX)) == 2
    code, output = _umbrella("verify", "-o", str(store))
    assert code == 0, output


@pytest.mark.local
def test_a_format_1_edit_is_reverted_after_the_upgrade(tmp_path: Path) -> None:
    """Format 1 rewrote an edited instance's info record: after the upgrade the info record is
    the one as ingested again, the edit is a step, its export is the edited file, and the
    format-1 edit can be reverted (its hashes were taken again as this version takes them)."""
    with tarfile.open(FORMAT_1) as tar:
        _extract(tar, tmp_path)
    store = tmp_path / "store"
    inputs = {p.name: p for p in (tmp_path / "in").iterdir()}
    sop = uid("91.1.1.1")
    with Archive.open(store) as archive:
        from dicomweb_archive.ops.reindex import ensure_index
        from dicomweb_archive.store.edit_state import read_edit_state

        ensure_index(archive)
        state = read_edit_state(archive.storage, archive.keys, uid("91.1"))
        assert state.revision(sop) == 1 and len(state.steps_of(sop)) == 1
        key = archive.keys.info(uid("91.1"), uid("91.1.1"), sop)
        info = read_json(str(store), key)
        assert info["original"]["sha256"] and "revision" not in info
        edited = pydicom.dcmread(io.BytesIO(reconstruct_p10(archive, sop)))
        assert str(edited.PatientName) == "RENAMED^ONCE"
        (rename,) = [r for r in audit_log(archive) if r["operation"] == "edit"][:1]
        (reject,) = [r for r in audit_log(archive) if r["operation"] == "reject"]
        revert_change(archive, str(reject["change_id"]))  # the later change first
        revert_change(archive, str(rename["change_id"]))
        assert reconstruct_p10(archive, sop) == inputs["a1.dcm"].read_bytes()
        report = verify(archive)
        assert report.ok and report.complete, report.findings


def test_another_thread_is_a_reader_while_one_writes(store: str) -> None:
    """The lease is the writing thread's: another thread of the same process (a server's
    request while a STOW-RS request is being stored) reads as any reader does, through
    ``read_consistently``, not as the writer, which may see its own change half-applied."""
    import threading

    with Archive.open_or_create(store) as archive:
        seen: list[bool] = []
        with archive.writing("test"):
            assert archive.holding_lease
            thread = threading.Thread(target=lambda: seen.append(archive.holding_lease))
            thread.start()
            thread.join()
        assert seen == [False]
        assert not archive.holding_lease


def _extract(tar: tarfile.TarFile, where: Path) -> None:
    """Extract a test archive with the "data" filter where Python has it (3.11.4 and later;
    Debian 12's 3.11.2 has not): the archive is ours, made by tests/data scripts."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(where, filter="data")
    else:
        tar.extractall(where)  # our own archive (tests are not linted for S)
