"""Interrupted ingest: killed after every k-th file write, the store recovers exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dicomweb_archive import ingest
from dicomweb_archive.store.files import CRASH_AFTER_ENV, read_json_gz
from tests.factory import uid, write_ct, write_series
from tests.test_ingest import index_dump, tree_hashes

SCRIPT = "import sys; from dicomweb_archive import ingest; ingest([sys.argv[1]], sys.argv[2])"


def _run(inputs: Path, store: Path, crash_after: int) -> int:
    env = {**os.environ, CRASH_AFTER_ENV: str(crash_after)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(inputs), str(store)], env=env, check=False
    )
    return done.returncode


def _visible_files_complete(store: Path) -> None:
    """Every file under a real (non-dot) name is complete: gzip members decompress."""
    for path in store.rglob("*.gz"):
        if not any(part.startswith(".") for part in path.relative_to(store).parts):
            read_json_gz(path)


def test_killed_at_every_write_then_rerun(tmp_path: Path) -> None:
    """After a kill at write k, a re-run gives the same store as an uninterrupted run."""
    inputs = tmp_path / "in"
    write_series(inputs / "a", count=2, patient_id="P1")
    write_ct(inputs / "b.dcm", study=uid(5), series=uid(6), sop=uid(7), frames=2)
    reference = tmp_path / "reference"
    ingest([inputs], reference)
    expected_files, expected_rows = tree_hashes(reference), index_dump(reference)
    k = 1
    while True:
        store = tmp_path / f"store{k}"
        code = _run(inputs, store, k)
        if code == 0:
            break
        assert code == 137
        _visible_files_complete(store)
        report = ingest([inputs], store)
        assert report.ok
        assert tree_hashes(store) == expected_files, f"after a kill at write {k}"
        assert index_dump(store) == expected_rows
        k += 1
    assert k > 10  # the run really had that many writes to interrupt
