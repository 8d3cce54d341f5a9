"""(Re)generate a study's query files and series metadata from its instance files.

The instance directories are the truth: a study's files are always rebuilt from all of them,
so ingesting one more instance, replacing one, or recovering from an interrupted run all end in
the same bytes. Returns the index rows of the study.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomweb_archive.index.rows import Row, instance_row, series_row, study_row
from dicomweb_archive.model.query import (
    instance_query,
    instance_sort_key,
    series_query,
    study_query,
)
from dicomweb_archive.store.files import remove_file, remove_tree, write_json_gz
from dicomweb_archive.store.instance import (
    InstanceKey,
    instance_keys,
    read_info,
    read_instance_metadata,
)
from dicomweb_archive.store.layout import StoreLayout

JsonObject = dict[str, Any]


@dataclass(slots=True)
class StudyRows:
    """The index rows of one study; ``study`` is None when the study has no instance left."""

    study_instance_uid: str
    study: Row | None = None
    series: list[Row] = field(default_factory=list)
    instances: list[Row] = field(default_factory=list)
    #: the study's derived files (path -> JSON content), as written
    files: dict[Path, Any] = field(default_factory=dict)


def _series_sort_key(item: tuple[str, list[tuple[JsonObject, JsonObject]]]) -> tuple[int, str]:
    number = item[1][0][0].get("00200011", {}).get("Value", [None])[0]
    return (number if isinstance(number, int) else 2**31, item[0])


Grouped = dict[str, list[tuple[JsonObject, JsonObject]]]


def read_study(layout: StoreLayout, study: str) -> Grouped:
    """Every instance of a study as (metadata, info) from its instance directories."""
    pairs = [
        (read_instance_metadata(layout, key), read_info(layout, key))
        for key in instance_keys(layout, study)
    ]
    return group_by_series(pairs)


def group_by_series(pairs: list[tuple[JsonObject, JsonObject]]) -> Grouped:
    """(metadata, info) pairs grouped by series, series and instances in store order."""
    grouped: Grouped = {}
    for pair in pairs:
        grouped.setdefault(pair[1]["series_instance_uid"], []).append(pair)
    for instances in grouped.values():
        instances.sort(key=lambda pair: instance_sort_key(pair[0]))
    return dict(sorted(grouped.items(), key=_series_sort_key))


def study_rows(
    layout: StoreLayout, study: str, *, write: bool, grouped: Grouped | None = None
) -> StudyRows:
    """Build (and with ``write``, write) a study's derived files; return its index rows.

    ``grouped`` gives the study's instances; by default they are read from the instance
    directories.
    """
    if grouped is None:
        grouped = read_study(layout, study)
    result = StudyRows(study)
    if not grouped:
        if write:
            remove_tree(layout.study(study))
        return result
    if write:
        _remove_stale_series(layout, study, set(grouped))
    series_queries: list[JsonObject] = []
    for series, pairs in grouped.items():
        metadata = [pair[0] for pair in pairs]
        query = series_query(metadata)
        series_queries.append(query)
        result.series.append(series_row(query, layout.relative(layout.series(study, series))))
        instance_queries = []
        for meta, info in pairs:
            iquery = instance_query(meta)
            instance_queries.append(iquery)
            key = InstanceKey(study, series, info["sop_instance_uid"])
            path = layout.relative(layout.instance(key.study, key.series, key.sop))
            result.instances.append(instance_row(iquery, info, path))
        result.files[layout.series_metadata(study, series)] = metadata
        result.files[layout.instances_index(study, series)] = instance_queries
        result.files[layout.series_singleton(study, series)] = [query]
    squery = study_query([[pair[0] for pair in pairs] for pairs in grouped.values()])
    result.study = study_row(squery, layout.relative(layout.study(study)))
    result.files[layout.series_index(study)] = series_queries
    result.files[layout.study_index(study)] = [squery]
    if write:
        for file, value in result.files.items():
            write_json_gz(file, value)
    return result


def _remove_stale_series(layout: StoreLayout, study: str, keep: set[str]) -> None:
    series_dir = layout.series_dir(study)
    if not series_dir.is_dir():
        return
    for path in series_dir.iterdir():
        if path.is_dir() and not path.name.startswith(".") and path.name not in keep:
            remove_tree(path)
    if not keep:
        remove_file(layout.series_index(study))
