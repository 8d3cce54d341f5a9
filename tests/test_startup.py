"""Commands start at once: what each imports is checked here (its time is measured by
``bench/startup.py``, never by a test). ``--version`` imports nothing but the package's entry
module; ``--help`` and commands that only read metadata or change it import none of the heavy
libraries (numpy, imagecodecs, pydicom, starlette, pydantic), which only the commands that
decode pixels or serve HTTP need."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dicomweb_archive import Archive, ingest
from dicomweb_archive.cli.main import SUBCOMMANDS
from dicomweb_archive.ops.ingest_types import PipelineOptions
from tests.factory import write_series

HEAVY = {"numpy", "imagecodecs", "pydicom", "starlette", "uvicorn", "pydantic", "PIL"}
DRIVER = """
import json, sys
before = set(sys.modules)
sys.argv = [{name!r}, *{args!r}]
from dicomweb_archive.cli import entry
code = 0
try:
    getattr(entry, {function!r})()
except SystemExit as exc:
    code = exc.code or 0
new = sorted(set(sys.modules) - before)
sys.stderr.write("MODULES " + json.dumps([code, new]) + "\\n")
"""


def imported(function: str, *args: str) -> set[str]:
    """Top-level packages a console command imports, beyond the interpreter's own start (the
    command must succeed)."""
    return {name.split(".")[0] for name in imported_modules(function, *args)}


def imported_modules(function: str, *args: str) -> set[str]:
    """Modules a console command imports, beyond the interpreter's own start (the command
    must succeed)."""
    name = function.replace("_", "-")
    code = DRIVER.format(name=name, args=list(args), function=function)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    line = next(x for x in result.stderr.splitlines() if x.startswith("MODULES "))
    code, modules = json.loads(line.removeprefix("MODULES "))
    assert code == 0, result.stderr
    return set(modules)


def test_version_imports_only_the_entry_module() -> None:
    modules = imported("mkdicomweb", "--version")
    assert modules - set(sys.stdlib_module_names) == {"dicomweb_archive"}


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("dicomweb_archive", ["--help"]),
        ("mkdicomweb", ["--help"]),
        ("mkdicomwebupdate", ["--help"]),
        ("mkdicomwebpart10", ["--help"]),
        ("dicomweb_archive", ["verify", "--help"]),
        ("dicomweb_archive", ["serve", "--help"]),
    ],
)
def test_help_imports_no_heavy_library(function: str, args: list[str]) -> None:
    modules = imported(function, *args)
    assert not modules & (HEAVY | {"rich"}), modules & (HEAVY | {"rich"})


def test_update_help_imports_no_operation() -> None:
    """`mkdicomwebupdate --help` builds its options from the command modules alone: no
    operation, store or index module, and not the pixel cleaning rules of -anonymize."""
    modules = imported_modules("mkdicomwebupdate", "--help")
    ours = {name.split(".")[1] for name in modules if name.startswith("dicomweb_archive.")}
    assert ours <= {"cli", "model", "errors"}, ours
    assert "dicomweb_archive.model.pixel_rules" not in modules


@pytest.mark.local
def test_reading_and_editing_metadata_import_no_heavy_library(tmp_path: Path) -> None:
    """Listing, checking and editing a store whose frames are kept as received decode no
    pixels: none of those commands imports numpy, pydicom or the codecs."""
    write_series(tmp_path / "in", count=3)
    store = str(tmp_path / "store")
    with Archive.open_or_create(store) as archive:
        assert ingest(archive, [tmp_path / "in"], options=PipelineOptions(recompression=None)).ok
    for function, args in [
        ("dicomweb_archive", ["studies", "-o", store]),
        ("dicomweb_archive", ["verify", "-o", store]),
        ("mkdicomwebupdate", ["-o", store, "-patient", "PAT001", "PatientName=NEW^NAME"]),
        ("dicomweb_archive", ["history", "-o", store, "--help"]),
    ]:
        modules = imported(function, *args)
        assert not modules & HEAVY, (args, modules & HEAVY)


def test_umbrella_help_builds_no_subcommand() -> None:
    """`dicomweb-archive --help` lists the subcommands without importing any of their
    modules (typer building all twenty took about 0.1 s)."""
    modules = imported_modules("dicomweb_archive", "--help")
    commands = {sub.target.split(":")[0] for sub in SUBCOMMANDS.values()}
    loaded = (commands - {"dicomweb_archive.cli.usage"}) & modules  # usage: the group's own
    assert not loaded, loaded


def test_subcommand_summaries_are_their_help() -> None:
    """Each summary the umbrella lists is the first paragraph of the help of the command it
    names (the table cannot drift from the commands)."""
    for name, sub in SUBCOMMANDS.items():
        command = sub.build(name)
        assert command.name == name
        first = (command.help or "").split("\n\n")[0]
        assert " ".join(first.split()) == sub.summary, name


@pytest.mark.local
def test_verify_off_a_terminal_imports_no_progress_bar(tmp_path: Path) -> None:
    """verify with its output piped draws no progress bar and does not import rich's."""
    write_series(tmp_path / "in", count=1)
    store = str(tmp_path / "store")
    with Archive.open_or_create(store) as archive:
        assert ingest(archive, [tmp_path / "in"], options=PipelineOptions(recompression=None)).ok
    assert "rich.progress" not in imported_modules("dicomweb_archive", "verify", "-o", store)


START_DRIVER = """
import os, sys
sys.argv = ["dicomweb-archive", "--version"]
from dicomweb_archive.cli import entry
entry.dicomweb_archive()
sys.stderr.write("BLAS " + os.environ.get("OPENBLAS_NUM_THREADS", "unset") + "\\n")
import gc
sys.stderr.write("GC " + " ".join(map(str, gc.get_threshold())) + "\\n")
"""


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("2", "2")])
def test_commands_start_blas_with_one_thread(given: str | None, expected: str) -> None:
    """Every command leaves numpy's OpenBLAS one thread (its thread pool cost about 50 ms of
    CPU at import; nothing calls BLAS), unless OPENBLAS_NUM_THREADS says otherwise."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    result = subprocess.run(
        [sys.executable, "-c", START_DRIVER],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    assert f"BLAS {expected}" in result.stderr.splitlines()


def test_commands_collect_garbage_less_often() -> None:
    """Commands run Python's cyclic garbage collector after 50,000 allocations, not 700 (it
    scanned the metadata a command holds again and again: half the CPU of planning a
    1000-instance rename)."""
    result = subprocess.run(
        [sys.executable, "-c", START_DRIVER],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "GC 50000 20 20" in result.stderr.splitlines()


def test_the_demo_data_script_needs_no_test_extras(tmp_path: Path) -> None:
    """scripts/sample_data.py (the README's first command, installed without the test
    extras) imports tests/factory.py: it must not need pytest (the demo stopped at once)."""
    program = (
        "import runpy, sys; sys.modules['pytest'] = None; "
        f"sys.argv = ['sample_data.py', {str(tmp_path / 'data')!r}]; "
        "runpy.run_path('scripts/sample_data.py', run_name='__main__')"
    )
    root = Path(__file__).parent.parent
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=root, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert any((tmp_path / "data").rglob("*.dcm"))
