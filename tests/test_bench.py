"""The benchmarks in bench/ still run, on tiny inputs, and print their tables.

Nothing here is timed: the figures printed are not checked, only that each benchmark completes
and reports the columns docs/benchmarks.md quotes (the brief: speed is measured by benchmarks
anyone can run, never by timed unit tests).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "ingest": (["--count", "4", "--frames", "2", "--size", "16"], "ingest / cp"),
    "ingest_dask": (["--count", "4", "--size", "16", "--workers", "2"], "vs baseline"),
    "dedup": (["--count", "4"], "group / per-instance"),
    "deidentify": (["--instances", "4", "--size", "16"], "pydicom / ours"),
    "export": (["--count", "4", "--size", "16"], "vs cat"),
    "update": (
        ["--count=4", "--size=16", "--frames=2", "--multiframe-instances=2", "--runs=1"],
        "dcmodify / ours",
    ),
    "serve": (["--clients", "2", "--seconds", "0.5", "--count", "3"], "requests/s"),
    "scp": (["--count", "3", "--size", "16"], "instances/s"),
    "startup": (["--runs", "1"], "vs python -c pass"),
    "render": (["--count", "2", "--size", "16", "--runs", "1"], "vs pydicom + Pillow"),
    "qido": (["--studies", "30", "--queries", "20"], "p95 < 50 ms"),
    "s3_requests": (["--count", "2"], "| total |"),
}

#: the benchmarks that take --workdir
WORKDIR = {"ingest", "ingest_dask", "export", "update", "startup", "deidentify", "render", "scp"}


@pytest.mark.local  # each benchmark makes its stores on disk, the ingest one in a subprocess
@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_runs(name: str, tmp_path: Path) -> None:
    """The benchmark completes on tiny inputs and prints its Markdown table."""
    if name in {"update", "startup", "scp"} and shutil.which("dcmodify") is None:
        pytest.skip(f"the {name} benchmark compares with DCMTK (.ci/run installs it)")
    arguments, column = CASES[name]
    if name in WORKDIR:
        arguments = [*arguments, "--workdir", str(tmp_path)]
    if name == "ingest":  # not over the results of a real run
        arguments = [*arguments, "--results", str(tmp_path / "ingest.json")]
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert column in result.stdout
    assert "| ---" in result.stdout
    if name == "ingest":
        assert len(json.loads((tmp_path / "ingest.json").read_text())) == 5
