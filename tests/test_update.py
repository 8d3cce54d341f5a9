"""Metadata-only updates: patient rename across studies, refusals, delete, revert, crashes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive, build_studies, group_studies
from dicomweb_archive.cli.main import UPDATE_APP, app
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.dicom.parse import parse_p10
from dicomweb_archive.ops.delete import apply_delete, plan_delete
from dicomweb_archive.ops.export import Selection, export
from dicomweb_archive.ops.history import history
from dicomweb_archive.ops.revert import apply_revert, plan_revert
from dicomweb_archive.ops.update import apply_update, plan_update
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.keys import STUDIES, STUDIES_INDEX, StoreKeys
from dicomweb_archive.store.local import CRASH_AFTER_ENV
from dicomweb_archive.store.storage import from_json_gz
from tests.factory import uid, write_ct, write_series
from tests.stores import etags, index_dump, ingested, keys_under, read_json, tree_hashes

runner = CliRunner()
DCMDUMP = shutil.which("dcmdump")
KEYS = StoreKeys()
Stored = tuple[str, dict[str, Path]]


def _inputs(tmp_path: Path) -> list[Path]:
    """Patient P1 with two studies (one multi-frame), patient P2 with one."""
    return [
        *write_series(tmp_path / "in" / "a", count=3, patient_id="P1"),
        write_ct(
            tmp_path / "in" / "b.dcm",
            study=uid(5),
            series=uid(6),
            sop=uid(7),
            frames=3,
            patient_id="P1",
        ),
        *write_series(tmp_path / "in" / "c", count=2, patient_id="P2", patient_name="ROE^ANN"),
    ]


@pytest.fixture
def stored(tmp_path: Path, store: str) -> Stored:
    """Patient P1 with two studies (one multi-frame), patient P2 with one."""
    files = _inputs(tmp_path)
    assert ingested(store, files).ok
    by_sop = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}
    return store, by_sop


def _tree(store: str) -> tuple[dict[str, str], dict[str, list[dict[str, object]]], list[Any]]:
    """Hash of every object of the store (private ones included), every index row, the audit."""
    with Archive.open(store) as archive:
        audit = archive.index.audit()
    return tree_hashes(store, private=True), index_dump(store), audit


def _frames(store: str) -> dict[str, str]:
    """The etag of every frame and bulk-data object: unchanged objects keep theirs."""
    return {
        key: etag
        for key, etag in etags(store, STUDIES).items()
        if key.endswith(".mht") or "/bulkdata/" in key
    }


def _elements(data: bytes) -> dict[int, bytes]:
    parsed = parse_p10(data)
    return {e.tag: data[e.offset : e.end] for e in parsed.dataset}


def _verify(store: str) -> Any:
    with Archive.open(store) as archive:
        return verify(archive)


def _history(store: str, sop: str) -> list[dict[str, Any]]:
    with Archive.open(store) as archive:
        return history(archive, sop)


def test_patient_rename_across_studies(stored: Stored, tmp_path: Path) -> None:
    """Every instance of P1 gets the new name; every other element keeps its bytes."""
    store, originals = stored
    frames = _frames(store)
    assert frames
    with Archive.open(store) as archive:
        plan = plan_update(archive, "patient", "P1", ["PatientName=DOE^JANE"])
        assert len(plan.instances) == 4 and len(plan.studies) == 2
        apply_update(archive, plan, reason="misspelled")
        assert _frames(store) == frames  # frames and bulk data never rewritten
        report = export(archive, Selection(patient_id="P1"), out=tmp_path / "out")
        assert report.ok and all(item.edited for item in report.items)
        for item in report.items:
            path = Path(item.name)
            data = path.read_bytes()
            assert str(pydicom.dcmread(path).PatientName) == "DOE^JANE"
            before = _elements(originals[item.key.sop].read_bytes())
            after = _elements(data)
            assert set(before) == set(after)
            for tag in before:
                if tag != 0x00100010:
                    assert before[tag] == after[tag], f"({tag:08X}) changed"
            if DCMDUMP is not None:
                dump = subprocess.run(
                    [DCMDUMP, str(path)], check=False, capture_output=True, text=True
                ).stdout
                assert "DOE^JANE" in dump
        untouched = export(archive, Selection(patient_id="P2"), out=tmp_path / "p2")
        assert not any(item.edited for item in untouched.items)
        result = verify(archive)
    assert result.ok, result.findings
    assert sorted({v.equivalence for v in result.instances}) == ["bytes", "edited"]
    studies = read_json(store, STUDIES_INDEX)
    names = {s["00100020"]["Value"][0]: s["00100010"]["Value"][0]["Alphabetic"] for s in studies}
    assert names == {"P1": "DOE^JANE", "P2": "ROE^ANN"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-study", uid(5), "PatientName=X"], "patient-level attribute: edit it with -patient"),
        (["-study", uid(5), "StudyDate=2024"], "StudyDate: the value is not a valid DA"),
        (["-patient", "P1", "NoSuchKeyword=1"], "unknown attribute"),
        (["-study", uid(99), "StudyDescription=x"], "is not in the store"),
        (["-instance", uid(7), "PixelSpacing=1"], "VM is 2"),
        (["-instance", uid(7), "SOPInstanceUID=1.2"], "UIDs that place an instance"),
    ],
)
def test_refused_edits_change_nothing(stored: Stored, args: list[str], message: str) -> None:
    """Wrong level, wrong VR, unknown tag, unknown UID: one clear error, exit 1, no change."""
    store, _ = stored
    before = _tree(store)
    result = runner.invoke(UPDATE_APP, normalise_argv(["-o", store, *args]))
    assert result.exit_code == 1, result.output
    assert message in result.stderr and result.stderr.startswith("error:")
    assert _tree(store) == before


@pytest.mark.parametrize(
    "args",
    [
        ["-patient", "P1", "PatientBirthDate=SECRET^VALUE"],  # not a DA
        ["-patient", "P1", "PatientSex=SECRET^VALUE\\B"],  # VM: two values of one
        ["-patient", "P1", "SECRET^VALUE"],  # a value without its keyword
    ],
    ids=["vr", "vm", "no-keyword"],
)
def test_refused_edits_do_not_echo_values(stored: Stored, args: list[str]) -> None:
    """A refused edit's error names the attribute, not the value typed (it may be patient
    data): the value only with --verbose."""
    store, _ = stored
    quiet = runner.invoke(UPDATE_APP, normalise_argv(["-o", store, *args]))
    assert quiet.exit_code == 1 and quiet.stderr.startswith("error:"), quiet.output
    assert "SECRET" not in quiet.stderr, quiet.stderr
    verbose = runner.invoke(UPDATE_APP, normalise_argv(["-o", store, "-v", *args]))
    assert verbose.exit_code == 1
    assert "SECRET^VALUE" in verbose.stderr.splitlines()[-1]


def test_export_query_errors_do_not_echo_values(stored: Stored, tmp_path: Path) -> None:
    """export --query with a value and no KEY=: the error leaves the value out."""
    store, _ = stored
    result = runner.invoke(
        app, ["export", "-o", store, "--query", "SECRET^VALUE", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2, result.output  # usage
    assert result.stderr.startswith("error: a query without '='"), result.stderr
    assert "SECRET" not in result.stderr


def test_dry_run_changes_nothing(stored: Stored) -> None:
    """--dry-run prints old -> new (values only with --show-phi) and writes nothing."""
    store, _ = stored
    before = _tree(store)
    result = runner.invoke(
        app,
        normalise_argv(
            [
                "update",
                "-o",
                store,
                "-patient",
                "P2",
                "PatientName=NEW^NAME",
                "--dry-run",
                "--show-phi",
            ]
        ),
    )
    assert result.exit_code == 0, result.output
    assert "ROE^ANN -> NEW^NAME" in result.stdout and "nothing written" in result.stdout
    hidden = runner.invoke(
        app,
        normalise_argv(
            ["update", "-o", store, "-patient", "P2", "PatientName=NEW^NAME", "--dry-run"]
        ),
    )
    assert hidden.exit_code == 0, hidden.output
    assert "ROE^ANN" not in hidden.stdout and "NEW^NAME" not in hidden.stdout  # no PHI shown
    assert _tree(store) == before


@pytest.mark.parametrize("level", ["instance", "series", "study", "patient"])
def test_delete_each_level(stored: Stored, level: str) -> None:
    """Delete at each level: files gone (kept aside for revert), counts and index right, verify
    clean."""
    store, _ = stored
    target = {"instance": uid(7), "series": uid(6), "study": uid(5), "patient": "P2"}[level]
    served = {k for k in keys_under(store, KEYS.study(uid(5))) if k.endswith(".mht")}
    with Archive.open(store) as archive:
        plan = plan_delete(archive, level, target)
        report = apply_delete(archive, plan, reason="test")
        result = verify(archive)
    assert result.ok, result.findings
    studies = read_json(store, STUDIES_INDEX)
    uids = {s["0020000D"]["Value"][0] for s in studies}
    if level in ("instance", "series", "study"):
        assert uid(5) not in uids  # the study had one series of one instance
        assert not keys_under(store, KEYS.study(uid(5)))
        # a delete keeps what it removes aside: it can be reverted until purged
        aside = set(keys_under(store, KEYS.aside(report.change_id)))
        assert {KEYS.aside(report.change_id, key) for key in served} <= aside
    else:
        assert len(uids) == 2
    total = sum(s["00201208"]["Value"][0] for s in studies)
    assert total == 6 - len(plan.instances)


def test_history_and_revert(stored: Stored, tmp_path: Path) -> None:
    """Two edits make two revisions; reverting to 0 gives the original bytes back."""
    store, originals = stored
    with Archive.open(store) as archive:
        apply_update(archive, plan_update(archive, "instance", uid(7), ["InstanceNumber=42"]))
        apply_update(archive, plan_update(archive, "instance", uid(7), ["-WindowWidth"]))
        entries = history(archive, uid(7))
        # each entry names the revision its change produced
        assert [e["revision_before"] for e in entries] == [0, 1]
        assert [e["revision"] for e in entries] == [1, 2]
        assert entries[1]["changes"][0]["attribute"] == "(0028,1051) WindowWidth"
        apply_revert(archive, plan_revert(archive, uid(7), 0))
        out = export(archive, Selection(study=uid(5)), out=tmp_path / "o")
    assert out.ok and not out.items[0].edited
    assert Path(out.items[0].name).read_bytes() == originals[uid(7)].read_bytes()
    result = runner.invoke(app, ["history", "-o", store, uid(7)])
    assert result.exit_code == 0, result.output
    assert "revision 3" in result.stdout
    audit = runner.invoke(app, ["audit", "-o", store])
    assert audit.exit_code == 0, audit.output
    assert audit.stdout.count('"operation": "edit"') == 2
    assert audit.stdout.count('"operation": "revert"') == 1


SCRIPT = """
import sys
from dicomweb_archive import Archive
from dicomweb_archive.ops.update import apply_update, plan_update
with Archive.open(sys.argv[1]) as archive:
    apply_update(archive, plan_update(archive, "patient", "P1", ["PatientName=CRASH^TEST"]))
