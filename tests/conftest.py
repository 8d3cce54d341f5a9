"""Shared fixtures: the pydicom corpus, stores on the chosen storage, --update-golden.

``--storage local`` (the default) puts every store of the suite in a directory,
``--storage memory`` in memory (``memory://``), ``--storage s3`` in a bucket of a real S3
endpoint (moto's server on loopback, started for the session: ``tests/s3server.py``);
``--index postgres`` indexes the stores the suite makes in a PostgreSQL server the session
starts (``tests/pgserver.py``). ``scripts/test.sh`` runs the suite three times: local with
SQLite, memory with SQLite, S3 with PostgreSQL. After each test (and each module, for its
fixtures' stores) its S3 stores are removed and its PostgreSQL schemas emptied for reuse
(``tests/stores.py``). Tests that read a store's files on disk (DCMTK on them, links, file
modes) are marked ``local`` and run on the local storage only; tests where another process
opens the store (the crash tests: a writer killed at its k-th write) are marked ``shared`` and
run on local and S3. ``DICOMWEB_TEST_S3_LOG=FILE`` keeps the S3 server's request log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_files

from tests import stores

#: environment variable: a file for the request log of the session's S3 server (to count them)
S3_LOG_ENV = "DICOMWEB_TEST_S3_LOG"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite tests/golden/ from the current output (review the diff!).",
    )
    parser.addoption(
        "--storage",
        choices=("local", "memory", "s3"),
        default="local",
        help="Where the suite's stores live: a directory (local), memory, or S3 (moto server).",
    )
    parser.addoption(
        "--index",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="The index of the stores the suite makes in its own process: SQLite, or a "
        "PostgreSQL server the session starts (a schema per store).",
    )


def pytest_configure(config: pytest.Config) -> None:
    stores.BACKEND = str(config.getoption("--storage"))


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the session, its bucket, and the AWS environment
    pointing at it (index caches in the session's temporary folder): its URL."""
    from tests.s3server import s3_server

    log = os.environ.get(S3_LOG_ENV)
    with s3_server(tmp_path_factory.mktemp("cache"), log=Path(log) if log else None) as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def _s3_backend(request: pytest.FixtureRequest) -> None:
    """With ``--storage s3`` every store of the suite is in the S3 server's bucket."""
    if request.config.getoption("--storage") == "s3":
        request.getfixturevalue("s3_endpoint")


@pytest.fixture(scope="module", autouse=True)
def _module_stores_released() -> Iterator[None]:
    """The S3 stores and index schemas a module's fixtures made are released after its
    tests (:func:`_stores_released`)."""
    since = stores.marks()
    yield
    stores.release(since)


@pytest.fixture(autouse=True)
def _stores_released() -> Iterator[None]:
    """The S3 stores a test made are removed after it, and their PostgreSQL schemas emptied
    for the next stores: moto lists a bucket by going through every key in it, so a bucket
    that kept every test's objects would make each listing slower than the last; a new
    schema costs more than emptying one."""
    since = stores.marks()
    yield
    stores.release(since)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 for the session (``tests/pgserver.py``): its URL."""
    from tests.pgserver import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def _postgres_backend(request: pytest.FixtureRequest) -> Iterator[None]:
    """With ``--index postgres`` every store this process makes is indexed in the session's
    PostgreSQL server, each in a schema of its own."""
    if request.config.getoption("--index") != "postgres":
        yield
        return
    from dataclasses import replace

    from dicomweb_archive import archive

    url = request.getfixturevalue("postgres_url")
    made = archive._default_config

    def indexed() -> Any:
        return replace(made(), index=f"{url}?schema={stores.index_schema()}")

    stores.POSTGRES_URL = url
    archive._default_config = indexed
    yield
    archive._default_config = made
    stores.POSTGRES_URL = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    storage = config.getoption("--storage")
    if storage == "local":
        return
    on_disk = pytest.mark.skip(reason="needs a store on disk")
    shared = pytest.mark.skip(reason="another process opens the store (not one in memory)")
    for item in items:
        if item.get_closest_marker("local") is not None:
            item.add_marker(on_disk)
        elif storage == "memory" and item.get_closest_marker("shared") is not None:
            item.add_marker(shared)


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
