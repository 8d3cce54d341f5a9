"""The seed's five commands: mkdicomweb, mkdicomwebinstances, mkdicomwebdeduplicated,
mkdicomwebdeduplicatedgroup, mkdicomwebstudy (and their ``dicomweb-archive`` subcommands)."""

from __future__ import annotations

import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dicomweb_archive.cli import seed_options as opt
from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    VerboseOption,
    VersionOption,
    count,
    error_line,
    handle_errors,
    interactive,
    note,
    real_console,
    say,
    stderr,
    store_path,
    warning_line,
)
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.errors import ArchiveError, UnreadableInputError, UsageError
from dicomweb_archive.store.config import has_password

if TYPE_CHECKING:
    from dicomweb_archive.archive import Archive
    from dicomweb_archive.ops.distributed import Workers
    from dicomweb_archive.ops.ingest_types import FileResult, IngestReport, PipelineOptions
    from dicomweb_archive.ops.stages import StageReport

#: command -> (what it does, reads files?)
COMMANDS = {
    "mkdicomweb": "Ingest DICOM P10 files: all three stages on the studies the input touches.",
    "mkdicomwebinstances": "Stage 1, instance level: frames, bulk data and instance metadata.",
    "mkdicomwebdeduplicated": "Stage 1, deduplicated: frames, bulk data and per-instance "
    "deduplicated data; notifies the group stage.",
    "mkdicomwebdeduplicatedgroup": "Stage 2: combine each study's per-instance deduplicated "
    "data into a group file; notifies the study stage.",
    "mkdicomwebstudy": "Stage 3: write study and series query files, series and instance "
    "metadata and the index, from the deduplicated data.",
}


def make_command(command: str) -> Callable[..., None]:
    """A typer command function for one of the seed's commands."""

    def run(  # noqa: PLR0917 - the seed's option list, passed positionally by typer
        ctx: typer.Context,
        inputs: opt.Inputs = None,
        clean: opt.Clean = False,
        remove_deduplicated_instances: opt.RemoveDeduplicatedInstances = False,
        deduplicate: opt.Deduplicate = False,
        group: opt.Group = True,
        instances: opt.Instances = False,
        maximum_inline_public_length: opt.MaxPublic = None,
        maximum_inline_private_length: opt.MaxPrivate = None,
        no_recompress: opt.NoRecompress = False,
        keep_originals: opt.KeepOriginals = False,
        store: opt.Store = DEFAULT_STORE,
        path_deduplicated: opt.PathDeduplicated = None,
        path_instances: opt.PathInstances = None,
        index_url: opt.IndexUrl = None,
        recompress: opt.Recompress = None,
        study: opt.Study = True,
        content_type: opt.ContentType = None,
        colour_content_type: opt.ColourContentType = None,
        replace: opt.Replace = False,
        follow_dicomdir: opt.FollowDicomdir = False,
        thumbnails: opt.Thumbnails = False,
        scheduler: opt.Scheduler = None,
        workers: opt.Workers = None,
        verbose: VerboseOption = False,
        version: VersionOption = False,
    ) -> None:
        from dicomweb_archive.archive import Archive  # noqa: PLC0415
        from dicomweb_archive.ops.ingest_types import STORE_DEFAULT, PipelineOptions  # noqa: PLC0415

        if inputs == ["help"]:
            say(ctx.get_help())
            raise typer.Exit(EXIT_OK)
        given = any([recompress, content_type, colour_content_type, no_recompress, keep_originals])
        recompression = (
            _recompression(
                recompress, content_type, colour_content_type, no_recompress, keep_originals
            )
            if given
            else STORE_DEFAULT
        )
        options = PipelineOptions(
            instances=instances or command == "mkdicomwebinstances",
            deduplicate=deduplicate or command == "mkdicomwebdeduplicated",
            group=group,
            study=study,
            clean=clean,
            remove_deduplicated_instances=remove_deduplicated_instances,
            replace=replace,
            recompression=recompression,
            follow_dicomdir=follow_dicomdir,
        )
        settings = {
            "path_instances": _relative(path_instances, "--path-instances"),
            "path_deduplicated": _relative(path_deduplicated, "--path-deduplicated"),
            "inline_public": maximum_inline_public_length,
            "inline_private": maximum_inline_private_length,
            "index": index_url,
        }
        created = {"recompression": _recorded(recompression)} if given else {}
        stage = command in ("mkdicomwebdeduplicatedgroup", "mkdicomwebstudy")
        if not stage and not inputs:
            error_line(f"{command} needs at least one input file or directory")
            raise typer.Exit(EXIT_USAGE)
        if thumbnails and not (command == "mkdicomwebstudy" or (command == "mkdicomweb" and study)):
            error_line(
                "--thumbnails follows the study stage: mkdicomweb (with it) or mkdicomwebstudy"
            )
            raise typer.Exit(EXIT_USAGE)
        if (scheduler is not None or workers is not None) and stage:
            error_line(f"{command} reads no files: --scheduler and --workers act on stage 1")
            raise typer.Exit(EXIT_USAGE)
        if scheduler is not None and workers is not None:
            error_line("give --scheduler or --workers, not both")
            raise typer.Exit(EXIT_USAGE)
        if scheduler is not None and not _scheduler_address(scheduler):
            error_line(
                f"--scheduler {scheduler}: give a Dask scheduler's address, "
                "tcp://HOST:PORT (the port 1 to 65535)"
            )
            raise typer.Exit(EXIT_USAGE)
        location = store_path(store)
        hint = _interrupted_hint(location)
        if index_url is not None and has_password(index_url):
            warning_line(
                "the store records --index-url without its password; this run uses the one "
                "given, later commands take it from PGPASSWORD or ~/.pgpass"
            )
        with (
            handle_errors(verbose=verbose, interrupted=hint),
            Archive.open_or_create(location, defaults=created, **settings) as archive,
        ):
            if stage:
                _run_stage(command, archive, inputs, options, thumbnails, verbose=verbose)
                return
            with _workers(archive, scheduler, workers, clean=options.clean) as dask:
                report = _run_files(
                    command,
                    [Path(i) for i in inputs or []],
                    archive,
                    options,
                    verbose=verbose,
                    workers=dask,
                )
            built = report.studies - set(report.pending) - report.empty_studies
            written = _thumbnails(archive, built) if thumbnails else None
        _summary(command, report, location, verbose=verbose)
        if written is not None:
            say(f"{count(written, 'thumbnail')} written")
        raise typer.Exit(EXIT_OK if report.ok else EXIT_ERROR)

    run.__doc__ = COMMANDS[command]
    run.__name__ = command
    return run


