"""Commands on a terminal draw rich progress bars (on stderr): the test suite otherwise runs
them piped, where no bar is drawn. A terminal here is a pseudo-terminal (``pty``); found by an
outside tester: mkdicomweb, verify and export stopped at once on any terminal, rich's progress
display failing on the lazy console stand-in."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factory import write_series

pytestmark = pytest.mark.local  # a store on disk, commands in processes of their own


def _on_terminal(command: str, *args: str) -> tuple[int, str]:
    """Run a command (an entry point of ``cli/entry.py``) with stdin, stdout and stderr on a
    pseudo-terminal; its exit code and everything it wrote."""
    main, child = pty.openpty()
    program = f"import sys; sys.argv[0] = {command!r}; from dicomweb_archive.cli import entry; "
    program += f"entry.{command.replace('-', '_')}()"
    process = subprocess.Popen(
        [sys.executable, "-c", program, *args],
        stdin=child,
        stdout=child,
        stderr=child,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
    )
    os.close(child)
    out = bytearray()
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal's other side closed: the process ended
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    return process.wait(timeout=120), out.decode("utf-8", "replace")


def test_ingest_verify_and_export_on_a_terminal(tmp_path: Path) -> None:
    write_series(tmp_path / "in", count=3)
    store = str(tmp_path / "store")
    for args in (
        ["mkdicomweb", "-o", store, str(tmp_path / "in")],
        ["dicomweb-archive", "verify", "-o", store],
        ["mkdicomwebpart10", "-o", store, "--all", "--out", str(tmp_path / "out")],
    ):
        code, output = _on_terminal(*args)
        assert code == 0, (args, output)
        assert "Traceback" not in output and "Error" not in output, output
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 3
