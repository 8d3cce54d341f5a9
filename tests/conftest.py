"""Shared fixtures: the pydicom corpus, generated stores, the --update-golden switch."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_files


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite tests/golden/ from the current output (review the diff!).",
    )


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
