"""Readers during writes, work left pending, and inputs that must not jam a store (issue 11,
defects 8 to 11)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive, ingest
from dicomweb_archive.cli.main import SEED_APPS, app
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.errors import WriteInProgressError
from dicomweb_archive.ops import ingest as ingest_module
from dicomweb_archive.ops.delete import apply_delete, plan_delete
from dicomweb_archive.ops.ingest_types import FileResult
from dicomweb_archive.ops.update import update
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store import journal
from dicomweb_archive.store.keys import STUDIES_INDEX, StoreKeys
from dicomweb_archive.store.storage import from_json_gz, json_gz
from tests.factory import make_ct, uid, write_ct, write_series
from tests.stores import ingested

runner = CliRunner()
KEYS = StoreKeys()


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, normalise_argv(list(args)))
    return result.exit_code, result.output


def _seed(command: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(SEED_APPS[command], list(args))
    return result.exit_code, result.output


@pytest.fixture
def paused_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[threading.Event, threading.Event, threading.Event]]:
    """Once armed, make the next journal apply stop half-way (after half of its objects are in
    place) until released: (armed, reached, release)."""
    armed, reached, release = threading.Event(), threading.Event(), threading.Event()
    original = journal._apply

    def paused(storage: Any, record: dict[str, Any], apply_index: Any) -> None:
        if not armed.is_set() or reached.is_set():
            original(storage, record, apply_index)
            return
        puts = record["puts"]
        half = {**record, "puts": puts[: len(puts) // 2], "deletes": [], "index": []}
        for key, staging in half["puts"]:
            storage.copy(staging, key)
        reached.set()
        assert release.wait(30)
        original(storage, record, apply_index)

    monkeypatch.setattr(journal, "_apply", paused)
    yield armed, reached, release
    release.set()


def test_readers_never_see_a_half_applied_change(
    tmp_path: Path,
    store: str,
    paused_apply: tuple[threading.Event, threading.Event, threading.Event],
) -> None:
    """Defect 11: while an update's journal is being applied, a reader either waits and then
    sees the new state, or says a change is in progress; never the mix."""
    armed, reached, release = paused_apply
    files = write_series(tmp_path / "in", count=6, patient_id="P1")
    study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    series = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    assert ingested(store, files).ok
    armed.set()
    with Archive.open(store) as writer:
        worker = threading.Thread(
            target=update, args=(writer, "study", study, ["StudyDescription=NEW"])
        )
        worker.start()
        assert reached.wait(30)
        with Archive.open(store) as reader:

            def both() -> tuple[list[str], list[str]]:
                metadata = from_json_gz(reader.storage.get(KEYS.series_metadata(study, series)))
                listing = from_json_gz(reader.storage.get(STUDIES_INDEX))
                return (
                    sorted({m["00081030"]["Value"][0] for m in metadata}),
                    [s["00081030"]["Value"][0] for s in listing],
                )

            with pytest.raises(WriteInProgressError, match="a change is being applied"):
                journal.read_consistently(reader.storage, both, patience=0.3)
            report = verify(reader)  # during the change: busy, not differences
            assert report.ok and not report.complete
            assert "busy" in {f.kind for f in report.findings}
            assert {f.kind for f in report.findings} <= {"busy", "pending"}
            result: list[Any] = []
            waiting = threading.Thread(target=lambda: result.append(reader.read(both)))
            waiting.start()
            release.set()
            waiting.join(30)
            worker.join(30)
            assert result == [(["NEW"], ["NEW"])]
            assert verify(reader).complete


def test_verify_while_ingest_writes_says_pending(tmp_path: Path, store: str) -> None:
    """Defect 8: verify run while an ingest is writing reports pending work, not missing
    derived files, and no difference."""
    first = write_series(tmp_path / "a", count=2, patient_id="P1")
    assert ingested(store, first).ok
    more = write_series(tmp_path / "b", count=4, patient_id="P2")
    reached, release = threading.Event(), threading.Event()

    def hook(result: FileResult) -> None:
        if result.status == "stored" and not reached.is_set():
            reached.set()
            assert release.wait(30)

    with Archive.open(store) as writer, Archive.open(store) as reader:
        worker = threading.Thread(target=lambda: ingest(writer, more, progress=hook))
        worker.start()
        assert reached.wait(30)
        report = verify(reader)
        release.set()
        worker.join(30)
        assert report.ok, report.findings
        assert {f.kind for f in report.findings} <= {"pending", "interrupted"}
        assert "pending" in {f.kind for f in report.findings}
        final = verify(reader)
    assert final.ok and final.complete, final.findings


def test_stage_one_alone_leaves_pending_work_that_is_named(tmp_path: Path, store: str) -> None:
    """Defect 9: after the instances stage alone the summary says what to run, verify says
    pending (exit 4, not 3), and the study stage alone completes the store."""
    write_series(tmp_path / "in" / "a", count=2, patient_id="P1")
    write_series(tmp_path / "in" / "b", count=2, patient_id="P2")
    code, output = _seed("mkdicomwebdeduplicated", "-o", store, str(tmp_path / "in"))
    assert code == 0, output
    assert "2 studies wait for the later stages" in output and "mkdicomwebstudy" in output
    code, output = _cli("verify", "-o", store)
    assert code == 4, output
    assert "pending" in output and "differences" not in output.split("no differences")[-1]
    code, output = _seed("mkdicomwebstudy", "-o", store)
    assert code == 0 and "2 studies written" in output, output
    code, output = _cli("verify", "-o", store)
    assert code == 0, output


def test_interrupted_ingest_says_what_to_run_and_the_next_write_completes_it(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 9: Ctrl-C during an ingest says what to run; the next command that changes
    the store finishes the pending stages first, so it sees every stored instance."""
    write_series(tmp_path / "in", count=4, patient_id="P1")
    original = ingest_module._later_stages

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_module, "_later_stages", interrupted)
    code, output = _seed("mkdicomweb", "-o", store, str(tmp_path / "in"))
    assert code == 130, output
    assert "interrupted" in output and f"mkdicomwebstudy -o {store}" in output
    monkeypatch.setattr(ingest_module, "_later_stages", original)
    code, output = _cli("verify", "-o", store)
    assert code == 4, output
    code, output = _cli("update", "-o", store, "-patient", "P1", "PatientName=LATER^EDIT")
    assert code == 0 and "4 instances updated" in output, output
    code, output = _cli("verify", "-o", store)
    assert code == 0, output


