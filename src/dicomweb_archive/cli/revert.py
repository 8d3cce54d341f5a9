"""``dicomweb-archive revert``, ``restore`` and ``purge``: undo a change, or make one final."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    StoreOption,
    VerboseOption,
    count,
    error_line,
    handle_errors,
    open_store,
    say,
    warning_line,
)
from dicomweb_archive.cli.targets import print_done, print_plan

Target = Annotated[
    str,
    typer.Argument(
        metavar="CHANGE|SOP",
        help="A change id (see audit), or with --to a SOPInstanceUID.",
        show_default=False,
    ),
]


def revert_command(  # noqa: PLR0917 - typer passes every option positionally
    target: Target,
    store: StoreOption = DEFAULT_STORE,
    to: Annotated[
        int | None,
        typer.Option("--to", help="With a SOPInstanceUID: the revision to restore.", min=0),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded.")] = "",
    verbose: VerboseOption = False,
) -> None:
    """Undo a change (every instance it touched gets its state before it), or with --to give
    one instance an earlier revision's metadata; either is a new change."""
    from dicomweb_archive.ops.revert import apply_revert, plan_revert, revert_change  # noqa: PLC0415

    change = re.fullmatch(r"[0-9a-f]{32}", target) is not None
    if change == (to is not None):
        error_line("name a change id, or a SOPInstanceUID with --to REVISION")
        raise typer.Exit(EXIT_USAGE)
    with handle_errors(verbose=verbose), open_store(store) as archive:
        if to is None and dry_run:
            rows = archive.index.audit(change_id=target)
            if not rows:
                error_line(f"no change {target} in the store (see dicomweb-archive audit)")
                raise typer.Exit(EXIT_ERROR)
            studies = {row["study_instance_uid"] for row in rows}
            say(
                f"plan: revert change {target}: {count(len(rows), 'instance')} in "
                f"{count(len(studies), 'study', 'studies')}; nothing written (--dry-run)"
            )
            for row in rows:
                say(
                    f"  {row['study_instance_uid']}/{row['series_instance_uid']}/"
                    f"{row['sop_instance_uid']}"
                )
            raise typer.Exit(EXIT_OK)
        if to is None:
            report = revert_change(archive, target, reason=reason, warn=warning_line)
            print_done(report, "reverted")
            return
        plan = plan_revert(archive, target, to)
        if dry_run:
            print_plan(plan, show_phi=False)
            raise typer.Exit(EXIT_OK)
        report = apply_revert(archive, plan)
    say(f"{target} reverted to revision {to} (change {report.change_id})")


def restore_command(
    change: Annotated[
        str, typer.Argument(help="The change id of a rejection (see audit).", show_default=False)
    ],
    store: StoreOption = DEFAULT_STORE,
    verbose: VerboseOption = False,
) -> None:
    """Bring back the instances a rejection (-delete --reject) set aside."""
    from dicomweb_archive.ops.revert import revert_change  # noqa: PLC0415

    with handle_errors(verbose=verbose), open_store(store) as archive:
        report = revert_change(archive, change)
    print_done(report, "restored")


def purge_command(
    change: Annotated[str, typer.Argument(help="A change id (see audit).", show_default=False)],
    store: StoreOption = DEFAULT_STORE,
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded.")] = "",
    verbose: VerboseOption = False,
) -> None:
    """Delete for good what a change set aside (it can no longer be reverted); after a
    de-identification in place, also the original values its record kept."""
    from dicomweb_archive.ops.purge import purge  # noqa: PLC0415

    with handle_errors(verbose=verbose), open_store(store) as archive:
        purge_id = purge(archive, change, reason=reason)
    say(f"change {change} purged (change {purge_id})")
