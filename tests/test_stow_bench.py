"""bench/stow.py still runs, on tiny inputs, and prints its table (figures not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.local  # the server runs in its own process on a store on disk
def test_stow_benchmark_runs(tmp_path: Path) -> None:
    """The STOW-RS benchmark completes on tiny inputs and prints its Markdown table."""
    arguments = ["--count", "3", "--size", "16", "--clients", "1,2", "--workdir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "stow.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "vs mkdicomweb" in result.stdout and "| ---" in result.stdout
    assert "STOW-RS, 2 client(s)" in result.stdout
