"""A study's derived objects (query files, series metadata) and index rows, from its instances.

The instances are the truth: a study's derived objects are always computed from all of them
(:func:`study_rows`), so ingesting one more instance, replacing one, editing some or recovering
from an interrupted run all end in the same bytes. :func:`stage_study` puts what changed into
a transaction (``store/journal.py``), with the study's index rows, so that the served files and
the index change together.

Each instance is a :class:`Member`: its metadata now, the facts of its index row that the
metadata does not give (from its info record, or from its index row when an edit knows the
info record did not change), and its JSON text when already known (series metadata are the
instances' texts joined, and an instance's text is what its audit hash is taken of).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dicomweb_archive.index.protocol import StudyUpdate
from dicomweb_archive.index.rows import Facts, Row, instance_row, series_row, study_row
from dicomweb_archive.model.query import (
    instance_query,
    instance_sort_key,
    series_query,
    study_query,
)
from dicomweb_archive.store.journal import Transaction
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.storage import JSON_GZ_HEADERS, gzip_bytes, json_gz, to_json_bytes

JsonObject = dict[str, Any]


@dataclass(slots=True)
class Member:
    """One instance of a study: its metadata now, its row facts, its JSON text if known."""

    metadata: JsonObject
    facts: Facts
    text: bytes | None = None

    @property
    def json(self) -> bytes:
        """The instance's compact JSON (``store/storage.py``), made once."""
        if self.text is None:
            self.text = to_json_bytes(self.metadata)
        return self.text


def metadata_hash(metadata: JsonObject, text: bytes | None = None) -> str:
    """The SHA-256 of an instance's metadata as served: its compact JSON text (``text`` when
    known), as the series metadata hold it. History and audit record it before and after each
    change."""
    return hashlib.sha256(text if text is not None else to_json_bytes(metadata)).hexdigest()


@dataclass(slots=True)
class StudyRows:
    """The index rows of one study; ``study`` is None when the study has no instance left."""

    study_instance_uid: str
    study: Row | None = None
    series: list[Row] = field(default_factory=list)
    instances: list[Row] = field(default_factory=list)
    #: the study's derived objects (key -> JSON content, or JSON text for series metadata)
    files: dict[str, Any] = field(default_factory=dict)

    def update(self) -> StudyUpdate:
        """The index update of this study (a committed change carries it as JSON)."""
        return (self.study_instance_uid, self.study, self.series, self.instances)


Grouped = dict[str, list[Member]]


def group_by_series(members: Iterable[Member]) -> Grouped:
    """Instances grouped by series, series and instances in store order."""
    grouped: Grouped = {}
    for member in members:
        grouped.setdefault(member.facts.series, []).append(member)
    for instances in grouped.values():
        instances.sort(key=lambda member: instance_sort_key(member.metadata))
    return dict(sorted(grouped.items(), key=_series_sort_key))


def _series_sort_key(item: tuple[str, list[Member]]) -> tuple[int, str]:
    number = item[1][0].metadata.get("00200011", {}).get("Value", [None])[0]
    return (number if isinstance(number, int) else 2**31, item[0])


def study_rows(keys: StoreKeys, study: str, grouped: Grouped) -> StudyRows:
    """A study's derived objects and index rows from its instances."""
    result = StudyRows(study)
    if not grouped:
        return result
    series_queries: list[JsonObject] = []
    for series, members in grouped.items():
        metadata = [member.metadata for member in members]
        query = series_query(metadata)
        series_queries.append(query)
        result.series.append(series_row(query, keys.series(study, series).rstrip("/")))
        instance_queries = []
        for member in members:
            iquery = instance_query(member.metadata)
            instance_queries.append(iquery)
            path = keys.instance(study, series, member.facts.sop).rstrip("/")
            result.instances.append(instance_row(iquery, member.facts, path))
        result.files[keys.series_metadata(study, series)] = series_text(members)
        result.files[keys.instances_index(study, series)] = instance_queries
        result.files[keys.series_singleton(study, series)] = [query]
    squery = study_query([[member.metadata for member in members] for members in grouped.values()])
    result.study = study_row(squery, keys.study(study).rstrip("/"))
    result.files[keys.series_index(study)] = series_queries
    result.files[keys.study_index(study)] = [squery]
    return result


def series_text(members: list[Member]) -> bytes:
    """The series metadata (PS3.18 WADO-RS): the instances' JSON texts as one array."""
    return b"[" + b",".join(member.json for member in members) + b"]"


def file_bytes(value: Any) -> bytes:
    """The stored bytes of a derived object (JSON text, or a JSON value), gzipped."""
    return gzip_bytes(value) if isinstance(value, bytes) else json_gz(value)


def stage_study(txn: Transaction, keys: StoreKeys, study: str, rows: StudyRows) -> None:
    """Put a study's derived objects that change into ``txn`` and remove stale ones (series
    no instance is in any more; the whole study when it is empty), with its index rows."""
    stage_files(txn, rows)
    present = {s.removesuffix("/") for s in txn.children(keys.series_dir(study))}
    for series in sorted(present - set(_series_of(rows))):
        if series != "index.json.gz":
            txn.delete_prefix(keys.series(study, series))
    if rows.study is None:
        for key in (keys.study_index(study), keys.series_index(study), keys.study_thumbnail(study)):
            if txn.head(key) is not None:
                txn.delete(key)
    txn.index({"op": "studies", "updates": [rows.update()]})


def stage_files(txn: Transaction, rows: StudyRows) -> None:
    """Put a study's derived objects that change into ``txn``; thumbnails made from metadata
    that change are dropped (:func:`drop_thumbnails`)."""
    changed = {
        key for key, value in rows.files.items() if put_if_changed(txn, key, file_bytes(value))
    }
    if changed:
        drop_thumbnails(txn, rows, changed)


def drop_thumbnails(txn: Transaction, rows: StudyRows, changed: set[str]) -> None:
    """Remove the thumbnails (``ops/render.py``) a change of ``changed`` objects makes stale:
    the study's, and for each series whose metadata changed its own and its instances'
    (an instance's thumbnail is rendered with its metadata: window, LUTs)."""
    keys = StoreKeys()  # the served tree's keys do not depend on the store's settings
    study = rows.study_instance_uid
    series = {
        uid
        for uid in (str(row["series_instance_uid"]) for row in rows.series)
        if keys.series_metadata(study, uid) in changed
    }
    names = [keys.study_thumbnail(study), *(keys.series_thumbnail(study, s) for s in series)]
    names += [
        keys.instance_thumbnail(
            study, str(row["series_instance_uid"]), str(row["sop_instance_uid"])
        )
        for row in rows.instances
        if row["series_instance_uid"] in series
    ]
    for name in names:
        if txn.head(name) is not None:
            txn.delete(name)


def put_if_changed(txn: Transaction, key: str, data: bytes, *, json: bool = True) -> bool:
    """Stage ``data`` for ``key`` unless the object already holds exactly these bytes (then
    returns False); ``json``: a served DICOM JSON object (its Content-Type and
    Content-Encoding recorded)."""
    info = txn.head(key)
    if info is not None and info.size == len(data) and txn.get(key) == data:
        return False
    if json:
        txn.put(key, data, **JSON_GZ_HEADERS)
    else:
        txn.put(key, data)
    return True


def _series_of(rows: StudyRows) -> list[str]:
    return [str(row["series_instance_uid"]) for row in rows.series]
