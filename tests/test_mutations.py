"""Mutated real files (``tests/malformed.py``): each is stored, and then verifies and exports
byte for byte, or fails with one worded line naming it; never an internal exception."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import app
from dicomweb_archive.errors import ArchiveError
from dicomweb_archive.ops.ingest import ingest
from dicomweb_archive.ops.ingest_types import PipelineOptions
from dicomweb_archive.ops.reconstruct import generate_instance
from dicomweb_archive.ops.verify_instance import verify_instance
from tests.malformed import MUTATED, mutations, pydicom_file, write_nested

#: Mutations per source file (the sources and kinds: ``tests/malformed.py``).
PER_FILE = 30
#: What would show a Python exception to a user: a class name, a traceback, a private name.
INTERNAL = re.compile(r"[A-Za-z]*(Error|Exception|Warning)\b|Traceback|\b_[A-Z]\w+")
#: The stage-1 reading path only; frames as received, so every stored file rebuilds exactly.
OPTIONS = PipelineOptions(group=False, study=False, replace=True, recompression=None)

runner = CliRunner()


def _source(name: str, tmp_path: Path) -> bytes:
    if name == "nested-500":
        return write_nested(tmp_path / "nested.dcm", 500).read_bytes()
    return pydicom_file(name).read_bytes()


def _check_failure(path: Path, error: str | None, exception: BaseException | None) -> None:
    assert isinstance(exception, ArchiveError), (path, exception)
    assert error is not None and error.startswith(f"{path}: "), error
    assert "\n" not in error and not INTERNAL.search(error), error


@pytest.mark.parametrize("source", [*MUTATED, "nested-500"])
def test_mutated_files(source: str, tmp_path: Path, store: str) -> None:
    """Every mutation is stored (verify finds its bytes, or an instance cut inside Pixel Data;
    export gives them back) or refused with one worded line naming the file."""
    data = _source(source, tmp_path)
    seed = zlib.crc32(source.encode())
    outcomes: dict[str, int] = {}
    with Archive.open_or_create(store) as archive:
        for what, mutated in mutations(data, seed, PER_FILE):
            path = tmp_path / f"{what}.dcm"
            path.write_bytes(mutated)
            (result,) = ingest(archive, [path], options=OPTIONS).results
            outcomes[result.status] = outcomes.get(result.status, 0) + 1
            if result.status == "failed":
                _check_failure(path, result.error, result.exception)
                continue
            assert result.key is not None
            checked = verify_instance(archive, result.key, deep=False, steps=[], served=None)
            kept = ("bytes", "incomplete")
            assert checked.verdict is not None and checked.verdict.equivalence in kept, (
                what,
                checked.findings,
            )
            assert b"".join(generate_instance(archive, result.key)) == mutated, what
    assert sum(outcomes.values()) == PER_FILE


def test_mutated_files_through_the_cli(tmp_path: Path, store: str) -> None:
    """Through the command, every failed file gets one worded error line naming it (none an
    unforeseen error) and the exit code is 1."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for source in MUTATED:
        data = pydicom_file(source).read_bytes()
        for what, mutated in mutations(data, zlib.crc32(source.encode()), 8):
            (inputs / f"{source}.{what}.dcm").write_bytes(mutated)
    write_nested(inputs / "nested.dcm", 500)
    result = runner.invoke(app, ["instances", "-o", store, "--no-recompress", str(inputs)])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines
    for line in lines:
        assert line.startswith(f"error: {inputs}/"), line
        assert not INTERNAL.search(line) and "unexpected error" not in line, line
