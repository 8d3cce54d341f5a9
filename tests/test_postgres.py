"""The index on PostgreSQL (``index/postgres.py``), against a real server the session starts
from Debian's binaries (issue 16): the same rows and the same answers as SQLite, the
``--index-url`` option, reindex, serving, and worded failures. The whole suite runs with a
PostgreSQL index with ``--index postgres``."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dicomweb_client.api import DICOMwebClient

from dicomweb_archive import Archive, ingest
from dicomweb_archive.errors import IndexUnavailableError
from dicomweb_archive.index.conditions import All, Match
from dicomweb_archive.index.postgres import split_url
from dicomweb_archive.ops.reindex import reindex
from dicomweb_archive.store.config import StoreConfig
from tests.factory import uid, write_ct
from tests.pgserver import binaries
from tests.serving import serving
from tests.stores import run_cli

pytestmark = pytest.mark.skipif(binaries() is None, reason="PostgreSQL is not installed")

#: patient names with LIKE's and GLOB's special characters, and the DICOM wildcards' targets
NAMES = [
    "DOE^JOHN",
    "DOE^JANE",
    "D%E^X",
    "D_E^Y",
    "D!E^Z",
    "[DOE]^W",
    "doe^lower",
    "SMITH",
    "Müller^Jürgen",
]
#: (level, column, kind, value) conditions both backends must answer alike (PS3.4 C.2.2.2)
CONDITIONS = [
    ("study", "patient_name", "person", "DOE*"),
    ("study", "patient_name", "person", "D?E^*"),
    ("study", "patient_name", "person", "D%E*"),
    ("study", "patient_name", "person", "D_E*"),
    ("study", "patient_name", "person", "D!E*"),
    ("study", "patient_name", "person", "[DOE]*"),
    ("study", "patient_name", "person", "müller*"),
    ("study", "patient_name", "person", "MÜLLER*"),
    ("study", "patient_id", "text", "P*"),
    ("study", "patient_id", "text", "p*"),
    ("study", "study_date", "date", "20240101-"),
    ("study", "study_date", "date", "-20231231"),
    ("study", "modalities_in_study", "list", "MR"),
    ("study", "modalities_in_study", "list", "C?"),
    ("study", "modalities_in_study", "list", "MR\\CT"),
    ("study", "modalities_in_study", "list", "PT,M*"),
    ("series", "modality", "text", "CT"),
    ("instance", "sop_instance_uid", "uid", f"{uid(301)}\\{uid(305)}"),
    # IS attributes, integer columns: matched as their decimal text (C.2.2.2.1, C.2.2.2.4)
    ("instance", "instance_number", "text", "12"),
    ("instance", "instance_number", "text", "1?"),
    ("series", "series_number", "text", "1"),
    ("series", "series_number", "text", "*1"),
]


def _inputs(folder: Path) -> list[Path]:
    files = []
    for n, name in enumerate(NAMES):
        files.append(
            write_ct(
                folder / f"{n}.dcm",
                study=uid(100 + n),
                series=uid(200 + n),
                sop=uid(300 + n),
                patient_id=f"P{n % 3}",
                patient_name=name,
                modality="MR" if n % 2 else "CT",
                instance_number=10 + n,
            )
        )
    return files


@pytest.fixture
def pg(postgres_url: str) -> str:
    """An index URL in a new schema of the session's server."""
    return f"{postgres_url}?schema=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def two(tmp_path: Path, pg: str) -> Iterator[tuple[Archive, Archive]]:
    """The same files in two stores: one indexed in SQLite, one in PostgreSQL."""
    files = _inputs(tmp_path / "in")
    sqlite = Archive.open_or_create(str(tmp_path / "sqlite"))
    postgres = Archive.open_or_create(str(tmp_path / "postgres"), index=pg)
    for archive in (sqlite, postgres):
        assert ingest(archive, files).ok
    yield sqlite, postgres
    sqlite.close()
    postgres.close()


