"""The ingest command: ``mkdicomweb`` and ``dicomweb-archive create``."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    EXIT_ERROR,
    EXIT_OK,
    StoreOption,
    VerboseOption,
    VersionOption,
    error_line,
    handle_errors,
    stderr,
    stdout,
    store_path,
)
from dicomweb_archive.dicom.parts import InlineLimits
from dicomweb_archive.errors import ArchiveError
from dicomweb_archive.ops.ingest import FileResult, IngestReport, ingest, iter_input_files


def create(  # noqa: PLR0917 - typer passes every option positionally
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="P10 files and directories (searched recursively).", show_default=False
        ),
    ],
    store: StoreOption = DEFAULT_STORE,
    maximum_inline_public_length: Annotated[
        int,
        typer.Option(
            "-m",
            "--maximum-inline-public-length",
            min=0,
            help="Public binary values longer than this many bytes go to bulk data.",
        ),
    ] = 131074,
    maximum_inline_private_length: Annotated[
        int,
        typer.Option(
            "-M",
            "--maximum-inline-private-length",
            min=0,
            help="Private binary values longer than this many bytes go to bulk data.",
        ),
    ] = 64,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace a stored instance when a different file has the same SOP Instance UID.",
        ),
    ] = False,
    verbose: VerboseOption = False,
    version: VersionOption = False,
) -> None:
    """Ingest DICOM P10 files into a static DICOMweb store and its index."""
    root = store_path(store)
    limits = InlineLimits(maximum_inline_public_length, maximum_inline_private_length)
    files = list(iter_input_files(inputs, exclude=root))
    total = sum(_size(path) for path in files)
    with handle_errors(verbose=verbose):
        report = _run(files, root, limits, replace=replace, total=total, verbose=verbose)
    _summary(report, verbose=verbose)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_ERROR)


def _unexpected(exc: BaseException | None) -> bool:
    return exc is not None and not isinstance(exc, ArchiveError | OSError)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _run(
    files: list[Path],
    root: Path,
    limits: InlineLimits,
    *,
    replace: bool,
    total: int,
    verbose: bool,
) -> IngestReport:
    def report_file(result: FileResult) -> None:
        if result.status == "failed":
            error_line(result.error or f"{result.path}: failed")
            if verbose and _unexpected(result.exception):
                stderr.print("".join(traceback.format_exception(result.exception)), markup=False)
        elif verbose:
            where = result.key.sop if result.key else ""
            stderr.print(f"{result.status}: {result.path} -> {where}", markup=False, soft_wrap=True)
            for warning in result.warnings:
                stderr.print(f"  warning: {warning}", markup=False, soft_wrap=True)

    if not stderr.is_terminal:
        return ingest(files, root, limits=limits, replace=replace, progress=report_file)
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[done]}/{task.fields[files]} files"),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task("ingesting", total=total or None, done=0, files=len(files))
        done = 0

        def hook(result: FileResult) -> None:
            nonlocal done
            done += 1
            report_file(result)
            progress.update(task, advance=_size(result.path), done=done)

        return ingest(files, root, limits=limits, replace=replace, progress=hook)


def _summary(report: IngestReport, *, verbose: bool) -> None:
    unchanged = sum(1 for r in report.results if r.status == "unchanged")
    replaced = sum(1 for r in report.results if r.status == "replaced")
    megabytes = report.bytes / 1e6
    rate = report.instances / report.seconds if report.seconds else 0.0
    parts = [
        f"{report.instances} instances stored",
        f"{replaced} replaced" if replaced else "",
        f"{unchanged} unchanged" if unchanged else "",
        f"{len(report.studies)} studies updated",
        f"{megabytes:.1f} MB read",
        f"{len(report.failures)} failed",
        f"{report.seconds:.2f} s ({rate:.0f} instances/s)",
    ]
    line = ", ".join(p for p in parts if p)
    if report.failures and not verbose:
        line += "; the errors above name each failed file"
    stdout.print(line, markup=False, soft_wrap=True)
