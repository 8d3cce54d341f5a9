"""Shared fixtures: the pydicom corpus, stores on the chosen storage, --update-golden.

``--storage local`` (the default) puts every store of the suite in a directory,
``--storage memory`` in memory (``memory://``); ``scripts/test.sh`` runs the suite on both.
Tests that need a store another process can open (crash tests, subprocesses, DCMTK on the
store's files) are marked ``local`` and run on the local storage only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_files

from tests import stores


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite tests/golden/ from the current output (review the diff!).",
    )
    parser.addoption(
        "--storage",
        choices=("local", "memory"),
        default="local",
        help="Where the suite's stores live: a directory (local) or memory.",
    )


def pytest_configure(config: pytest.Config) -> None:
    stores.BACKEND = str(config.getoption("--storage"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--storage") == "local":
        return
    skip = pytest.mark.skip(reason="needs a store on disk (another process opens it)")
    for item in items:
        if item.get_closest_marker("local") is not None:
            item.add_marker(skip)


@pytest.fixture
def new_store(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Make store locations on the chosen storage: ``new_store("name")``."""
    made: list[str] = []

    def make(name: str = "store") -> str:
        location = stores.location(tmp_path, name)
        made.append(location)
        return location

    yield make
    for location in made:
        stores.forget(location)


@pytest.fixture
def store(new_store: Callable[[str], str]) -> str:
    """A store location (not yet a store) on the chosen storage."""
    return new_store("store")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def corpus_files() -> list[Path]:
    """Every file pydicom ships for its tests (directories left out)."""
    return sorted(Path(f) for f in get_testdata_files() if Path(f).is_file())


def corpus_root() -> Path:
    return Path(get_testdata_files("CT_small.dcm")[0]).parent


def corpus_id(path: Path) -> str:
    return path.relative_to(corpus_root()).as_posix()
