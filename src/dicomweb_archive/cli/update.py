"""``mkdicomwebupdate`` / ``dicomweb-archive update``: the seed's one command for every kind
of update, which dispatches to ``edit``, ``delete`` and ``anonymize``.

The seed's single-dash forms (``-patient``, ``-study``, ``-series``, ``-instance``,
``-delete``, ``-anonymize``) are accepted beside the double-dash ones.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dicomweb_archive.cli.anonymize import (
    AllStudies,
    CleanPixels,
    InPlace,
    KeyFile,
    Out,
    PatientMap,
    Retain,
    run_anonymize,
)
from dicomweb_archive.cli.argv import normalise_argv
from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    EXIT_USAGE,
    StoreOption,
    VerboseOption,
    VersionOption,
    error_line,
)
from dicomweb_archive.cli.delete import Reject, run_delete
from dicomweb_archive.cli.edit import (
    BatchFile,
    ContinueOnError,
    Edits,
    OriginalAttributes,
    run_edit,
    run_file,
)
from dicomweb_archive.cli.targets import (
    DryRun,
    Instance,
    Patient,
    Reason,
    Series,
    ShowPhi,
    Study,
    targets_of,
)

#: ``normalise_argv`` lives in ``cli/argv.py`` (the umbrella needs it without this module)
__all__ = ["normalise_argv", "update"]


def update(  # noqa: PLR0917 - typer passes every option positionally
    edits: Edits = None,
    store: StoreOption = DEFAULT_STORE,
    patient: Patient = None,
    study: Study = None,
    series: Series = None,
    instance: Instance = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete the target instead of editing it.")
    ] = False,
    batch_file: BatchFile = None,
    continue_on_error: ContinueOnError = False,
    original_attributes: OriginalAttributes = False,
    reject: Reject = None,
    anonymize: Annotated[
        bool,
        typer.Option(
            "--anonymize",
            help="De-identify (PS3.15 E.1) the target (a StudyInstanceUID, a PatientID, or "
            "--all) into the new store --out, or with --all --in-place.",
        ),
    ] = False,
    all_studies: AllStudies = False,
    out: Out = None,
    in_place: InPlace = False,
    retain: Retain = None,
    key_file: KeyFile = None,
    patient_map: PatientMap = None,
    clean_pixels: CleanPixels = None,
    dry_run: DryRun = False,
    show_phi: ShowPhi = False,
    reason: Reason = "",
    verbose: VerboseOption = False,
    version: VersionOption = False,
) -> None:
    """Edit metadata at patient, study, series or instance level, delete, or de-identify
    (frames untouched, unless --clean-pixels blanks some); the same as the edit, delete and
    anonymize commands."""
    targets = targets_of(patient, study, series, instance)
    edits = edits or []
    if batch_file is not None:
        run_file(
            store, batch_file, continue_on_error=continue_on_error, dry_run=dry_run, verbose=verbose
        )
        return
    if anonymize:
        run_anonymize(
            store,
            targets,
            edits,
            all_studies=all_studies,
            out=out,
            in_place=in_place,
            retain=retain or [],
            key_file=key_file,
            dry_run=dry_run,
            reason=reason,
            verbose=verbose,
            patient_map=patient_map,
            clean_pixels=clean_pixels,
        )
        return
    if reject is not None and not delete:
        error_line("--reject goes with -delete")
        raise typer.Exit(EXIT_USAGE)
    if delete:
        if len(edits) > (0 if targets else 1):
            error_line("-delete takes no edits")
            raise typer.Exit(EXIT_USAGE)
        uid = edits[0] if edits and not targets else None
        run_delete(
            store,
            targets,
            uid,
            reject=reject,
            dry_run=dry_run,
            show_phi=show_phi,
            reason=reason,
            verbose=verbose,
        )
        return
    run_edit(
        store,
        targets,
        edits,
        original_attributes=original_attributes,
        dry_run=dry_run,
        show_phi=show_phi,
        reason=reason,
        verbose=verbose,
    )
