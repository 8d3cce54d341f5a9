"""verify: a clean store passes; each injected fault is reported with exit code 3."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import app
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.storage import Storage, from_json_gz, json_gz
from tests.factory import uid, write_ct, write_series
from tests.stores import ingested

runner = CliRunner()
STUDY, SERIES, SOP = uid(7), uid(8), uid(9)
KEYS = StoreKeys()


@pytest.fixture
def stored(tmp_path: Path, store: str) -> str:
    """Three single-frame instances and one three-frame instance."""
    files = [
        *write_series(tmp_path / "in" / "a", count=3),
        write_ct(tmp_path / "in" / "c.dcm", study=STUDY, series=SERIES, sop=SOP, frames=3),
    ]
    assert ingested(store, files).ok
    return store


def _cli(store: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["verify", "-o", store, *args])
    return result.exit_code, result.stdout, result.stderr


def test_clean_store_verifies(stored: str) -> None:
    """Every instance is 'bytes'; no finding; exit 0; --deep and --json agree."""
    code, out, err = _cli(stored)
    assert code == 0, err
    assert "no differences" in out and "bytes" in out
    code, out, _ = _cli(stored, "--deep", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["ok"] and report["classes"] == {"bytes": 4}


def _delete_frame(storage: Storage) -> str:
    storage.delete(KEYS.frame(STUDY, SERIES, SOP, 2))
    return "2.mht"


def _flip_byte(storage: Storage) -> str:
    key = KEYS.frame(STUDY, SERIES, SOP, 1)
    data = bytearray(storage.get(key))
    data[len(data) // 2] ^= 0x01
    storage.put(key, bytes(data))
    return "1.mht"


def _garble_frame_file(storage: Storage) -> str:
    storage.put(KEYS.frame(STUDY, SERIES, SOP, 3), b"not a multipart part")
    return "3.mht"


def _change_metadata(storage: Storage) -> str:
    """The metadata an info record holds (as received, what the served files derive from)
    changed without its files or the index."""
    key = KEYS.info(STUDY, SERIES, SOP)
    info = from_json_gz(storage.get(key))
    info["metadata"]["00100010"] = {"vr": "PN", "Value": [{"Alphabetic": "MALLORY^EVE"}]}
    storage.put(key, json_gz(info))
    return SOP


def _remove_info(storage: Storage) -> str:
    storage.delete(KEYS.info(STUDY, SERIES, SOP))
    return "info.json.gz"


def _orphan_directory(storage: Storage) -> str:
    # object storage has no empty folders: the stray folder holds one object
    storage.put(KEYS.series_dir(STUDY) + "stray/notes.txt", b"not part of the store")
    return "stray"


#: fault -> (how to inject it, the finding kinds it must produce)
FAULTS: dict[str, tuple[Callable[[Storage], str], set[str]]] = {
    "deleted frame file": (_delete_frame, {"missing"}),
    "flipped byte in a frame": (_flip_byte, {"hash"}),
    "garbled frame file": (_garble_frame_file, {"corrupt"}),
    "metadata changed behind the index's back": (_change_metadata, {"metadata"}),
    "missing info record": (_remove_info, {"missing"}),
    "orphan directory": (_orphan_directory, {"orphan"}),
}


def _inject(store: str, inject: Callable[[Storage], str]) -> str:
    with Archive.open(store) as archive:
        return inject(archive.storage)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_is_reported(fault: str, stored: str) -> None:
    """The fault gives a line naming where it is, of the right kind, and exit code 3."""
    inject, kinds = FAULTS[fault]
    where = _inject(stored, inject)
    code, _out, err = _cli(stored)
    assert code == 3, err
    assert where in err
    assert all(":" in line for line in err.strip().splitlines())
    with Archive.open(stored) as archive:
        assert kinds <= {finding.kind for finding in verify(archive).findings}


def test_deep_rederives_metadata(stored: str) -> None:
    """--deep notices metadata that no longer derives from the stored file."""
    _inject(stored, _change_metadata)
    with Archive.open(stored) as archive:
        report = verify(archive, studies=[STUDY], deep=True)
    assert any(f.kind == "metadata" for f in report.findings)


def test_pending_work_is_reported(stored: str) -> None:
    """A study still waiting for a stage is reported as work not done (pending, exit code 4),
    not as a difference."""
    with Archive.open(stored) as archive:
        archive.storage.put(KEYS.notification("study", STUDY), b"{}")
        report = verify(archive)
    assert any(f.kind == "pending" for f in report.findings)
    assert report.ok and not report.complete
    code, _out, err = _cli(stored)
    assert code == 4, err


def test_against_originals(stored: str, tmp_path: Path) -> None:
    """--against: identical originals pass; a changed or unknown file is named."""
    originals = tmp_path / "in"
    code, out, _ = _cli(stored, "--against", str(originals))
    assert code == 0 and "identical: 4" in out
    other = tmp_path / "other"
    shutil.copytree(originals, other)
    write_ct(other / "new.dcm", study=uid(1), series=uid(2), sop=uid(3))
    write_ct(other / "c.dcm", study=STUDY, series=SERIES, sop=SOP, frames=3, seed=5)
    (other / "notes.txt").write_text("not dicom")
    code, _, err = _cli(stored, "--against", str(other))
    assert code == 3
    assert f"SOPInstanceUID {uid(3)} is not in the store" in err
    assert f"SOPInstanceUID {SOP} differs from the store" in err