def _relative(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    path = Path(value)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        error_line(f"{option} must be a relative path inside the store, not {value!r}")
        raise typer.Exit(EXIT_USAGE)
    return path.as_posix()


def _recompression(
    recompress: list[str] | None,
    grey: str | None,
    colour: str | None,
    disabled: bool,
    keep_originals: bool,
) -> Recompression | None:
    """The recompression the options ask for (``docs/spec/recompression.md``)."""
    try:
        return Recompression.from_options(
            recompress, grey, colour, disabled=disabled, keep_originals=keep_originals
        )
    except UsageError as exc:
        error_line(str(exc))
        raise typer.Exit(EXIT_USAGE) from exc


def _recorded(recompression: Recompression | str | None) -> dict[str, object] | None:
    """The recompression a new store records as its default."""
    return recompression.to_json() if isinstance(recompression, Recompression) else None


def _interrupted_hint(location: str) -> str:
    return (
        "what was stored is kept; the studies it touched wait for the group and study stages: "
        f"run mkdicomwebstudy -o {location} (or any later mkdicomweb run, which completes them)"
    )


def _run_stage(
    command: str,
    archive: Archive,
    studies: list[str] | None,
    options: PipelineOptions,
    thumbnails: bool,
    *,
    verbose: bool,
) -> None:
    from dicomweb_archive.ops.stages import build_studies, group_studies  # noqa: PLC0415

    if command == "mkdicomwebdeduplicatedgroup":
        report = group_studies(
            archive, studies, remove_instance_files=options.remove_deduplicated_instances
        )
        verb = "grouped"
    else:
        report = build_studies(archive, studies)
        verb = "written"
    _stage_failures(report, verbose=verbose)
    say(
        f"{count(len(report.studies), 'study', 'studies')} {verb}"
        + (f", {len(report.failures)} failed (still pending)" if report.failures else "")
    )
    if verbose:
        for uid in report.studies:
            note(f"  {uid}")
    if thumbnails:
        say(f"{count(_thumbnails(archive, report.studies), 'thumbnail')} written")
    if not report.ok:
        raise typer.Exit(EXIT_ERROR)


def _thumbnails(archive: Archive, studies: set[str] | list[str]) -> int:
    """--thumbnails: the thumbnails the built studies lack (``ops/render.py``)."""
    from dicomweb_archive.ops.render import write_thumbnails  # noqa: PLC0415 - PIL, numpy

    return write_thumbnails(archive, studies)


def _stage_failures(report: StageReport, *, verbose: bool) -> None:
    for uid, reason in report.failures.items():
        error_line(f"study {uid}: not built: {reason}")
        exc = report.exceptions.get(uid)
        if verbose and exc is not None and _unexpected(exc):
            note("".join(traceback.format_exception(exc)))


def _unexpected(exc: BaseException | None) -> bool:
    """Whether ``exc`` is (or translates, as ``UnreadableInputError`` does) an internal error,
    whose traceback ``--verbose`` shows."""
    if isinstance(exc, UnreadableInputError):
        return True
    return exc is not None and not isinstance(exc, ArchiveError | OSError)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _scheduler_address(text: str) -> bool:
    from dicomweb_archive.ops.distributed import scheduler_address  # noqa: PLC0415 - lazy

    return scheduler_address(text)


@contextmanager
def _workers(
    archive: Archive, scheduler: str | None, workers: int | None, *, clean: bool
) -> Iterator[Workers | None]:
    """The Dask workers of --scheduler or --workers (None: stage 1 in this process, as a -c
    run always is: one change, staged by one writer)."""
    if (scheduler is None and workers is None) or clean:
        yield None
        return
    # distributed is imported only here (an extra: dicomweb-archive[dask])
    from dicomweb_archive.ops.distributed import check_reachable, open_workers  # noqa: PLC0415

    check_reachable(archive)  # before a cluster is started
    # SIGTERM stops the run as Ctrl-C does: the cluster is closed (killed at once, a local
    # cluster's processes left semaphores behind, which Python's resource tracker reported)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with open_workers(scheduler=scheduler, workers=workers, notice=note) as dask:
            yield dask
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _run_files(
    command: str,
    inputs: list[Path],
    archive: Archive,
    options: PipelineOptions,
    *,
    verbose: bool,
    workers: Workers | None,
) -> IngestReport:
    from dicomweb_archive.ops.ingest import write_instances  # noqa: PLC0415
    from dicomweb_archive.ops.ingest_types import iter_input_files  # noqa: PLC0415

    run_stages = command == "mkdicomweb"

    def report_file(result: FileResult) -> None:
        if result.status == "failed":
            error_line(result.error or f"{result.path}: failed")
            if verbose and isinstance(result.exception, ArchiveError) and result.exception.detail:
                note(f"  {result.exception.detail}")
            if verbose and _unexpected(result.exception):
                note("".join(traceback.format_exception(result.exception)))
        elif verbose:
            where = result.key.sop if result.key else ""
            note(f"{result.status}: {result.path} -> {where}")
            for warning in result.warnings:
                note(f"  warning: {warning}")

    if not interactive():
        return write_instances(  # the inputs are walked as they are read
            archive,
            inputs,
            options=options,
            progress=report_file,
            run_stages=run_stages,
            keep_results=False,
            workers=workers,
        )
    from rich.progress import (  # noqa: PLC0415 - rich only on a terminal
        BarColumn,
        DownloadColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[done]}/{task.fields[files]} files"),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    root = getattr(archive.storage, "root", None)
    files = list(
        iter_input_files(
            inputs,
            exclude=root if isinstance(root, Path) else None,
            follow_dicomdir=options.follow_dicomdir,
        )
    )
    # for the bar: sizes known before the start
    total = sum(_size(path) for path in files if isinstance(path, Path))
    with Progress(*columns, console=real_console(stderr), transient=True) as progress:
        task = progress.add_task("ingesting", total=total or None, done=0, files=len(files))
        done = 0

        def hook(result: FileResult) -> None:
            nonlocal done
            done += 1
            report_file(result)
            progress.update(task, advance=_size(result.path), done=done)

        return write_instances(
            archive,
            [f for f in files if isinstance(f, Path)] if not options.follow_dicomdir else inputs,
            options=options,
            progress=hook,
            run_stages=run_stages,
            keep_results=False,
            workers=workers,
        )


def _summary(command: str, report: IngestReport, location: str, *, verbose: bool) -> None:
    if report.stages is not None:
        _stage_failures(report.stages, verbose=verbose)
    if report.not_read:
        error_line(f"{count(report.not_read, 'file')} not read: {report.stopped}")
    unchanged = report.count("unchanged")
    replaced = report.count("replaced")
    # the size of every file this run took in, refused ones included
    megabytes = (report.bytes + sum(_size(r.path) for r in report.failures)) / 1e6
    rate = report.instances / report.seconds if report.seconds else 0.0
    built = 0
    if report.stages is not None:  # a change (-c, --replace) builds its studies itself
        done = report.studies - set(report.pending) - set(report.stages.failures)
        built = len((set(report.stages.studies) | done) - report.empty_studies)
    parts = [
        f"{count(report.instances, 'instance')} stored"
        + (f" ({replaced} of them replacing a stored one)" if replaced else ""),
        f"{report.incomplete} stored incomplete (-v says why)" if report.incomplete else "",
        f"{unchanged} unchanged" if unchanged else "",
        f"{count(built, 'study', 'studies')} built" if report.stages is not None else "",
        f"{megabytes:.1f} MB read",
        f"{count(report.frames_recompressed, 'frame')} recompressed"
        if report.frames_recompressed
        else "",
        f"{report.frames_kept} kept as received (-v says why)" if report.frames_kept else "",
        f"{len(report.failures)} failed",
        f"{report.seconds:.2f} s ({rate:.0f} instances/s)",
    ]
    line = ", ".join(p for p in parts if p)
    if report.failures and not verbose:
        line += "; the errors above name each failed file"
    say(line)
    for change in report.changes:
        say(
            f"change {change}: what it replaced or cleaned is kept; dicomweb-archive revert "
            f"{change} -o {location} undoes it"
        )
    if report.pending:
        waiting = len(report.pending)
        stages = (
            "mkdicomwebdeduplicatedgroup and mkdicomwebstudy"
            if command in ("mkdicomwebdeduplicated",)
            else "mkdicomwebstudy"
        )
        say(
            f"{count(waiting, 'study waits', 'studies wait')} for the later stages: "
            f"run {stages} -o {location}"
        )
