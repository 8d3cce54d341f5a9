"""``mkdicomwebpart10`` / ``dicomweb-archive export`` and ``dicomweb-archive verify``."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    EXIT_DIFFERENCES,
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_INCOMPLETE_INSTANCES,
    EXIT_OK,
    EXIT_USAGE,
    SilentProgress,
    StoreOption,
    VerboseOption,
    VersionOption,
    count,
    error_line,
    handle_errors,
    interactive,
    note,
    open_store,
    real_console,
    say,
    stderr,
    stdout,
)
from dicomweb_archive.cli.seed_options import TRANSCODE_TARGETS, syntaxes

if TYPE_CHECKING:
    from dicomweb_archive.archive import Archive
    from dicomweb_archive.ops.export import Exported, ExportReport, Selection
    from dicomweb_archive.ops.verify import Verdict, VerifyReport

if TYPE_CHECKING:
    from rich.progress import Progress


def _progress(label: str) -> Progress:
    if not interactive():
        return cast("Progress", SilentProgress())
    from rich.progress import (  # noqa: PLC0415 - rich only where output needs it
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=real_console(stderr),
        transient=True,
    )


def part10(  # noqa: PLR0917 - typer passes every option positionally
    uids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[STUDY [SERIES [SOP]...]]",
            help="StudyInstanceUID, optionally a SeriesInstanceUID and SOPInstanceUIDs.",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = DEFAULT_STORE,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="Directory to write <Study>/<Series>/<SOP>.dcm into, or '-' for a zip "
            "stream on standard output.",
        ),
    ] = None,
    zip_file: Annotated[
        Path | None, typer.Option("--zip", help="Write a zip archive to this file.")
    ] = None,
    dicomdir: Annotated[
        bool,
        typer.Option("--dicomdir", help="Lay out --out as media with a DICOMDIR (PS3.10)."),
    ] = False,
    patient_id: Annotated[
        str | None, typer.Option("--patient-id", help="Every study of this PatientID.")
    ] = None,
    every_study: Annotated[bool, typer.Option("--all", help="Every study of the store.")] = False,
    query: Annotated[
        list[str] | None,
        typer.Option(
            "--query",
            help="Studies matching KEY=VALUE against the index (repeatable; * and ? "
            "wildcards, date ranges A-B), e.g. PatientName=DOE*.",
        ),
    ] = None,
    original_transfer_syntax: Annotated[
        bool,
        typer.Option(
            "--original-transfer-syntax",
            help="Export in the transfer syntax the instance was received in (what export "
            "does by default; instances whose compressed original was recompressed come back "
            "pixel-identical in their stored syntax unless kept with --keep-originals).",
        ),
    ] = False,
    transfer_syntax: Annotated[
        str | None,
        typer.Option(
            "--transfer-syntax",
            help=f"Transcode to this transfer syntax: {syntaxes(TRANSCODE_TARGETS)}; frames "
            "are decoded and re-encoded, each checked; instances already in it stay "
            "byte-exact.",
        ),
    ] = None,
    verbose: VerboseOption = False,
    version: VersionOption = False,
) -> None:
    """Rebuild P10 files from the store, byte-identical to those ingested."""
    from dicomweb_archive.index.queries import parse_filters  # noqa: PLC0415
    from dicomweb_archive.ops.export import Selection  # noqa: PLC0415

    uids = uids or []
    if not uids and patient_id is None and not query and not every_study:
        error_line("name a study (and series, instances), --patient-id, --query or --all")
        raise typer.Exit(EXIT_USAGE)
    with handle_errors(verbose=verbose):
        selection = Selection(
            study=uids[0] if uids else None,
            series=uids[1] if len(uids) > 1 else None,
            sops=tuple(uids[2:]),
            patient_id=patient_id,
            query=parse_filters(query or []),
            every_study=every_study,
        )
        if original_transfer_syntax and transfer_syntax is not None:
            error_line("--original-transfer-syntax and --transfer-syntax exclude each other")
            raise typer.Exit(EXIT_USAGE)
        with open_store(store) as archive:
            report = _run_export(archive, selection, out, zip_file, dicomdir, transfer_syntax)
    for item in report.failures:
        error_line(item.error or "")
        if verbose and item.exception is not None:
            note("".join(traceback.format_exception(item.exception)))
    ok = [item for item in report.items if item.error is None]
    transcoded = sum(1 for item in ok if item.transcoded)
    summary = (
        f"{count(len(ok), 'instance')} exported ({classes(item.equivalence for item in ok)})"
        + (f", {transcoded} of them transcoded" if transcoded else "")
        + f", {report.bytes / 1e6:.1f} MB, {len(report.failures)} failed, "
        f"{report.seconds:.2f} s"
    )
    (stderr if out == "-" else stdout).print(summary, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_ERROR)


def _run_export(  # noqa: PLR0917 - one call site, mirrors the command's options
    archive: Archive,
    selection: Selection,
    out: str | None,
    zip_file: Path | None,
    dicomdir: bool,
    transfer_syntax: str | None,
) -> ExportReport:
    from dicomweb_archive.ops.export import export  # noqa: PLC0415

    with _progress("exporting") as progress:
        task = progress.add_task("exporting", total=None)

        def hook(_item: Exported) -> None:
            progress.advance(task)

        if out == "-":
            return export(
                archive,
                selection,
                zip_file=sys.stdout.buffer,
                transfer_syntax=transfer_syntax,
                progress=hook,
            )
        return export(
            archive,
            selection,
            out=Path(out) if out is not None else None,
            zip_file=zip_file,
            dicomdir=dicomdir,
            transfer_syntax=transfer_syntax,
            progress=hook,
        )


def verify_command(  # noqa: PLR0917 - typer passes every option positionally
    store: StoreOption = DEFAULT_STORE,
    study: Annotated[
        list[str] | None,
        typer.Option("--study", help="Check only this study (repeatable)."),
    ] = None,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep", help="Also derive each instance's metadata again from its rebuilt file."
        ),
    ] = False,
    against: Annotated[
        Path | None,
        typer.Option("--against", help="A directory of original P10 files to compare with."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Check the store: files, hashes, index, orphans, and byte-exact rebuild of every instance."""
    from dicomweb_archive.ops.verify import verify  # noqa: PLC0415

    with handle_errors(verbose=verbose), _progress("verifying") as progress:
        task = progress.add_task("verifying", total=None)

        def hook(_verdict: Verdict) -> None:
            progress.advance(task)

        with open_store(store) as archive:
            report = verify(archive, studies=study, deep=deep, against=against, progress=hook)
    if as_json:
        stdout.print_json(json.dumps(report.to_json()))
    else:
        _render(report, verbose=verbose)
    if not report.ok:
        raise typer.Exit(EXIT_DIFFERENCES)
    if not report.complete:
        raise typer.Exit(EXIT_INCOMPLETE)
    raise typer.Exit(EXIT_INCOMPLETE_INSTANCES if report.incomplete_instances else EXIT_OK)


