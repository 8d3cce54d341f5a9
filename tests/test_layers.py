"""The layering of GUIDE.md holds: each library is imported only by the layer that owns it."""

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
    "sqlite_utils": {"index"},
    "starlette": {"web"},
    "uvicorn": {"cli"},
}
#: subpackage -> subpackages it must not import (lower layers never import higher ones)
FORBIDDEN = {
    "dicom": {"cli", "ops", "store", "index"},
    "model": {"cli", "ops", "store", "index"},
    "store": {"cli", "ops", "index"},
    "index": {"cli", "ops", "store", "dicom"},
    "ops": {"cli", "web"},
    "web": {"cli"},
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


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_module_respects_layers(path: Path) -> None:
    """No module imports a library or layer it must not."""
    relative = path.relative_to(PACKAGE)
    layer = relative.parts[0] if len(relative.parts) > 1 else ""
    for name in _imports(path):
        top = name.split(".")[0]
        if top in OWNERS:
            assert layer in OWNERS[top], f"{relative} imports {name}"
        if name.startswith("dicomweb_archive."):
            target = name.split(".")[1]
            assert target not in FORBIDDEN.get(layer, set()), f"{relative} imports {name}"


def test_modules_stay_small() -> None:
    """Modules stay under 600 lines (GUIDE.md: split before 600)."""
    for path in MODULES:
        assert len(path.read_text(encoding="utf-8").splitlines()) < 600, path
