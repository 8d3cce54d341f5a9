"""verify: a clean store passes; each injected fault is reported with exit code 3."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomweb_archive import ingest
from dicomweb_archive.cli.main import app
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.files import read_json_gz, write_json_gz
from dicomweb_archive.store.layout import StoreLayout
from tests.factory import uid, write_ct, write_series

runner = CliRunner()
STUDY, SERIES, SOP = uid(7), uid(8), uid(9)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    files = [
        *write_series(tmp_path / "in" / "a", count=3),
        write_ct(tmp_path / "in" / "c.dcm", study=STUDY, series=SERIES, sop=SOP, frames=3),
    ]
    root = tmp_path / "store"
    assert ingest(files, root).ok
    return root


def _cli(root: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["verify", "-o", str(root), *args])
    return result.exit_code, result.stdout, result.stderr


def test_clean_store_verifies(store: Path) -> None:
    """Every instance is 'bytes'; no finding; exit 0; --deep and --json agree."""
    code, out, err = _cli(store)
    assert code == 0, err
    assert "no differences" in out and "bytes" in out
    code, out, _ = _cli(store, "--deep", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["ok"] and report["classes"] == {"bytes": 4}


def _delete_frame(layout: StoreLayout) -> str:
    layout.frame(STUDY, SERIES, SOP, 2).unlink()
    return "2.mht"


def _flip_byte(layout: StoreLayout) -> str:
    path = layout.frame(STUDY, SERIES, SOP, 1)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return "1.mht"


def _garble_frame_file(layout: StoreLayout) -> str:
    layout.frame(STUDY, SERIES, SOP, 3).write_bytes(b"not a multipart part")
    return "3.mht"


def _change_metadata(layout: StoreLayout) -> str:
    path = layout.instance_metadata(STUDY, SERIES, SOP)
    metadata = read_json_gz(path)
    metadata[0]["00100010"] = {"vr": "PN", "Value": [{"Alphabetic": "MALLORY^EVE"}]}
    write_json_gz(path, metadata)
    return SOP


def _remove_info(layout: StoreLayout) -> str:
    layout.info(STUDY, SERIES, SOP).unlink()
    return "info.json.gz"


def _orphan_directory(layout: StoreLayout) -> str:
    (layout.series_dir(STUDY) / "stray").mkdir()
    return "stray"


#: fault -> (how to inject it, the finding kinds it must produce)
FAULTS: dict[str, tuple[Callable[[StoreLayout], str], set[str]]] = {
    "deleted frame file": (_delete_frame, {"missing"}),
    "flipped byte in a frame": (_flip_byte, {"hash"}),
    "garbled frame file": (_garble_frame_file, {"corrupt"}),
    "metadata changed behind the index's back": (_change_metadata, {"index"}),
    "missing info record": (_remove_info, {"missing"}),
    "orphan directory": (_orphan_directory, {"orphan"}),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_is_reported(fault: str, store: Path) -> None:
    """The fault gives a line naming where it is, of the right kind, and exit code 3."""
    inject, kinds = FAULTS[fault]
    where = inject(StoreLayout(store))
    code, _out, err = _cli(store)
    assert code == 3, err
    assert where in err
    assert all(":" in line for line in err.strip().splitlines())
    assert kinds <= {finding.kind for finding in verify(store).findings}


def test_deep_rederives_metadata(store: Path) -> None:
    """--deep notices metadata that no longer derives from the stored file."""
    layout = StoreLayout(store)
    _change_metadata(layout)
    report = verify(store, studies=[STUDY], deep=True)
    assert any(f.kind == "metadata" for f in report.findings)


def test_pending_work_is_reported(store: Path, tmp_path: Path) -> None:
    """A study still waiting for a stage is a difference."""
    (store / "notifications" / "study").mkdir(parents=True, exist_ok=True)
    (store / "notifications" / "study" / STUDY).write_text("{}")
    assert any(f.kind == "pending" for f in verify(store).findings)


def test_against_originals(store: Path, tmp_path: Path) -> None:
    """--against: identical originals pass; a changed or unknown file is named."""
    originals = tmp_path / "in"
    code, out, _ = _cli(store, "--against", str(originals))
    assert code == 0 and "identical: 4" in out
    other = tmp_path / "other"
    shutil.copytree(originals, other)
    write_ct(other / "new.dcm", study=uid(1), series=uid(2), sop=uid(3))
    write_ct(other / "c.dcm", study=STUDY, series=SERIES, sop=SOP, frames=3, seed=5)
    (other / "notes.txt").write_text("not dicom")
    code, _, err = _cli(store, "--against", str(other))
    assert code == 3
    assert f"SOPInstanceUID {uid(3)} is not in the store" in err
    assert f"SOPInstanceUID {SOP} differs from the store" in err
