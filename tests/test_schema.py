"""Every JSON file the store holds validates against schema/, and index.sql is current."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from dicomweb_archive import Archive, PipelineOptions, write_instances
from dicomweb_archive.index.schema import MIGRATIONS
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.store.keys import NOTIFICATIONS, STUDIES
from dicomweb_archive.store.storage import from_json_gz
from tests import stores
from tests.conftest import corpus_files

SCHEMA = Path(__file__).parent.parent / "schema"


def _load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


def _validator(name: str) -> Draft202012Validator:
    """A validator that resolves references to the other schemas of schema/ by file name."""
    registry: Registry[Any] = Registry().with_resources(
        (path.name, Resource.from_contents(_load(path.name))) for path in SCHEMA.glob("*.json")
    )
    return Draft202012Validator(_load(name), registry=registry)


@pytest.fixture(scope="module")
def corpus_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """One store per corpus file (several files share a SOP Instance UID)."""
    root = tmp_path_factory.mktemp("corpus")
    made: list[str] = []
    for path in corpus_files():
        where = stores.location(root, path.name)
        made.append(where)
        stores.ingested(where, [path], options=PipelineOptions(deduplicate=True))
    yield made
    for where in made:
        stores.forget(where)


def _values(
    locations: list[str], prefix: Callable[[Archive], str], wanted: Callable[[str], bool]
) -> Iterator[tuple[str, Any]]:
    """(store location and key, value) of every gzipped JSON object under ``prefix`` of each
    store whose key is ``wanted``."""
    for where in locations:
        with Archive.open(where) as archive:
            for info in archive.storage.list_prefix(prefix(archive)):
                if wanted(info.key):
                    yield f"{where}:{info.key}", from_json_gz(archive.storage.get(info.key))


def _served(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in ("metadata.gz", "index.json.gz", "series-singleton.json.gz")


def test_info_records_validate(corpus_stores: list[str]) -> None:
    """Every info record matches schema/info-record.schema.json, and reads back as an
    InfoRecord that gives the same JSON."""
    validator = _validator("info-record.schema.json")
    records = list(
        _values(corpus_stores, lambda _a: STUDIES, lambda k: k.endswith("/info.json.gz"))
    )
    assert len(records) > 100
    for where, value in records:
        info = InfoRecord.from_json(value)
        errors = [e.message for e in validator.iter_errors(info.to_json())]
        assert not errors, (where, errors[:3])
        assert info.to_json() == value, where
        assert info.metadata, where  # the metadata as received, what edits start from


def test_metadata_and_query_files_validate(corpus_stores: list[str]) -> None:
    """metadata.gz and every index/singleton file is DICOM JSON (schema/dicom-json.schema.json)."""
    validator = _validator("dicom-json.schema.json")
    values = list(_values(corpus_stores, lambda _a: STUDIES, _served))
    assert len(values) > 500
    for where, value in values:
        errors = [e.message for e in validator.iter_errors(value)]
        assert not errors, (where, errors[:3])


def _deduplicated(archive: Archive) -> Iterator[tuple[str, Any]]:
    for folder in (archive.keys.path_instances, archive.keys.path_deduplicated):
        for info in archive.storage.list_prefix(f"{folder}/"):
            if info.key.endswith(".gz") and info.key.count("/") == 2:  # folder/<study>/<x>.gz
                yield info.key, from_json_gz(archive.storage.get(info.key))


def test_deduplicated_files_validate(corpus_stores: list[str]) -> None:
    """Extracts, instance records, group files and group indexes match their schema."""
    validator = _validator("deduplicated.schema.json")
    values = []
    for where in corpus_stores:
        with Archive.open(where) as archive:
            values += [(f"{where}:{key}", value) for key, value in _deduplicated(archive)]
    assert len(values) > 300
    for where, value in values:
        errors = [e.message for e in validator.iter_errors(value)]
        assert not errors, (where, errors[:3])


def test_notifications_validate(store: str) -> None:
    """Notification files left for the next stages match their schema."""
    source = corpus_files()[0].parent / "CT_small.dcm"
    with Archive.open_or_create(store) as archive:
        write_instances(archive, [source], options=PipelineOptions())
        notes = {
            info.key: archive.storage.get(info.key)
            for info in archive.storage.list_prefix(NOTIFICATIONS)
        }
    validator = _validator("notification.schema.json")
    assert {key.split("/")[1] for key in notes} == {"group", "study"}
    for data in notes.values():
        assert not list(validator.iter_errors(json.loads(data)))


def test_no_private_bookkeeping_in_served_json(corpus_stores: list[str]) -> None:
    """No (0009,xx10..12)-style private tags of ours, no FFFCFFFC key, 0008,3002 is UI."""
    metadata = _values(corpus_stores, lambda _a: STUDIES, lambda k: k.endswith("/metadata.gz"))
    for _where, value in metadata:
        for instance in value:
            assert "FFFCFFFC" not in instance
            assert instance["00083002"]["vr"] == "UI"


def test_index_sql_matches_migrations() -> None:
    """schema/index.sql is the text of the index migrations."""
    text = (SCHEMA / "index.sql").read_text(encoding="utf-8")
    for number, migration in enumerate(MIGRATIONS, start=1):
        assert f"-- migration {number} (PRAGMA user_version = {number})" in text
        assert textwrap.dedent(migration).strip() in text


def test_connections_opening_a_new_index_at_once(tmp_path: Path) -> None:
    """Four connections open a new index file at the same moment (a server's threads, scp and
    STOW-RS writers): each migration runs once, none fails (found when scp's C-STORE failed
    with "duplicate column name" beside STOW-RS), and the version is the last migration's."""
    import threading

    from dicomweb_archive.index.schema import MIGRATIONS
    from dicomweb_archive.index.sqlite import SQLiteIndex

    for round_ in range(50):
        path = tmp_path / f"r{round_}" / "index.sqlite"
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def open_index(
            path: Path = path,
            errors: list[BaseException] = errors,
            start: threading.Barrier = start,
        ) -> None:
            start.wait()
            try:
                SQLiteIndex(path).close()
            except BaseException as exc:  # reported by the test thread
                errors.append(exc)

        threads = [threading.Thread(target=open_index) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with SQLiteIndex(path) as index:
            assert index._version() == len(MIGRATIONS)