def test_same_rows_and_answers_as_sqlite(two: tuple[Archive, Archive]) -> None:
    """Every row, every search (wildcards, ranges, lists, UID lists, special characters) and
    every listing is the same on PostgreSQL as on SQLite, in the same order."""
    sqlite, postgres = two
    assert postgres.index.dump() == sqlite.index.dump()
    assert postgres.index.studies() == sqlite.index.studies()
    for level, column, kind, value in CONDITIONS:
        condition = All((Match(level, column, kind, value),))
        ours = postgres.index.search(level, condition)
        assert ours == sqlite.index.search(level, condition), (column, value)
        assert postgres.index.search(level, condition, limit=2, offset=1) == (
            sqlite.index.search(level, condition, limit=2, offset=1)
        )
    pattern = All((Match("study", "patient_name", "person", "D%E*"),))
    assert len(postgres.index.find_studies(pattern)) == 1  # % is a character, not a wildcard
    assert postgres.index.studies_of_patient("P1") == sqlite.index.studies_of_patient("P1")
    assert postgres.index.locate("series", uid(203)) == sqlite.index.locate("series", uid(203))


def test_edits_deletes_and_reindex(two: tuple[Archive, Archive]) -> None:
    """A patient edit and a reindex leave PostgreSQL's rows equal to SQLite's (the foreign
    keys hold at every commit), and verify is clean on both."""
    from dicomweb_archive.ops.update import apply_update, plan_update
    from dicomweb_archive.ops.verify import verify

    for archive in two:
        with archive.writing("test"):
            apply_update(archive, plan_update(archive, "patient", "P1", ["PatientName=NEW^NAME"]))
        assert verify(archive).ok
        reindex(archive)
        assert not archive.index_needs_rebuild
    sqlite, postgres = two
    assert postgres.index.dump() == sqlite.index.dump()
    ignore = {"change_id", "time", "target"}  # per store: its own ids, time and key
    audits = [
        [{k: v for k, v in r.items() if k not in ignore} for r in a.index.audit()] for a in two
    ]
    assert audits[0] == audits[1] and audits[0]


