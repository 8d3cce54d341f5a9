"""Every JSON file the store holds validates against schema/, and index.sql is current."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from dicomweb_archive import PipelineOptions, ingest, write_instances
from dicomweb_archive.index.database import MIGRATIONS
from dicomweb_archive.store.files import read_json_gz
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
def corpus_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("corpus") / "store"
    for path in corpus_files():  # one by one: several files share a SOP Instance UID
        ingest([path], store / path.name)
    return store


def test_info_records_validate(corpus_store: Path) -> None:
    """Every info record matches schema/info-record.schema.json."""
    validator = _validator("info-record.schema.json")
    records = list(corpus_store.rglob("info.json.gz"))
    assert len(records) > 100
    for path in records:
        errors = [e.message for e in validator.iter_errors(read_json_gz(path))]
        assert not errors, (path, errors[:3])


def test_metadata_and_query_files_validate(corpus_store: Path) -> None:
    """metadata.gz and every index/singleton file is DICOM JSON (schema/dicom-json.schema.json)."""
    validator = _validator("dicom-json.schema.json")
    served = list(corpus_store.glob("*/studies"))
    paths = [
        path
        for root in served
        for pattern in ("metadata.gz", "index.json.gz", "series-singleton.json.gz")
        for path in root.rglob(pattern)
    ]
    assert len(paths) > 500
    for path in paths:
        errors = [e.message for e in validator.iter_errors(read_json_gz(path))]
        assert not errors, (path, errors[:3])


def test_deduplicated_files_validate(corpus_store: Path) -> None:
    """Extracts, instance records, group files and group indexes match their schema."""
    validator = _validator("deduplicated.schema.json")
    paths = [
        *corpus_store.glob("*/instances/*/*.gz"),
        *corpus_store.glob("*/deduplicated/*/*.gz"),
    ]
    assert len(paths) > 300
    for path in paths:
        errors = [e.message for e in validator.iter_errors(read_json_gz(path))]
        assert not errors, (path, errors[:3])


def test_notifications_validate(tmp_path: Path) -> None:
    """Notification files left for the next stages match their schema."""
    source = corpus_files()[0].parent / "CT_small.dcm"
    write_instances([source], tmp_path, options=PipelineOptions())
    validator = _validator("notification.schema.json")
    notes = [p for p in (tmp_path / "notifications").rglob("*") if p.is_file()]
    assert {p.parent.name for p in notes} == {"group", "study"}
    for path in notes:
        assert not list(validator.iter_errors(json.loads(path.read_text())))


def test_no_private_bookkeeping_in_served_json(corpus_store: Path) -> None:
    """No (0009,xx10..12)-style private tags of ours, no FFFCFFFC key, 0008,3002 is UI."""
    for path in corpus_store.rglob("metadata.gz"):
        for instance in read_json_gz(path):
            assert "FFFCFFFC" not in instance
            assert instance["00083002"]["vr"] == "UI"


def test_index_sql_matches_migrations() -> None:
    """schema/index.sql is the text of the index migrations."""
    text = (SCHEMA / "index.sql").read_text(encoding="utf-8")
    for number, migration in enumerate(MIGRATIONS, start=1):
        assert f"-- migration {number} (PRAGMA user_version = {number})" in text
        assert textwrap.dedent(migration).strip() in text
