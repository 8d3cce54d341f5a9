"""``studies``, ``series STUDY`` and ``list-instances STUDY/SERIES``: what the index holds, as a
table, JSON (``--json``) or CSV (``--csv``).

Columns are named by DICOM keyword (the QIDO-RS attributes of each level, PS3.18 10.6.3.3).
Patient names and IDs are shown only with ``studies --show-phi``. A table on a terminal fits
the terminal; piped, it is as wide as its rows, so that no UID is ever wrapped.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    EXIT_USAGE,
    StoreOption,
    VerboseOption,
    error_line,
    handle_errors,
    open_store,
    stdout,
)

if TYPE_CHECKING:
    from rich.table import Table

AsJson = Annotated[bool, typer.Option("--json", help="Print a JSON array of objects.")]
AsCsv = Annotated[bool, typer.Option("--csv", help="Print CSV with a header row.")]

#: (keyword, QIDO-RS tag) of the series and instance listings; numbers right-aligned
SERIES_COLUMNS = (
    ("SeriesInstanceUID", "0020000E"),
    ("SeriesNumber", "00200011"),
    ("Modality", "00080060"),
    ("SeriesDescription", "0008103E"),
    ("NumberOfSeriesRelatedInstances", "00201209"),
)
INSTANCE_COLUMNS = (
    ("SOPInstanceUID", "00080018"),
    ("InstanceNumber", "00200013"),
    ("SOPClassUID", "00080016"),
)
#: study index row column -> keyword
STUDY_COLUMNS = {
    "study_instance_uid": "StudyInstanceUID",
    "study_date": "StudyDate",
    "study_description": "StudyDescription",
    "modalities_in_study": "ModalitiesInStudy",
    "number_of_series": "NumberOfStudyRelatedSeries",
    "number_of_instances": "NumberOfStudyRelatedInstances",
}
PHI_COLUMNS = {"patient_id": "PatientID", "patient_name": "PatientName"}
NUMBERS = {
    "SeriesNumber",
    "InstanceNumber",
    "NumberOfSeriesRelatedInstances",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
}


def studies(
    store: StoreOption = DEFAULT_STORE,
    show_phi: Annotated[
        bool, typer.Option("--show-phi", help="Also show patient names and IDs.")
    ] = False,
    as_json: AsJson = False,
    as_csv: AsCsv = False,
    verbose: VerboseOption = False,
) -> None:
    """List the studies in the store (from its index)."""
    columns = STUDY_COLUMNS | (PHI_COLUMNS if show_phi else {})
    with handle_errors(verbose=verbose), open_store(store) as archive:
        found = archive.index.studies()
        location = archive.location
    rows = [
        {keyword: _study_value(row, column) for column, keyword in columns.items()} for row in found
    ]
    _print(
        rows,
        list(columns.values()),
        f"{_count(len(rows), 'study', 'studies')} in {location}",
        as_json=as_json,
        as_csv=as_csv,
    )


def series(
    study: Annotated[str, typer.Argument(metavar="STUDY", help="A StudyInstanceUID.")],
    store: StoreOption = DEFAULT_STORE,
    as_json: AsJson = False,
    as_csv: AsCsv = False,
    verbose: VerboseOption = False,
) -> None:
    """List the series of a study (from the store's index)."""
    rows = _search("series", SERIES_COLUMNS, store, study, None, verbose=verbose)
    title = f"{_count(len(rows), 'series', 'series')} in study {study}"
    _print(rows, [k for k, _ in SERIES_COLUMNS], title, as_json=as_json, as_csv=as_csv)


def list_instances(
    where: Annotated[
        str,
        typer.Argument(metavar="STUDY/SERIES", help="A StudyInstanceUID and a SeriesInstanceUID."),
    ],
    store: StoreOption = DEFAULT_STORE,
    as_json: AsJson = False,
    as_csv: AsCsv = False,
    verbose: VerboseOption = False,
) -> None:
    """List the instances of a series (from the store's index)."""
    study, sep, series_uid = where.partition("/")
    if not sep or not study or not series_uid or "/" in series_uid:
        error_line(f"{where!r}: give STUDY/SERIES, a StudyInstanceUID and a SeriesInstanceUID")
        raise typer.Exit(EXIT_USAGE)
    rows = _search("instance", INSTANCE_COLUMNS, store, study, series_uid, verbose=verbose)
    title = f"{_count(len(rows), 'instance', 'instances')} in series {series_uid}"
    _print(rows, [k for k, _ in INSTANCE_COLUMNS], title, as_json=as_json, as_csv=as_csv)


def _search(
    level: str,
    columns: tuple[tuple[str, str], ...],
    store: Any,
    study: str,
    series_uid: str | None,
    *,
    verbose: bool,
) -> list[dict[str, Any]]:
    """The QIDO-RS objects of ``level`` in the study (series), as keyword rows; an unknown
    study or series is an error."""
    from dicomweb_archive.errors import NoSuchStudyError  # noqa: PLC0415
    from dicomweb_archive.index.queries import qido_condition  # noqa: PLC0415
    from dicomweb_archive.model.uid import check_uid  # noqa: PLC0415

    with handle_errors(verbose=verbose), open_store(store) as archive:
        check_uid(study, "StudyInstanceUID", source="argument")
        if series_uid is not None:
            check_uid(series_uid, "SeriesInstanceUID", source="argument")
        condition = qido_condition(level, {}, study=study, series=series_uid)
        found = archive.index.search(level, condition)
        if not found:
            what = f"study {study}" if series_uid is None else f"series {study}/{series_uid}"
            raise NoSuchStudyError(f"no {what} in the store (see dicomweb-archive studies)")
    return [{keyword: _value(item, tag) for keyword, tag in columns} for item in found]


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0] if len(values) == 1 else "\\".join(str(v) for v in values)


def _study_value(row: dict[str, Any], column: str) -> Any:
    value = row[column]
    if column == "modalities_in_study" and value:
        return value.replace("\\", ", ")
    return value


def _count(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _print(
    rows: list[dict[str, Any]], keywords: list[str], title: str, *, as_json: bool, as_csv: bool
) -> None:
    if as_json and as_csv:
        error_line("--json and --csv exclude each other")
        raise typer.Exit(EXIT_USAGE)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, keywords, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    else:
        _print_table(_table(rows, keywords, title))


def _table(rows: list[dict[str, Any]], keywords: list[str], title: str) -> Table:
    from rich.table import Table  # noqa: PLC0415 - rich only where output needs it

    table = Table(title=title)
    for keyword in keywords:
        table.add_column(
            keyword, justify="right" if keyword in NUMBERS else "left", overflow="fold"
        )
    for row in rows:
        table.add_row(*("" if row[k] is None else str(row[k]) for k in keywords))
    return table


def _print_table(table: Table) -> None:
    """On a terminal, the table fits it; piped, the table is as wide as it needs (rich would
    wrap it at 80 columns)."""
    if sys.stdout.isatty():
        stdout.print(table)
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.measure import Measurement  # noqa: PLC0415

    console = Console(file=sys.stdout, highlight=False, width=10**4)
    width = Measurement.get(console, console.options, table).maximum
    Console(file=sys.stdout, highlight=False, width=width).print(table)
