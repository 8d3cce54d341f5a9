"""Interrupted ingest: killed after every k-th file write, the store recovers exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dicomweb_archive.store.local import CRASH_AFTER_ENV
from dicomweb_archive.store.storage import from_json_gz
from tests.factory import uid, write_ct, write_series
from tests.stores import index_dump, ingested, objects, tree_hashes

SCRIPT = """
import sys
from dicomweb_archive import Archive, ingest
with Archive.open_or_create(sys.argv[2]) as archive:
    ingest(archive, [sys.argv[1]])
"""


def _run(inputs: Path, store: str, crash_after: int) -> int:
    env = {**os.environ, CRASH_AFTER_ENV: str(crash_after)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(inputs), store], env=env, check=False)
    return done.returncode


def _visible_files_complete(store: str) -> None:
    """Every object under a served (non-private) key is complete (gzip members decompress),
    but those of instances not committed yet: frames, metadata and the deduplicated record of
    a new instance are written in place before its info record, and the next writer removes
    them (``store/recovery.py``)."""
    everything = objects(store)
    folders = {k.rsplit("/", 1)[0] for k in everything if "/instances/" in k}
    folders = {f.split("/frames")[0] for f in folders if f.count("/") == 5 or "/frames" in f}
    uncommitted = {f for f in folders if f + "/info.json.gz" not in everything}
    sops = {f.rsplit("/", 1)[1] for f in uncommitted}
    for key, data in everything.items():
        if any(key.startswith(f + "/") for f in uncommitted):
            continue
        if key.startswith("instances/") and key.rsplit("/", 1)[1][:-3] in sops:
            continue
        if key.endswith(".gz"):
            from_json_gz(data)


@pytest.mark.shared
def test_killed_at_every_write_then_rerun(tmp_path: Path, new_store: Callable[[str], str]) -> None:
    """After a kill at write k, a re-run gives the same store as an uninterrupted run."""
    inputs = tmp_path / "in"
    write_series(inputs / "a", count=2, patient_id="P1")
    write_ct(inputs / "b.dcm", study=uid(5), series=uid(6), sop=uid(7), frames=2)
    reference = new_store("reference")
    assert ingested(reference, [inputs]).ok
    expected_files, expected_rows = tree_hashes(reference), index_dump(reference)
    k = 1
    while True:
        store = new_store(f"store{k}")
        code = _run(inputs, store, k)
        if code == 0:
            break
        assert code == 137
        _visible_files_complete(store)
        report = ingested(store, [inputs])
        assert report.ok
        assert tree_hashes(store) == expected_files, f"after a kill at write {k}"
        assert index_dump(store) == expected_rows
        k += 1
    assert k > 10  # the run really had that many writes to interrupt


@pytest.mark.shared
def test_verify_after_a_killed_ingest_is_interrupted_not_different(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Killed after writing an instance's bulk data but before its info record: verify
    reports the bulk data as interrupted work (exit 4 class), not as a difference (exit 3:
    monitoring read every crash as corruption); the next writer removes it; verify is clean."""
    from dicomweb_archive import Archive
    from dicomweb_archive.ops.verify import verify
    from tests.factory import make_ct

    inputs = tmp_path / "in"
    inputs.mkdir()
    ds = make_ct(study=uid(40), series=uid(41), sop=uid(42), frames=2)
    ds.add_new(0x00420011, "OB", bytes(range(256)) * 1024)  # over 128 KiB: bulk data
    ds.save_as(inputs / "bulk.dcm", enforce_file_format=True)
    for k in range(1, 40):
        store = new_store(f"k{k}")
        if _run(inputs, store, k) == 0:
            break
        with Archive.open(store) as archive:
            findings = verify(archive).findings
        kinds = {f.kind for f in findings}
        if any("bulkdata" in f.where for f in findings):
            assert kinds <= {"interrupted", "pending"}, findings  # work, not differences
            with Archive.open(store) as archive:
                with archive.writing("test"):  # the next writer recovers
                    pass
                report = verify(archive)
            assert report.ok and not any("bulkdata" in f.where for f in report.findings)
            return
    pytest.fail("no kill point left bulk data without its instance")
