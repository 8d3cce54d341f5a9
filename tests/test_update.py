"""Metadata-only updates: patient rename across studies, refusals, delete, revert, crashes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from dicomweb_archive import build_studies, group_studies, ingest
from dicomweb_archive.cli.main import UPDATE_APP, app
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.dicom.parse import parse_p10
from dicomweb_archive.ops.delete import apply_delete, apply_revert, plan_delete, plan_revert
from dicomweb_archive.ops.export import Selection, export
from dicomweb_archive.ops.update import apply_update, history, plan_update
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.files import CRASH_AFTER_ENV, read_json_gz
from dicomweb_archive.store.layout import PRIVATE_DIR
from tests.factory import uid, write_ct, write_series

runner = CliRunner()
DCMDUMP = shutil.which("dcmdump")


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """Patient P1 with two studies (one multi-frame), patient P2 with one."""
    files = [
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
    store = tmp_path / "store"
    assert ingest(files, store).ok
    by_sop = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}
    return store, by_sop


def _tree(store: Path) -> dict[str, str]:
    """Hash of every file of the store, the SQLite index included."""
    return {
        p.relative_to(store).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def _frames(store: Path) -> dict[str, tuple[int, int, str]]:
    return {
        str(p): (p.stat().st_ino, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in store.rglob("*.mht")
    } | {str(p): (p.stat().st_ino, p.stat().st_mtime_ns, "") for p in store.rglob("bulkdata/*/*/*")}


def _elements(data: bytes) -> dict[int, bytes]:
    parsed = parse_p10(data)
    return {e.tag: data[e.offset : e.end] for e in parsed.dataset}


def test_patient_rename_across_studies(
    archive: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    """Every instance of P1 gets the new name; every other element keeps its bytes."""
    store, originals = archive
    frames = _frames(store)
    plan = plan_update(store, "patient", "P1", ["PatientName=DOE^JANE"])
    assert len(plan.instances) == 4 and len(plan.studies) == 2
    apply_update(store, plan, reason="misspelled")
    assert _frames(store) == frames  # frames and bulk data never rewritten
    report = export(store, Selection(patient_id="P1"), out=tmp_path / "out")
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
    untouched = export(store, Selection(patient_id="P2"), out=tmp_path / "p2")
    assert not any(item.edited for item in untouched.items)
    result = verify(store)
    assert result.ok, result.findings
    assert sorted({v.equivalence for v in result.instances}) == ["bytes", "edited"]
    studies = read_json_gz(store / "studies" / "index.json.gz")
    names = {s["00100020"]["Value"][0]: s["00100010"]["Value"][0]["Alphabetic"] for s in studies}
    assert names == {"P1": "DOE^JANE", "P2": "ROE^ANN"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-study", uid(5), "PatientName=X"], "patient-level attribute: edit it with -patient"),
        (["-study", uid(5), "StudyDate=2024"], "Invalid value for VR DA"),
        (["-patient", "P1", "NoSuchKeyword=1"], "unknown attribute"),
        (["-study", uid(99), "StudyDescription=x"], "is not in the store"),
        (["-instance", uid(7), "PixelSpacing=1"], "VM is 2"),
        (["-instance", uid(7), "SOPInstanceUID=1.2"], "UIDs that place an instance"),
    ],
)
def test_refused_edits_change_nothing(
    archive: tuple[Path, dict[str, Path]], args: list[str], message: str
) -> None:
    """Wrong level, wrong VR, unknown tag, unknown UID: one clear error, exit 1, no change."""
    store, _ = archive
    before = _tree(store)
    result = runner.invoke(UPDATE_APP, normalise_argv(["-o", str(store), *args]))
    assert result.exit_code == 1, result.output
    assert message in result.stderr and result.stderr.startswith("error:")
    assert _tree(store) == before


def test_dry_run_changes_nothing(archive: tuple[Path, dict[str, Path]]) -> None:
    """--dry-run prints old -> new and writes nothing."""
    store, _ = archive
    before = _tree(store)
    result = runner.invoke(
        app,
        normalise_argv(
            ["update", "-o", str(store), "-patient", "P2", "PatientName=NEW^NAME", "--dry-run"]
        ),
    )
    assert result.exit_code == 0
    assert "ROE^ANN -> NEW^NAME" in result.stdout and "nothing written" in result.stdout
    assert _tree(store) == before


@pytest.mark.parametrize("level", ["instance", "series", "study", "patient"])
def test_delete_each_level(archive: tuple[Path, dict[str, Path]], level: str) -> None:
    """Delete at each level: files gone, counts and index right, verify clean."""
    store, _ = archive
    target = {"instance": uid(7), "series": uid(6), "study": uid(5), "patient": "P2"}[level]
    plan = plan_delete(store, level, target)
    apply_delete(store, plan, reason="test")
    result = verify(store)
    assert result.ok, result.findings
    studies = read_json_gz(store / "studies" / "index.json.gz")
    uids = {s["0020000D"]["Value"][0] for s in studies}
    if level in ("instance", "series", "study"):
        assert uid(5) not in uids  # the study had one series of one instance
        assert not (store / "studies" / uid(5)).exists()
    else:
        assert len(uids) == 2
    total = sum(s["00201208"]["Value"][0] for s in studies)
    assert total == 6 - len(plan.instances)


def test_history_and_revert(archive: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    """Two edits make two revisions; reverting to 0 gives the original bytes back."""
    store, originals = archive
    apply_update(store, plan_update(store, "instance", uid(7), ["InstanceNumber=42"]))
    apply_update(store, plan_update(store, "instance", uid(7), ["-WindowWidth"]))
    entries = history(store, uid(7))
    assert [e["revision"] for e in entries] == [0, 1]
    assert entries[1]["changes"][0]["attribute"] == "(0028,1051) WindowWidth"
    apply_revert(store, plan_revert(store, uid(7), 0))
    out = export(store, Selection(study=uid(5)), out=tmp_path / "o")
    assert out.ok and not out.items[0].edited
    assert Path(out.items[0].name).read_bytes() == originals[uid(7)].read_bytes()
    result = runner.invoke(app, ["history", "-o", str(store), uid(7)])
    assert "revision 2" in result.stdout
    audit = runner.invoke(app, ["audit", "-o", str(store)])
    assert audit.stdout.count('"operation": "update"') == 2
    assert audit.stdout.count('"operation": "revert"') == 1


SCRIPT = """
import sys
from dicomweb_archive.ops.update import apply_update, plan_update
store = sys.argv[1]
apply_update(store, plan_update(store, "patient", "P1", ["PatientName=CRASH^TEST"]))
"""


def test_killed_update_is_all_or_nothing(
    archive: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    """Killed after its k-th write, a patient edit is all old or all new once the next command
    has recovered (replayed the journal or swept the staged files); a re-run completes it."""
    store, _ = archive
    pristine = tmp_path / "pristine"
    shutil.copytree(store, pristine)
    k = 1
    while True:
        work = tmp_path / f"k{k}"
        shutil.copytree(pristine, work)
        env = {**os.environ, CRASH_AFTER_ENV: str(k)}
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(work)], env=env, check=False)
        if done.returncode == 0:
            break
        assert done.returncode == 137
        group_studies(work)  # what every command does first (replay, sweep), then the
        build_studies(work)  # stages the interrupted run left notified
        result = verify(work)
        assert result.ok, (k, result.findings[:3])
        names = _names(work)
        assert names in ({"DOE^JOHN"}, {"CRASH^TEST"}), f"mixed state after write {k}: {names}"
        rerun = subprocess.run([sys.executable, "-c", SCRIPT, str(work)], check=False)
        assert rerun.returncode == 0
        assert _names(work) == {"CRASH^TEST"}
        assert verify(work).ok
        k += 1
    assert k > 5


def _names(store: Path) -> set[str]:
    """PatientName of every P1 instance as served (instance metadata files)."""
    names = set()
    for path in store.glob("studies/*/series/*/instances/*/metadata.gz"):
        meta = read_json_gz(path)[0]
        if meta["00100020"]["Value"][0] == "P1":
            names.add(meta["00100010"]["Value"][0]["Alphabetic"])
    return names


CONCURRENT = """
import sys, time
from dicomweb_archive.ops.update import update
store, edit, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
update(store, "study", sys.argv[4], [edit])
"""


def test_two_processes_never_lose_a_change(archive: tuple[Path, dict[str, Path]]) -> None:
    """Two updates of the same study at the same moment: both changes are there."""
    import time

    store, _ = archive
    start = time.time() + 1.5
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT, str(store), edit, str(start), uid(5)])
        for edit in ("StudyDescription=FIRST", "AccessionNumber=SECOND")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    meta = next(store.glob("studies/*/series/*/instances/*/metadata.gz"))
    metas = [
        read_json_gz(p)[0] for p in store.glob(f"studies/{uid(5)}/series/*/instances/*/metadata.gz")
    ]
    assert metas and meta.exists()
    for value in metas:
        assert value["00081030"]["Value"] == ["FIRST"]
        assert value["00080050"]["Value"] == ["SECOND"]
    assert [e["revision"] for e in history(store, uid(7))] == [0, 1]
    assert verify(store).ok


def test_reject_and_restore(archive: tuple[Path, dict[str, Path]]) -> None:
    """-delete --reject hides a series (counts drop, verify clean); restore brings it back."""
    from dicomweb_archive.index.database import Index

    store, _ = archive

    def served() -> dict[str, str]:
        return {k: v for k, v in _tree(store).items() if k.startswith("studies/")}

    def rows() -> dict[str, list[dict[str, object]]]:
        with Index(store / PRIVATE_DIR / "index.sqlite") as index:
            return index.dump()

    before_files, before_rows = served(), rows()
    result = runner.invoke(
        UPDATE_APP,
        normalise_argv(
            [
                "-o",
                str(store),
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
    assert not (store / "studies" / uid(5)).exists()
    assert verify(store).ok
    bad = runner.invoke(
        UPDATE_APP,
        normalise_argv(["-o", str(store), "-delete", "-instance", uid(7), "--reject", "999"]),
    )
    assert bad.exit_code != 0
    change = next(
        line
        for line in runner.invoke(app, ["audit", "-o", str(store)]).stdout.splitlines()
        if '"reject"' in line
    )
    change_id = change.split('"change_id": "')[1].split('"')[0]
    restored = runner.invoke(app, ["restore", "-o", str(store), change_id])
    assert restored.exit_code == 0, restored.output
    assert served() == before_files
    assert rows() == before_rows
    assert verify(store).ok


def test_batch_one_change_or_per_line(
    archive: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    """A batch is all-or-nothing; --continue-on-error applies the good lines."""
    store, _ = archive
    before = _tree(store)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "level,target,edit,reason\n"
        "patient,P2,PatientName=NEW^ONE,fix\n"
        "study,P2,PatientName=WRONG^LEVEL,oops\n"
    )
    result = runner.invoke(UPDATE_APP, ["-o", str(store), "--file", str(bad)])
    assert result.exit_code == 1
    assert "bad.csv:3" in result.stderr and "not applied" in result.stderr
    assert _tree(store) == before
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"level": "patient", "target": "P2", "edits": ["PatientName=NEW^ONE"]}\n'
        f'{{"level": "study", "target": "{uid(5)}", "edits": ["StudyDescription=A"]}}\n'
        f'{{"level": "instance", "target": "{uid(7)}", "edits": ["InstanceNumber=9"]}}\n'
    )
    result = runner.invoke(UPDATE_APP, ["-o", str(store), "--file", str(good)])
    assert result.exit_code == 0, result.output
    assert "3 lines applied" in result.stdout
    assert [e["revision"] for e in history(store, uid(7))] == [0]  # one revision for both
    result = runner.invoke(
        UPDATE_APP, ["-o", str(store), "--file", str(bad), "--continue-on-error"]
    )
    assert result.exit_code == 1 and "1 lines applied, 1 failed" in result.stdout
    assert verify(store).ok


def test_original_attributes_sequence(
    archive: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    """--original-attributes keeps the old value in (0400,0561) with reason CORRECT."""
    store, originals = archive
    result = runner.invoke(
        UPDATE_APP,
        normalise_argv(
            ["-o", str(store), "-instance", uid(7), "InstanceNumber=5", "--original-attributes"]
        ),
    )
    assert result.exit_code == 0, result.output
    out = export(store, Selection(study=uid(5)), out=tmp_path / "o")
    ds = pydicom.dcmread(out.items[0].name)
    item = ds.OriginalAttributesSequence[0]
    assert item.ReasonForTheAttributeModification == "CORRECT"
    assert item.ModifyingSystem.startswith("dicomweb-archive")
    old = pydicom.dcmread(originals[uid(7)]).InstanceNumber
    assert item.ModifiedAttributesSequence[0].InstanceNumber == old
    assert ds.InstanceNumber == 5
    assert verify(store).ok


def test_batch_dry_run_and_patient_id_move(
    archive: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    """A batch --dry-run writes nothing; changing PatientID moves studies to the new patient."""
    from dicomweb_archive.index.database import Index

    store, _ = archive
    before = _tree(store)
    lines = tmp_path / "move.jsonl"
    lines.write_text('{"level": "patient", "target": "P2", "edits": ["PatientID=P1"]}\n')
    dry = runner.invoke(UPDATE_APP, ["-o", str(store), "--file", str(lines), "--dry-run"])
    assert dry.exit_code == 0 and "1 lines checked" in dry.stdout
    assert _tree(store) == before
    done = runner.invoke(UPDATE_APP, ["-o", str(store), "--file", str(lines)])
    assert done.exit_code == 0, done.output
    with Index(store / PRIVATE_DIR / "index.sqlite") as index:
        patients = {row["patient_id"]: row["number_of_studies"] for row in index.dump()["patients"]}
        assert patients == {"P1": 3}
        assert {row["operation"] for row in index.audit()} == {"batch"}
    assert verify(store).ok
