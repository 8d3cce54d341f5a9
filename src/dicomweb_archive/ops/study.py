"""A study's derived objects (query files, series metadata) and index rows, from its instances.

The instances are the truth: a study's derived objects are always rebuilt from all of them, so
ingesting one more instance, replacing one, or recovering from an interrupted run all end in
the same bytes. :func:`study_rows` computes them; :func:`stage_study` puts what changed into a
transaction (``store/journal.py``), with the study's index rows, so that the served files and
the index change together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dicomweb_archive.index.protocol import StudyUpdate
from dicomweb_archive.index.rows import Row, instance_row, series_row, study_row
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.query import (
    instance_query,
    instance_sort_key,
    series_query,
    study_query,
)
from dicomweb_archive.store.instance import instance_keys, read_info, read_instance_metadata
from dicomweb_archive.store.journal import Transaction
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.storage import JSON_GZ_HEADERS, Reader, json_gz

JsonObject = dict[str, Any]
Pair = tuple[JsonObject, InfoRecord]
Grouped = dict[str, list[Pair]]


@dataclass(slots=True)
class StudyRows:
    """The index rows of one study; ``study`` is None when the study has no instance left."""

    study_instance_uid: str
    study: Row | None = None
    series: list[Row] = field(default_factory=list)
    instances: list[Row] = field(default_factory=list)
    #: the study's derived objects (key -> JSON content)
    files: dict[str, Any] = field(default_factory=dict)

    def update(self) -> StudyUpdate:
        """The index update of this study (a committed change carries it as JSON)."""
        return (self.study_instance_uid, self.study, self.series, self.instances)


def _series_sort_key(item: tuple[str, list[Pair]]) -> tuple[int, str]:
    number = item[1][0][0].get("00200011", {}).get("Value", [None])[0]
    return (number if isinstance(number, int) else 2**31, item[0])


def read_study(reader: Reader, keys: StoreKeys, study: str) -> Grouped:
    """Every instance of a study as (metadata, info) from its instance folders."""
    pairs = [
        (read_instance_metadata(reader, keys, key), read_info(reader, keys, key))
        for key in instance_keys(reader, keys, study)
    ]
    return group_by_series(pairs)


def group_by_series(pairs: list[Pair]) -> Grouped:
    """(metadata, info) pairs grouped by series, series and instances in store order."""
    grouped: Grouped = {}
    for pair in pairs:
        grouped.setdefault(pair[1].series_instance_uid, []).append(pair)
    for instances in grouped.values():
        instances.sort(key=lambda pair: instance_sort_key(pair[0]))
    return dict(sorted(grouped.items(), key=_series_sort_key))


def study_rows(keys: StoreKeys, study: str, grouped: Grouped) -> StudyRows:
    """A study's derived objects and index rows from its instances."""
    result = StudyRows(study)
    if not grouped:
        return result
    series_queries: list[JsonObject] = []
    for series, pairs in grouped.items():
        metadata = [pair[0] for pair in pairs]
        query = series_query(metadata)
        series_queries.append(query)
        result.series.append(series_row(query, keys.series(study, series).rstrip("/")))
        instance_queries = []
        for meta, info in pairs:
            iquery = instance_query(meta)
            instance_queries.append(iquery)
            path = keys.instance(study, series, info.sop_instance_uid).rstrip("/")
            result.instances.append(instance_row(iquery, info, path))
        result.files[keys.series_metadata(study, series)] = metadata
        result.files[keys.instances_index(study, series)] = instance_queries
        result.files[keys.series_singleton(study, series)] = [query]
    squery = study_query([[pair[0] for pair in pairs] for pairs in grouped.values()])
    result.study = study_row(squery, keys.study(study).rstrip("/"))
    result.files[keys.series_index(study)] = series_queries
    result.files[keys.study_index(study)] = [squery]
    return result


def stage_study(txn: Transaction, keys: StoreKeys, study: str, rows: StudyRows) -> None:
    """Put a study's derived objects that change into ``txn`` and remove stale ones (series
    no instance is in any more; the whole study when it is empty), with its index rows."""
    for key, value in rows.files.items():
        put_if_changed(txn, key, json_gz(value))
    present = {s.removesuffix("/") for s in txn.children(keys.series_dir(study))}
    for series in sorted(present - set(_series_of(rows))):
        if series != "index.json.gz":
            txn.delete_prefix(keys.series(study, series))
    if rows.study is None:
        for key in (keys.study_index(study), keys.series_index(study)):
            if txn.head(key) is not None:
                txn.delete(key)
    txn.index({"op": "studies", "updates": [rows.update()]})


def put_if_changed(txn: Transaction, key: str, data: bytes, *, json: bool = True) -> None:
    """Stage ``data`` for ``key`` unless the object already holds exactly these bytes;
    ``json``: a served DICOM JSON object (its Content-Type and Content-Encoding recorded)."""
    info = txn.head(key)
    if info is not None and info.size == len(data) and txn.get(key) == data:
        return
    if json:
        txn.put(key, data, **JSON_GZ_HEADERS)
    else:
        txn.put(key, data)


def _series_of(rows: StudyRows) -> list[str]:
    return [str(row["series_instance_uid"]) for row in rows.series]
