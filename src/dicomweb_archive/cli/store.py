"""Commands that look at or maintain a store: ``studies`` and ``reindex``."""

from __future__ import annotations

from typing import Annotated

import typer

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    StoreOption,
    VerboseOption,
    handle_errors,
    open_store,
    say,
    stdout,
)


def studies(
    store: StoreOption = DEFAULT_STORE,
    show_phi: Annotated[
        bool, typer.Option("--show-phi", help="Also show patient names and IDs.")
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """List the studies in the store (from its index)."""
    with handle_errors(verbose=verbose), open_store(store) as archive:
        rows = archive.index.studies()
        location = archive.location
    from rich.table import Table  # noqa: PLC0415 - rich only where output needs it

    table = Table(title=f"{len(rows)} studies in {location}")
    table.add_column("StudyInstanceUID", overflow="fold")
    table.add_column("Date")
    table.add_column("Description", overflow="fold")
    table.add_column("Modalities")
    table.add_column("Series", justify="right")
    table.add_column("Instances", justify="right")
    if show_phi:
        table.add_column("PatientID")
        table.add_column("PatientName")
    for row in rows:
        cells = [
            row["study_instance_uid"],
            row["study_date"] or "",
            row["study_description"] or "",
            (row["modalities_in_study"] or "").replace("\\", ", "),
            str(row["number_of_series"]),
            str(row["number_of_instances"]),
        ]
        if show_phi:
            cells += [row["patient_id"] or "", row["patient_name"] or ""]
        table.add_row(*cells)
    stdout.print(table)


def reindex_command(store: StoreOption = DEFAULT_STORE, verbose: VerboseOption = False) -> None:
    """Rebuild the SQLite index from the store's files alone."""
    from dicomweb_archive.ops.reindex import reindex  # noqa: PLC0415

    with handle_errors(verbose=verbose), open_store(store) as archive:
        report = reindex(archive)
    say(
        f"index rebuilt: {report.studies} studies, {report.series} series, "
        f"{report.instances} instances"
    )