"""


@pytest.mark.shared
def test_killed_update_is_all_or_nothing(tmp_path: Path, new_store: Callable[[str], str]) -> None:
    """Killed after its k-th write, a patient edit is all old or all new once the next command
    has recovered (replayed the journal or swept the staged files); a re-run completes it."""
    files = _inputs(tmp_path)
    k = 1
    while True:
        work = new_store(f"k{k}")
        assert ingested(work, files).ok
        env = {**os.environ, CRASH_AFTER_ENV: str(k)}
        done = subprocess.run([sys.executable, "-c", SCRIPT, work], env=env, check=False)
        if done.returncode == 0:
            break
        assert done.returncode == 137
        with Archive.open(work) as archive:
            group_studies(archive)  # what every command does first (replay, sweep), then the
            build_studies(archive)  # stages the interrupted run left notified
            result = verify(archive)
        assert result.ok, (k, result.findings[:3])
        names = _names(work)
        assert names in ({"DOE^JOHN"}, {"CRASH^TEST"}), f"mixed state after write {k}: {names}"
        rerun = subprocess.run([sys.executable, "-c", SCRIPT, work], check=False)
        assert rerun.returncode == 0
        assert _names(work) == {"CRASH^TEST"}
        assert _verify(work).ok
        k += 1
    assert k > 5


def _instance_metadata(store: str, study: str = "") -> list[dict[str, Any]]:
    """The served metadata of every instance (of ``study``, or of every study): the series
    metadata files."""
    with Archive.open(store) as archive:
        storage = archive.storage
        return [
            instance
            for info in storage.list_prefix(KEYS.study(study) if study else STUDIES)
            if _is_series_metadata(info.key)
            for instance in from_json_gz(storage.get(info.key))
        ]


def _is_series_metadata(key: str) -> bool:
    """``studies/<study>/series/<series>/metadata.gz``."""
    parts = key.split("/")
    return len(parts) == 5 and parts[2] == "series" and parts[4] == "metadata.gz"


def _names(store: str) -> set[str]:
    """PatientName of every P1 instance as served (series metadata)."""
    return {
        meta["00100010"]["Value"][0]["Alphabetic"]
        for meta in _instance_metadata(store)
        if meta["00100020"]["Value"][0] == "P1"
    }


CONCURRENT = """
import sys, time
from dicomweb_archive import Archive
from dicomweb_archive.ops.update import update
store, edit, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
with Archive.open(store) as archive:
    time.sleep(max(0.0, start - time.time()))
    update(archive, "study", sys.argv[4], [edit])
