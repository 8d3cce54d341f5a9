"""A zip export leaves no member for an instance that fails while its bytes are being made;
the zip stays valid and the failure is one line."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import PART10_APP
from dicomweb_archive.errors import ExportError
from dicomweb_archive.ops import export as export_module
from dicomweb_archive.ops import reconstruct
from dicomweb_archive.ops.export import Selection, export
from tests.factory import uid, write_series
from tests.stores import ingested

runner = CliRunner()


def _fail_second(monkeypatch: pytest.MonkeyPatch, sop: str) -> None:
    """The instance ``sop`` fails after its first chunk (a store read failing mid-stream)."""
    real = reconstruct.generate_p10

    def failing(archive: Archive, key: Any, **kwargs: Any) -> Iterator[bytes | memoryview]:
        chunks = real(archive, key, **kwargs)
        if key.sop != sop:
            return chunks

        def cut() -> Iterator[bytes | memoryview]:
            yield next(chunks)
            raise ExportError("frame 1 cannot be read (simulated)")

        return cut()

    monkeypatch.setattr(export_module, "generate_p10", failing)


def _store(tmp_path: Path, store: str) -> tuple[str, list[str]]:
    files = write_series(tmp_path / "in", count=3, patient_id="PZ", study=uid(61))
    assert ingested(store, files).ok
    with Archive.open(store) as archive:
        rows = archive.index.find_instances(uid(61))
    return store, sorted(r["sop_instance_uid"] for r in rows)


def test_failing_instance_leaves_no_member(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failing instance has no member in a zip file or stream; the others are whole."""
    location, sops = _store(tmp_path, store)
    _fail_second(monkeypatch, sops[1])
    buffer = io.BytesIO()
    with Archive.open(location) as archive:
        report = export(archive, Selection(patient_id="PZ"), zip_file=tmp_path / "o.zip")
        export(archive, Selection(patient_id="PZ"), zip_file=buffer)
    (failed,) = report.failures
    assert failed.key.sop == sops[1] and "simulated" in str(failed.error)
    for target in (tmp_path / "o.zip", buffer):
        with zipfile.ZipFile(target) as zipped:
            assert zipped.testzip() is None
            names = zipped.namelist()
        assert len(names) == 2 and not any(sops[1] in name for name in names)
    if shutil.which("unzip"):
        subprocess.run(["unzip", "-tq", str(tmp_path / "o.zip")], check=True)


def test_cli_reports_the_failure_in_one_line(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mkdicomwebpart10 --zip exits 1 with one line naming the instance; the zip is valid."""
    location, sops = _store(tmp_path, store)
    _fail_second(monkeypatch, sops[1])
    out = tmp_path / "o.zip"
    result = runner.invoke(PART10_APP, ["-o", location, "--zip", str(out), uid(61)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if sops[1] in line]
    assert len(lines) == 1 and "simulated" in lines[0] and "Traceback" not in result.stderr
    with zipfile.ZipFile(out) as zipped:
        assert zipped.testzip() is None and len(zipped.namelist()) == 2