def _pn_modality(path: Path, *, study: str, series: str, sop: str) -> Path:
    """A file whose Modality (0008,0060) is encoded with VR PN instead of CS."""
    ds = make_ct(study=study, series=series, sop=sop)
    del ds.Modality
    ds.add_new(0x00080060, "PN", "CT")
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_value_of_the_wrong_vr_does_not_jam_the_store(tmp_path: Path, store: str) -> None:
    """Defect 10: a Modality encoded as PN is stored and indexed; later ingests, verify and
    reindex work, and the instance can be deleted."""
    bad = _pn_modality(tmp_path / "bad.dcm", study=uid(21), series=uid(22), sop=uid(23))
    report = ingested(store, [bad])
    assert report.ok, [r.error for r in report.failures]
    good = write_series(tmp_path / "good", count=2, patient_id="P2")
    assert ingested(store, good).ok
    with Archive.open(store) as archive:
        rows = {r["study_instance_uid"]: r for r in archive.index.studies()}
        assert rows[uid(21)]["modalities_in_study"] == "CT"
        assert len(rows) == 2
        assert verify(archive).ok
        from dicomweb_archive.ops.reindex import reindex

        assert reindex(archive).studies == 2
        apply_delete(archive, plan_delete(archive, "instance", uid(23)))
        assert [r["study_instance_uid"] for r in archive.index.studies()] != []
        assert uid(21) not in {r["study_instance_uid"] for r in archive.index.studies()}


def test_a_series_uid_in_two_studies_is_stored_in_both(tmp_path: Path, store: str) -> None:
    """Defect 10: two studies sharing a Series Instance UID are both stored and indexed (the
    index keys series by study and series), nothing jams."""
    one = write_ct(tmp_path / "one.dcm", study=uid(31), series=uid(33), sop=uid(34))
    two = write_ct(tmp_path / "two.dcm", study=uid(32), series=uid(33), sop=uid(35))
    assert ingested(store, [one, two]).ok
    with Archive.open(store) as archive:
        assert archive.index.counts()["series"] == 2
        report = verify(archive)
        assert report.ok and report.complete, report.findings
        more = write_ct(tmp_path / "three.dcm", study=uid(31), series=uid(36), sop=uid(37))
        assert ingest(archive, [more]).ok


def test_a_study_that_cannot_be_built_does_not_stop_the_others(tmp_path: Path, store: str) -> None:
    """Defect 10: one study's failure in the study stage is reported and leaves that study
    pending; the other studies are built, and later commands work."""
    first = write_ct(tmp_path / "a.dcm", study=uid(41), series=uid(42), sop=uid(43))
    assert ingested(store, [first]).ok
    with Archive.open(store) as archive:  # the group's record refers to an extract not there
        keys, storage = archive.keys, archive.storage
        (sha,) = from_json_gz(storage.get(keys.group_index(uid(41))))["groups"]
        group = from_json_gz(storage.get(keys.group(uid(41), sha)))
        group["instances"][0]["refs"]["patient"] = "0" * 64
        storage.put(keys.group(uid(41), sha), json_gz(group))
        for info in list(storage.list_prefix(keys.instance_records(uid(41)))):
            storage.delete(info.key)
    later = write_ct(tmp_path / "b.dcm", study=uid(41), series=uid(42), sop=uid(44))
    other = write_series(tmp_path / "other", count=2, patient_id="P9")
    code, output = _seed("mkdicomweb", "-o", store, str(later), str(tmp_path / "other"))
    assert code == 1, output
    assert f"study {uid(41)}: not built" in output and "Traceback" not in output
    with Archive.open(store) as archive:
        studies = {r["study_instance_uid"] for r in archive.index.studies()}
        assert str(pydicom.dcmread(other[0], stop_before_pixels=True).StudyInstanceUID) in studies
        report = verify(archive)
    assert "pending" in {f.kind for f in report.findings}
