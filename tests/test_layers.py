"""The layering of GUIDE.md holds: each library is imported only by the layer that owns it, and
nothing outside ``store/`` reads or writes a store's files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "dicomweb_archive"

#: library -> the only subpackages allowed to import it
OWNERS = {
    "typer": {"cli"},
    "rich": {"cli"},
    "click": set(),
    "sqlite3": {"index"},
    "starlette": {"web"},
    "uvicorn": {"cli"},
    "PIL": {"dicom"},
    "obstore": {"store"},
    "psycopg": {"index"},
    "psycopg_pool": {"index"},
    "python_multipart": {"web"},
    "pynetdicom": {"dimse"},
    "distributed": {"ops"},
    "dask": {"ops"},
}
#: subpackage (or top-level module) -> subpackages it must not import (lower layers never
#: import higher ones; ``archive`` is the Archive object, between ops and store/index)
FORBIDDEN = {
    "dicom": {"cli", "ops", "store", "index", "web", "dimse", "archive"},
    "model": {"cli", "ops", "store", "index", "web", "dimse", "archive"},
    "store": {"cli", "ops", "index", "web", "dimse", "archive"},
    "index": {"cli", "ops", "store", "dicom", "web", "dimse", "archive"},
    "archive": {"cli", "ops", "web", "dimse"},
    "ops": {"cli", "web", "dimse"},
    "web": {"cli", "dimse"},
    "dimse": {"cli", "web"},
}
#: Path methods and os/shutil functions that touch a file system
PATH_CALLS = {
    "read_bytes",
    "write_bytes",
    "read_text",
    "write_text",
    "unlink",
    "iterdir",
    "rglob",
    "glob",
    "rmdir",
    "mkdir",
    "touch",
    "rename",
    "symlink_to",
    "hardlink_to",
    "chmod",
}
OS_CALLS = {
    "replace",
    "rename",
    "remove",
    "unlink",
    "link",
    "listdir",
    "scandir",
    "walk",
    "makedirs",
    "mkdir",
    "rmdir",
    "chmod",
    "sync",
    "open",
    "stat",
}
#: receivers whose ``open`` is the store's, not a file's
STORE_OPENERS = {"Archive", "cls", "storage", "self.storage", "archive.storage", "zipped"}
#: modules outside store/ that use the file system, and why it is never a store's files
FILE_USERS = {
    "ops/ingest_batch.py": "reads the input files",
    "ops/distributed.py": "a Dask worker reads the input files",
    "ops/ingest_types.py": "walks the input directories",
    "ops/against.py": "reads the original files verify compares with",
    "ops/export.py": "writes the exported files",
    "index/sqlite.py": "makes the folder of its own database file",
    "index/postgres.py": "pool.open() opens psycopg's connection pool, not a file",
    "archive.py": "notes beside this machine's index cache of an S3 store the generation it holds",
    "cli/anonymize.py": "reads the key file",
    "cli/edit.py": "reads the batch file",
    "cli/serve.py": "reads the token file",
    "cli/scp.py": "reads the peers file",
    "dimse/receive.py": "reads the data set pynetdicom received into a temporary file",
    "dimse/spool.py": "the folder of pynetdicom's temporary files of data sets being received",
    "model/dictionary.py": "reads its own table, package data beside it",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _layer(relative: Path) -> str:
    if len(relative.parts) > 1:
        return relative.parts[0]
    return relative.stem if relative.stem == "archive" else ""


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_module_respects_layers(path: Path) -> None:
    """No module imports a library or layer it must not."""
    relative = path.relative_to(PACKAGE)
    layer = _layer(relative)
    for name in _imports(path):
        top = name.split(".")[0]
        if top in OWNERS:
            assert layer in OWNERS[top], f"{relative} imports {name}"
        if name.startswith("dicomweb_archive."):
            target = name.split(".")[1]
            assert target not in FORBIDDEN.get(layer, set()), f"{relative} imports {name}"


def _file_calls(path: Path) -> list[str]:
    """File-system calls in a module: Path methods, os and shutil functions, open()."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            found.append(f"open() line {node.lineno}")
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else ""
            receiver = ast.unparse(func.value)
            if owner == "shutil" or (owner == "os" and func.attr in OS_CALLS):
                found.append(f"{owner}.{func.attr} line {node.lineno}")
            elif func.attr in PATH_CALLS or (
                func.attr == "open" and receiver not in STORE_OPENERS and owner != "os"
            ):
                found.append(f"{receiver}.{func.attr}() line {node.lineno}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_only_store_touches_store_files(path: Path) -> None:
    """Every read and write of a store goes through store/'s storage protocol: no module
    outside store/ makes a file-system call, but those that read inputs or write outputs."""
    relative = path.relative_to(PACKAGE).as_posix()
    if relative.startswith("store/") or relative in FILE_USERS:
        return
    assert _file_calls(path) == [], relative


def test_file_users_still_need_it() -> None:
    """Every module allowed file access uses it (the list stays exact)."""
    for relative in FILE_USERS:
        assert _file_calls(PACKAGE / relative), relative


def test_the_checks_catch_file_calls(tmp_path: Path) -> None:
    """The file-call finder finds each kind of call (so the test above can fail)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os, shutil\nopen('x')\nos.replace('a', 'b')\nshutil.rmtree('c')\n"
        "p.read_bytes()\npath.open('rb')\nArchive.open(location)\n"
    )
    assert len(_file_calls(sample)) == 5


def test_modules_stay_small() -> None:
    """Modules stay under 600 lines (GUIDE.md: split before 600)."""
    for path in MODULES:
        assert len(path.read_text(encoding="utf-8").splitlines()) < 600, path