"""


@pytest.mark.local
def test_two_processes_never_lose_a_change(stored: Stored) -> None:
    """Two updates of the same study at the same moment: both changes are there."""
    import time

    store, _ = stored
    start = time.time() + 1.5
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT, store, edit, str(start), uid(5)])
        for edit in ("StudyDescription=FIRST", "AccessionNumber=SECOND")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    metas = _instance_metadata(store, uid(5))
    assert metas
    for value in metas:
        assert value["00081030"]["Value"] == ["FIRST"]
        assert value["00080050"]["Value"] == ["SECOND"]
    assert [e["revision"] for e in _history(store, uid(7))] == [1, 2]
    assert _verify(store).ok


def test_reject_and_restore(stored: Stored) -> None:
    """-delete --reject hides a series (counts drop, verify clean); restore brings it back."""
    store, _ = stored

    def served() -> dict[str, str]:
        return {k: v for k, v in tree_hashes(store).items() if k.startswith(STUDIES)}

    before_files, before_rows = served(), index_dump(store)
    result = runner.invoke(
        UPDATE_APP,
        normalise_argv(
            [
                "-o",
                store,
                "-delete",
                "-series",
                uid(6),
                "--reject",
                "113001",
                "--reason",
                "blur",
            ]
        ),
    )
    assert result.exit_code == 0, result.output
    assert "rejected" in result.stdout
    assert not keys_under(store, KEYS.study(uid(5)))
    assert _verify(store).ok
    bad = runner.invoke(
        UPDATE_APP,
        normalise_argv(["-o", store, "-delete", "-instance", uid(7), "--reject", "999"]),
    )
    assert bad.exit_code != 0
    change = next(
        line
        for line in runner.invoke(app, ["audit", "-o", store]).stdout.splitlines()
        if '"reject"' in line
    )
    change_id = change.split('"change_id": "')[1].split('"')[0]
    restored = runner.invoke(app, ["restore", "-o", store, change_id])
    assert restored.exit_code == 0, restored.output
    assert served() == before_files
    assert index_dump(store) == before_rows
    assert _verify(store).ok
    audit = runner.invoke(app, ["audit", "-o", store]).stdout
    assert audit.count('"operation": "restore"') == 1  # restore = revert of a rejection


def test_batch_one_change_or_per_line(stored: Stored, tmp_path: Path) -> None:
    """A batch is all-or-nothing; --continue-on-error applies the good lines."""
    store, _ = stored
    before = _tree(store)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "level,target,edit,reason\n"
        "patient,P2,PatientName=NEW^ONE,fix\n"
        "study,P2,PatientName=WRONG^LEVEL,oops\n"
    )
    result = runner.invoke(UPDATE_APP, ["-o", store, "--file", str(bad)])
    assert result.exit_code == 1
    assert "bad.csv:3" in result.stderr and "not applied" in result.stderr
    assert _tree(store) == before
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"level": "patient", "target": "P2", "edits": ["PatientName=NEW^ONE"]}\n'
        f'{{"level": "study", "target": "{uid(5)}", "edits": ["StudyDescription=A"]}}\n'
        f'{{"level": "instance", "target": "{uid(7)}", "edits": ["InstanceNumber=9"]}}\n'
    )
    result = runner.invoke(UPDATE_APP, ["-o", store, "--file", str(good)])
    assert result.exit_code == 0, result.output
    assert "3 lines applied" in result.stdout
    assert [e["revision"] for e in _history(store, uid(7))] == [1]  # one revision for both
    result = runner.invoke(UPDATE_APP, ["-o", store, "--file", str(bad), "--continue-on-error"])
    assert result.exit_code == 1 and "1 line applied, 1 failed" in result.stdout
    assert _verify(store).ok


def test_original_attributes_sequence(stored: Stored, tmp_path: Path) -> None:
    """--original-attributes keeps the old value in (0400,0561) with reason CORRECT."""
    store, originals = stored
    result = runner.invoke(
        UPDATE_APP,
        normalise_argv(
            ["-o", store, "-instance", uid(7), "InstanceNumber=5", "--original-attributes"]
        ),
    )
    assert result.exit_code == 0, result.output
    with Archive.open(store) as archive:
        out = export(archive, Selection(study=uid(5)), out=tmp_path / "o")
    ds = pydicom.dcmread(out.items[0].name)
    item = ds.OriginalAttributesSequence[0]
    assert item.ReasonForTheAttributeModification == "CORRECT"
    assert item.ModifyingSystem.startswith("dicomweb-archive")
    old = pydicom.dcmread(originals[uid(7)]).InstanceNumber
    assert item.ModifiedAttributesSequence[0].InstanceNumber == old
    assert ds.InstanceNumber == 5
    assert _verify(store).ok


def test_batch_csv_without_its_header_row(stored: Stored, tmp_path: Path) -> None:
    """A CSV batch whose first line is an edit, not the header: one line pointing at line 1
    and saying the header is missing; nothing changed."""
    store, _ = stored
    before = _tree(store)
    headless = tmp_path / "headless.csv"
    headless.write_text("patient,P2,PatientName=NEW^ONE,fix\nstudy,P2,PatientName=X,oops\n")
    result = runner.invoke(UPDATE_APP, ["-o", store, "--file", str(headless)])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: {headless}:1: the header row is missing or wrong: the first line must name "
        "the columns level,target,edit[,reason]"
    ]
    assert _tree(store) == before


def test_batch_dry_run_and_patient_id_move(stored: Stored, tmp_path: Path) -> None:
    """A batch --dry-run writes nothing; changing PatientID moves studies to the new patient."""
    store, _ = stored
    before = _tree(store)
    lines = tmp_path / "move.jsonl"
    lines.write_text('{"level": "patient", "target": "P2", "edits": ["PatientID=P1"]}\n')
    dry = runner.invoke(UPDATE_APP, ["-o", store, "--file", str(lines), "--dry-run"])
    assert dry.exit_code == 0 and "1 line checked" in dry.stdout
    assert _tree(store) == before
    done = runner.invoke(UPDATE_APP, ["-o", store, "--file", str(lines)])
    assert done.exit_code == 0, done.output
    with Archive.open(store) as archive:
        patients = {
            row["patient_id"]: row["number_of_studies"] for row in archive.index.dump()["patients"]
        }
        assert patients == {"P1": 3}
        assert {row["operation"] for row in archive.index.audit()} == {"edit"}  # was "batch"
        assert verify(archive).ok


class _Killed(BaseException):
    """Stands for the death of a writer just after its commit point."""


@pytest.mark.parametrize("what", ["edit", "delete"])
def test_the_next_writer_plans_after_finishing_a_killed_change(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """A writer that dies after its commit point (the journal written, not applied) leaves a
    committed change; the next edit or delete applies it before it plans (the dead writer's
    lease is free), instead of waiting for it in vain and refusing "a change is being applied"
    until a command of another kind ran (found by an outside tester)."""
    from dicomweb_archive.store import journal

    assert ingested(store, _inputs(tmp_path)).ok
    apply = journal._apply

    def die(*args: Any, **kwargs: Any) -> None:
        raise _Killed

    monkeypatch.setattr(journal, "_apply", die)
    with Archive.open(store) as archive, pytest.raises(_Killed):
        apply_update(archive, plan_update(archive, "patient", "P1", ["PatientName=FIRST^EDIT"]))
    monkeypatch.setattr(journal, "_apply", apply)
    with Archive.open(store) as archive:
        if what == "edit":
            plan = plan_update(archive, "patient", "P1", ["PatientComments=SECOND"])
            assert len(plan.instances) == 4
            apply_update(archive, plan)
        else:
            apply_delete(archive, plan_delete(archive, "patient", "P1"))
        assert verify(archive).ok
    assert _names(store) == ({"FIRST^EDIT"} if what == "edit" else set())
