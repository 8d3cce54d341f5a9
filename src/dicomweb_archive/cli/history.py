"""``dicomweb-archive history`` and ``audit``: what changed, when, by whom."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    StoreOption,
    VerboseOption,
    handle_errors,
    open_store,
    say,
)


def history_command(
    sop: Annotated[
        str, typer.Argument(metavar="SOP", help="A SOPInstanceUID.", show_default=False)
    ],
    store: StoreOption = DEFAULT_STORE,
    verbose: VerboseOption = False,
) -> None:
    """List an instance's revisions, each with the change that produced it."""
    from dicomweb_archive.ops.history import history  # noqa: PLC0415

    with handle_errors(verbose=verbose), open_store(store) as archive:
        entries = history(archive, sop)
    if not entries:
        say(f"{sop}: as ingested, never changed")
    elif entries[0]["revision_before"] == 0:
        say("revision 0: as ingested")
    for entry in entries:
        changed = ", ".join(c["attribute"] for c in entry["changes"])
        revision = entry["revision"]
        state = f"revision {revision}" if revision is not None else "removed"
        say(
            f"{state}: {entry['time']} {entry['user']} {entry['operation']} "
            f"(change {entry['change_id']})"
            + (f": {changed}" if changed else "")
            + (f" ({entry['reason']})" if entry["reason"] else "")
        )


def audit_command(
    store: StoreOption = DEFAULT_STORE,
    sop: Annotated[
        str | None, typer.Option("--sop", help="Only the records of this SOPInstanceUID.")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Print the audit log (every change, with before/after hashes) as JSON lines."""
    from dicomweb_archive.ops.history import audit_log  # noqa: PLC0415

    with handle_errors(verbose=verbose), open_store(store) as archive:
        rows = audit_log(archive, sop)
    for row in rows:
        sys.stdout.write(json.dumps(row, sort_keys=True) + "\n")
