"""``dicomweb-archive edit``: metadata edits at patient, study, series or instance level, or a
batch of them (also reached through ``mkdicomwebupdate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    EXIT_OK,
    EXIT_USAGE,
    StoreOption,
    VerboseOption,
    count,
    error_line,
    handle_errors,
    open_store,
    say,
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
from dicomweb_archive.errors import StaleVersionError

Edits = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[TAG=VALUE | TAG= | -TAG]...",
        help="Edits: keyword, (gggg,eeee) or ggggeeee; Seq[0].Keyword for nested; "
        "'TAG=' empties, '-TAG' removes.",
        show_default=False,
    ),
]
OriginalAttributes = Annotated[
    bool,
    typer.Option(
        "--original-attributes",
        help="Also keep the previous values inside each instance, in an Original "
        "Attributes Sequence (0400,0561) item (reason CORRECT).",
    ),
]
BatchFile = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="Apply the edits of a .csv (level,target,edit[,reason]) or .jsonl file; the "
        "whole batch is one change unless --continue-on-error.",
    ),
]
ContinueOnError = Annotated[
    bool, typer.Option("--continue-on-error", help="With --file: each line is its own change.")
]


def edit(  # noqa: PLR0917 - typer passes every option positionally
    edits: Edits = None,
    store: StoreOption = DEFAULT_STORE,
    patient: Patient = None,
    study: Study = None,
    series: Series = None,
    instance: Instance = None,
    batch_file: BatchFile = None,
    continue_on_error: ContinueOnError = False,
    original_attributes: OriginalAttributes = False,
    dry_run: DryRun = False,
    show_phi: ShowPhi = False,
    reason: Reason = "",
    verbose: VerboseOption = False,
) -> None:
    """Edit metadata at patient, study, series or instance level (frames untouched)."""
    if batch_file is not None:
        run_file(
            store, batch_file, continue_on_error=continue_on_error, dry_run=dry_run, verbose=verbose
        )
        return
    run_edit(
        store,
        targets_of(patient, study, series, instance),
        edits or [],
        original_attributes=original_attributes,
        dry_run=dry_run,
        show_phi=show_phi,
        reason=reason,
        verbose=verbose,
    )


def run_edit(
    store: Path,
    targets: dict[str, str],
    edits: list[str],
    *,
    original_attributes: bool,
    dry_run: bool,
    show_phi: bool,
    reason: str,
    verbose: bool,
) -> None:
    """Edit the one target of ``targets`` (usage errors exit 2 before the store is opened)."""
    from dicomweb_archive.ops.update import apply_update, plan_update, update  # noqa: PLC0415

    level, identifier = one_target(targets)
    if not edits:
        error_line("give at least one edit (TAG=VALUE, TAG= or -TAG)")
        raise typer.Exit(EXIT_USAGE)
    with handle_errors(verbose=verbose), open_store(store) as archive:
        plan = plan_update(archive, level, identifier, edits, record_original=original_attributes)
        if dry_run:
            print_plan(plan, show_phi=show_phi)
            raise typer.Exit(EXIT_OK)
        try:
            report = apply_update(archive, plan, reason=reason)
        except StaleVersionError:  # another update came first: plan again on its result
            report = update(
                archive,
                level,
                identifier,
                edits,
                reason=reason,
                record_original=original_attributes,
            )
    print_done(report, "updated")


def run_file(
    store: Path, path: Path, *, continue_on_error: bool, dry_run: bool, verbose: bool
) -> None:
    from dicomweb_archive.ops.batch import parse_batch, run_batch  # noqa: PLC0415

    with handle_errors(verbose=verbose), open_store(store) as archive:
        lines = parse_batch(path.read_text(encoding="utf-8"), path)
        results = run_batch(
            archive, lines, continue_on_error=continue_on_error, dry_run=dry_run, name=path.name
        )
    for result in results:
        where = f"{path.name}:{result.line.number}"
        if result.error is None:
            say(f"{where}: ok, {count(result.instances, 'instance')}")
        else:
            error_line(f"{where}: {result.error}")
    failed = sum(result.error is not None for result in results)
    verb = "checked (--dry-run: nothing written)" if dry_run else "applied"
    say(f"{count(len(results) - failed, 'line')} {verb}, {failed} failed")
    if failed:
        raise typer.Exit(1)
