"""``dicomweb-archive delete``: delete or reject instances (kept aside, revertible; also
reached through ``mkdicomwebupdate -delete``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    EXIT_OK,
    StoreOption,
    VerboseOption,
    handle_errors,
    open_store,
)
from dicomweb_archive.cli.targets import (
    DryRun,
    Instance,
    Patient,
    Reason,
    Series,
    ShowPhi,
    Study,
    one_target,
    print_done,
    print_plan,
    targets_of,
)

Reject = Annotated[
    str | None,
    typer.Option(
        "--reject",
        help="Reject instead, with an IOCM reason code: 113001 quality, 113037 patient safety, "
        "113038 incorrect worklist entry, 113039 retention expired (restore brings them back).",
    ),
]
Uid = Annotated[
    str | None,
    typer.Argument(help="A Study, Series or SOP Instance UID (level found).", show_default=False),
]


def delete(  # noqa: PLR0917 - typer passes every option positionally
    uid: Uid = None,
    store: StoreOption = DEFAULT_STORE,
    patient: Patient = None,
    study: Study = None,
    series: Series = None,
    instance: Instance = None,
    reject: Reject = None,
    dry_run: DryRun = False,
    show_phi: ShowPhi = False,
    reason: Reason = "",
    verbose: VerboseOption = False,
) -> None:
    """Delete (or reject) instances: set aside, revertible with revert (restore for a
    rejection) until purged."""
    run_delete(
        store,
        targets_of(patient, study, series, instance),
        uid,
        reject=reject,
        dry_run=dry_run,
        show_phi=show_phi,
        reason=reason,
        verbose=verbose,
    )


def run_delete(
    store: Path,
    targets: dict[str, str],
    uid: str | None,
    *,
    reject: str | None,
    dry_run: bool,
    show_phi: bool,
    reason: str,
    verbose: bool,
) -> None:
    from dicomweb_archive.ops.delete import apply_delete, plan_delete  # noqa: PLC0415
    from dicomweb_archive.ops.update import guess_level  # noqa: PLC0415

    with handle_errors(verbose=verbose), open_store(store) as archive:
        if not targets and uid is not None:
            targets = {guess_level(archive, uid): uid}
        level, identifier = one_target(targets)
        plan = plan_delete(archive, level, identifier)
        if dry_run:
            print_plan(plan, show_phi=show_phi)
            raise typer.Exit(EXIT_OK)
        report = apply_delete(archive, plan, reason=reason, reject=reject)
    print_done(report, "rejected" if reject else "deleted")
