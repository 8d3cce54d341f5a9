"""What every command shares: consoles, the store option, error-to-exit-code mapping.

Exit codes (``docs/spec/exit-codes.md``): 0 success, 1 error or some input failed, 2 usage
(or not a store), 3 verification found differences, 4 verification found work pending or in
progress (nothing differs), 130 interrupted.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from dicomweb_archive import __version__
from dicomweb_archive.errors import ArchiveError, IndexUnavailableError, StoreError

if TYPE_CHECKING:
    from rich.console import Console

    from dicomweb_archive.archive import Archive

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DIFFERENCES = 3
EXIT_INCOMPLETE = 4
#: verify: nothing differs, nothing pending, but instances whose received file ends inside
#: Pixel Data are stored (docs/spec/exit-codes.md)
EXIT_INCOMPLETE_INSTANCES = 5
EXIT_INTERRUPTED = 130


class _LazyConsole:
    """A rich Console made on first use: importing rich costs about 0.1 s, which a command
    that prints a line or two need not pay (``docs/benchmarks.md``, start-up)."""

    def __init__(self, **settings: Any) -> None:
        self._settings = settings
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console(), name)

    def console(self) -> Console:
        """The Console itself, made now if not yet."""
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415 - see the class docstring

            self._console = Console(**self._settings)
        return self._console


stdout = cast("Console", _LazyConsole(highlight=False))
stderr = cast("Console", _LazyConsole(stderr=True, highlight=False))


def real_console(console: Console) -> Console:
    """The rich Console behind :data:`stdout` or :data:`stderr`: rich's progress display uses
    its console as a context manager and with special methods, which attribute lookup on a
    lazy stand-in does not give."""
    return console.console() if isinstance(console, _LazyConsole) else console


def interactive() -> bool:
    """Whether stderr is a terminal (progress bars are drawn only then)."""
    return sys.stderr.isatty()


class SilentProgress:
    """What a command's progress bar is when stderr is not a terminal: nothing drawn, and rich
    (about 0.05 s to import) not imported."""

    def __enter__(self) -> SilentProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def add_task(self, *_args: object, **_fields: object) -> int:
        return 0

    def advance(self, *_args: object, **_fields: object) -> None:
        return None


def say(message: str) -> None:
    """One plain line on stdout (no markup, no wrapping, no rich)."""
    sys.stdout.write(message + "\n")


def count(number: int, noun: str, nouns: str = "") -> str:
    """``1 study``, ``2 studies``: a number with its noun (``nouns`` when not just +s)."""
    return f"{number} {noun if number == 1 else nouns or noun + 's'}"


def note(message: str) -> None:
    """One plain line on stderr."""
    sys.stderr.write(message + "\n")


DEFAULT_STORE = Path("~/dicomweb")

StoreOption = Annotated[
    Path,
    typer.Option(
        "-o",
        "--dir",
        help="The store: a directory, s3://BUCKET/PREFIX, or memory://NAME (in this process).",
        show_default=True,
    ),
]
VerboseOption = Annotated[
    bool, typer.Option("-v", "--verbose", help="Per-file detail, and tracebacks on errors.")
]


def version_callback(value: bool) -> None:
    if value:
        say(f"dicomweb-archive {__version__}")
        raise typer.Exit(EXIT_OK)


VersionOption = Annotated[
    bool,
    typer.Option(
        "-V",
        "--version",
        help="Print the version number and exit.",
        callback=version_callback,
        is_eager=True,
    ),
]


def store_path(path: Path) -> str:
    """The store location as given (``memory://`` and ``s3://`` locations survive typer's
    Path, which makes ``//`` one slash)."""
    text = str(path)
    for scheme in ("memory://", "s3://"):
        single = scheme[:-1]
        if text.startswith(single) and not text.startswith(scheme):
            text = scheme + text[len(single) :]
    return text


def open_store(path: Path) -> Archive:
    """The existing store at ``path`` (an error, exit code 2, when it is not one), its index
    rebuilt first when it lost its rows (an upgraded store). An index that cannot be reached
    is the command's one error (it reads nothing without it)."""
    from dicomweb_archive.archive import Archive  # noqa: PLC0415 - not for --help
    from dicomweb_archive.ops.reindex import ensure_index  # noqa: PLC0415

    archive = Archive.open(store_path(path))
    try:
        ensure_index(archive)
    except IndexUnavailableError:
        archive.close()
        raise
    except StoreError as exc:  # a reader still reads; the index says what it says
        warning_line(f"the index was not rebuilt: {exc}")
    return archive


def error_line(message: str) -> None:
    """One line on stderr, never interpreted as markup."""
    note(f"error: {message}")


def warning_line(message: str) -> None:
    note(f"warning: {message}")


def _library_warnings(*, verbose: bool) -> Callable[..., None]:
    """What shows a library's warning (pydicom's about a value it reads, in any thread): one
    line of ours without the library's source line with -v, else nothing (it may quote a
    value, PHI)."""

    def show(message: Warning | str, category: type[Warning], *_where: object) -> None:
        if verbose:
            first = str(message).strip().splitlines()
            note(f"warning: {first[0] if first else category.__name__}")

    return show


@contextmanager
def handle_errors(*, verbose: bool, interrupted: str = "") -> Iterator[None]:
    """Map library errors to one stderr line and an exit code; tracebacks only with -v.
    ``interrupted`` says what to do after Ctrl-C. Libraries' warnings (``warnings.warn``,
    pydicom's about the values it reads) never reach stderr raw: one ``warning:`` line each
    with -v, else nothing. A wait for another writer's lease that passes a second is one
    line (``store/storage.py``'s ``on_lease_wait``)."""
    from dicomweb_archive.store.storage import on_lease_wait  # noqa: PLC0415 - not for --help

    on_lease_wait(note)
    with warnings.catch_warnings():
        warnings.showwarning = _library_warnings(verbose=verbose)
        with _mapped_errors(verbose=verbose, interrupted=interrupted):
            yield


@contextmanager
def _mapped_errors(*, verbose: bool, interrupted: str) -> Iterator[None]:
    try:
        yield
    except ArchiveError as exc:
        if verbose:
            stderr.print_exception(show_locals=False)
        error_line(exc.verbose() if verbose else str(exc))
        raise typer.Exit(exc.exit_code) from exc
    except KeyboardInterrupt:
        error_line("interrupted" + (f": {interrupted}" if interrupted else ""))
        raise typer.Exit(EXIT_INTERRUPTED) from None


def run_app(app: Callable[..., object]) -> None:
    """Run a typer app with the project's handling of broken pipes."""
    try:
        app()
    except BrokenPipeError:
        sys.stderr.close()
        raise SystemExit(EXIT_ERROR) from None
