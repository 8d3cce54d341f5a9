"""Make ``format1-store.tar.gz``: a store written by dicomweb-archive before stores recorded
their configuration (format 1, commit 3995f20), for the upgrade test (tests/test_archive.py).

Run with that version of the package on the path, from the repository root::

    git worktree add /tmp/format1 3995f20
    PYTHONPATH=/tmp/format1/src python tests/data/make_format1_store.py

The store: two studies written with ``--path-deduplicated dd`` (one instance with bulk data
outside Pixel Data, ``-m 0``), a patient rename (history), and a rejection (set aside).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from tests.factory import make_ct, uid  # noqa: E402


def _command(name: str) -> list[str]:
    return [sys.executable, "-c", f"from dicomweb_archive.cli.main import {name}; {name}()"]


def main() -> None:
    import dicomweb_archive

    assert dicomweb_archive.__version__ == "0.1.0", "run with the format-1 version on the path"
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        inputs = root / "in"
        inputs.mkdir()
        for number in range(1, 4):
            ds = make_ct(
                study=uid("91.1"),
                series=uid("91.1.1"),
                sop=uid(f"91.1.1.{number}"),
                instance_number=number,
                rows=16,
                columns=16,
                seed=number,
            )
            ds.save_as(inputs / f"a{number}.dcm", enforce_file_format=True)
        ds = make_ct(
            study=uid("91.2"),
            series=uid("91.2.1"),
            sop=uid("91.2.1.1"),
            rows=16,
            columns=16,
            patient_id="PAT002",
        )
        ds.RedPaletteColorLookupTableData = b"\x00\x01" * 64
        ds.save_as(inputs / "b1.dcm", enforce_file_format=True)
        store = root / "store"
        mkdicomweb = _command("mkdicomweb")
        update = _command("mkdicomwebupdate")
        subprocess.run(
            [*mkdicomweb, "-m", "0", "--path-deduplicated", "dd", "-o", str(store), str(inputs)],
            check=True,
        )
        subprocess.run(
            [*update, "-o", str(store), "-patient", "PAT001", "PatientName=RENAMED^ONCE"],
            check=True,
        )
        subprocess.run(
            [
                *update,
                "-o",
                str(store),
                "-delete",
                "-instance",
                uid("91.1.1.3"),
                "--reject",
                "113001",
            ],
            check=True,
        )
        with tarfile.open(HERE / "format1-store.tar.gz", "w:gz") as tar:
            tar.add(store, arcname="store")
            tar.add(inputs, arcname="in")


if __name__ == "__main__":
    main()