@pytest.mark.local
def test_index_url_option(tmp_path: Path, pg: str) -> None:
    """`--index-url` is recorded in the store's configuration; later commands use it; another
    index URL for the same store is refused in one line."""
    files = _inputs(tmp_path / "in")
    store = str(tmp_path / "store")
    made = run_cli("create", "-o", store, "--index-url", pg, *map(str, files[:3]))
    assert made.returncode == 0, made.stderr
    recorded = (tmp_path / "store/.dicomweb-archive/config.json").read_bytes()
    config = StoreConfig.from_json(recorded, location=store)
    assert config.index == pg
    assert not (tmp_path / "store/.dicomweb-archive/local/index.sqlite").exists()
    listed = run_cli("studies", "-o", store, "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 3
    other = run_cli("create", "-o", store, "--index-url", pg + "x", str(files[3]))
    assert other.returncode != 0
    assert len(other.stderr.strip().splitlines()) == 1 and "--index-url" in other.stderr


@pytest.mark.shared
def test_index_url_password_is_not_recorded(tmp_path: Path, store: str, pg: str) -> None:
    """A password in `--index-url` is used by the run, said in one warning line, and left out
    of the store's configuration (later commands take it from PGPASSWORD or ~/.pgpass); the
    same URL with its password given again agrees with the store."""
    with_password = pg.replace("postgres@", "postgres:SECRET-word@")
    files = [str(f) for f in _inputs(tmp_path / "in")]
    made = run_cli("create", "-o", store, "--index-url", with_password, *files[:2])
    assert made.returncode == 0, made.stderr
    warnings = [line for line in made.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "PGPASSWORD" in warnings[0], made.stderr
    with Archive.open(store) as archive:
        recorded = archive.storage.get(".dicomweb-archive/config.json")
    assert b"SECRET" not in recorded
    assert StoreConfig.from_json(recorded, location=store).index == pg
    again = run_cli("create", "-o", store, "--index-url", with_password, files[2])
    assert again.returncode == 0, again.stderr
    listed = run_cli("studies", "-o", store, "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 3, listed.stderr
    with Archive.open(store) as archive:
        assert b"SECRET" not in archive.storage.get(".dicomweb-archive/config.json")


def test_an_unreachable_server_is_one_line_without_password(tmp_path: Path) -> None:
    """Nothing listens: one worded line, the password masked."""
    url = "postgresql://user:secret@127.0.0.1:9/db?schema=x&connect_timeout=2"
    result = run_cli("create", "-o", str(tmp_path / "s"), "--index-url", url, str(tmp_path))
    assert result.returncode != 0
    assert "secret" not in result.stderr and "***" in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["warning", "error"], result.stderr


def test_schema_names_are_checked() -> None:
    """The schema parameter is ours, kept out of libpq's URL and restricted to safe names."""
    assert split_url("postgresql://h/db?schema=a_1&sslmode=disable") == (
        "postgresql://h/db?sslmode=disable",
        "a_1",
    )
    with pytest.raises(Exception, match="lower-case letters"):
        split_url("postgresql://h/db?schema=A;DROP")


def test_serve_on_a_postgresql_index(two: tuple[Archive, Archive]) -> None:
    """`serve`'s threads share the pool: dicomweb-client searches answer as on SQLite."""
    sqlite, postgres = two
    answers = []
    for archive in (sqlite, postgres):
        with serving(archive.location) as url:
            client = DICOMwebClient(url)
            found = [
                client.search_for_studies(search_filters={"PatientName": "DOE*"}),
                client.search_for_series(search_filters={"Modality": "MR"}),
                client.search_for_studies(search_filters={"StudyDate": "20240101-"}),
            ]
            # the same objects but their Retrieve URLs (each server has its own port)
            answers.append([[_without_urls(o) for o in objects] for objects in found])
    assert answers[0] == answers[1]
    assert len(answers[1][0]) == 3  # DOE^JOHN, DOE^JANE, doe^lower: PN folds case


def _without_urls(obj: dict[str, Any]) -> dict[str, Any]:
    return {tag: value for tag, value in obj.items() if tag != "00081190"}


@pytest.mark.local
def test_deidentified_copy_gets_its_own_index(tmp_path: Path, pg: str) -> None:
    """De-identification into a new store (--out) gives that store its own index: the source's
    PostgreSQL rows stay the source's (the copy shared them before)."""
    files = _inputs(tmp_path / "in")
    store, out = str(tmp_path / "store"), str(tmp_path / "out")
    with Archive.open_or_create(store, index=pg) as archive:
        assert ingest(archive, files).ok
        before = archive.index.dump()
    run = "import sys; from dicomweb_archive.cli import entry; entry.mkdicomwebupdate()"
    done = subprocess.run(
        [sys.executable, "-c", run, "-o", store, "-anonymize", "--all", "--out", out],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with Archive.open(store) as archive:
        assert archive.index.dump() == before
    with Archive.open(out) as copy:
        assert copy.config.index == "sqlite"
        assert copy.index.counts()["instances"] == len(files)


def test_two_stores_cannot_share_a_schema(tmp_path: Path, pg: str) -> None:
    """A second store given the index schema of another is refused, in one line, before it
    writes (each would replace the other's rows: one store's QIDO answering with another's
    patients)."""
    files = _inputs(tmp_path / "in")
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    made = run_cli("create", "-o", first, "--index-url", pg, str(files[0]))
    assert made.returncode == 0, made.stderr
    other = run_cli("create", "-o", second, "--index-url", pg, str(files[1]))
    assert other.returncode != 0
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds the index of the store at" in lines[0], other.stderr
    with Archive.open(first) as archive:
        assert archive.index.counts()["instances"] == 1


def test_a_server_gone_mid_work_is_one_sentence(tmp_path: Path) -> None:
    """The server stops while a store is open: reads raise IndexUnavailableError with one
    sentence (no psycopg traceback reaches the user), and an edit's commit leaves the index
    to be rebuilt rather than failing half-way."""
    from tests.pgserver import postgres_server

    files = _inputs(tmp_path / "in")
    with postgres_server() as url:
        archive = Archive.open_or_create(str(tmp_path / "s"), index=f"{url}?schema=gone")
        assert ingest(archive, files[:2]).ok
    with pytest.raises(IndexUnavailableError, match="does not answer"):
        archive.index.counts()
    archive.close()


@pytest.mark.shared
def test_commands_with_the_server_stopped_say_so_once(tmp_path: Path, store: str) -> None:
    """`studies`, `verify` and `edit` with the index server stopped: one `error:` line naming
    the index, exit code 1 (the command could not run, ``docs/spec/exit-codes.md``), and no
    warning about a rebuild nobody asked for."""
    from tests.pgserver import postgres_cluster

    files = [str(f) for f in _inputs(tmp_path / "in")[:1]]
    with postgres_cluster() as cluster:
        url = f"{cluster.url}?schema=stopped"
        assert run_cli("create", "-o", store, "--index-url", url, *files).returncode == 0
        cluster.stop()
        for command in (
            ["studies"],
            ["verify"],
            ["edit", "--study", uid(100), "StudyID=9"],
        ):
            result = run_cli(*command, "-o", store)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1, (command, result.stderr)
            assert len(lines) == 1 and lines[0].startswith("error: index "), (command, lines)