#: the equivalence classes of instances, as verify and export count them
#: (``docs/spec/export-verify.md``)
CLASSES = {
    "bytes": "rebuilt byte-identical to the ingested file",
    "pixels+attributes": "compressed original recompressed at ingest: rebuilt pixel-identical, "
    "every attribute as received",
    "edited": "edited since ingest: rebuilt with the edits",
    "incomplete": "the received file ends inside Pixel Data: rebuilt as received (or edited)",
    "failed": "cannot be rebuilt as it should (the errors say why)",
}


def classes(equivalences: Iterable[str]) -> str:
    """``3 bytes, 1 edited``: how many instances of each equivalence class, in a fixed order
    (the same for export and verify)."""
    found: dict[str, int] = {}
    for name in equivalences:
        found[name] = found.get(name, 0) + 1
    return ", ".join(f"{found[name]} {name}" for name in CLASSES if name in found) or "none"


def _render(report: VerifyReport, *, verbose: bool) -> None:
    for finding in report.findings:
        note(f"{finding.kind}: {finding.where}: {finding.message}")
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="verify")
    table.add_column("equivalence")
    table.add_column("instances", justify="right")
    table.add_column("meaning")
    found = [verdict.equivalence for verdict in report.instances]
    for name, meaning in CLASSES.items():
        if name in found:
            table.add_row(name, str(found.count(name)), meaning)
    stdout.print(table)
    for flag, flagged in sorted(report.flags.items()):
        say(f"{count(flagged, 'instance')} flagged {flag}")
    if report.against:
        say(", ".join(f"{key}: {value}" for key, value in report.against.items()))
    if not report.ok:
        outcome = count(len(report.differences), "difference")
    elif not report.complete:
        outcome = (
            f"no differences, but {len(report.incomplete)} pending: work not done yet (run the "
            "stages, or verify again once the write in progress ends)"
        )
    elif report.incomplete_instances:
        outcome = (
            f"no differences, but {count(len(report.incomplete_instances), 'instance')} "
            "incomplete (the received file ends inside Pixel Data; stored as received)"
        )
    else:
        outcome = "no differences"
    say(
        f"{outcome}; {count(len(report.instances), 'instance')} "
        f"({classes(v.equivalence for v in report.instances)}), "
        f"{report.bytes_read / 1e6:.1f} MB rebuilt and hashed in {report.seconds:.2f} s"
    )
    if verbose:
        for item in report.instances:
            flags = "".join(f" [{flag}]" for flag in item.flags)
            note(f"{item.equivalence}: {item.sop}{flags}")
