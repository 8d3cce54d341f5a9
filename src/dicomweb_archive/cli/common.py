"""What every command shares: consoles, the store option, error-to-exit-code mapping.

Exit codes (``docs/spec/exit-codes.md``): 0 success, 1 error or some input failed, 2 usage,
3 verification found differences, 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dicomweb_archive import __version__
from dicomweb_archive.errors import ArchiveError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DIFFERENCES = 3
EXIT_INTERRUPTED = 130

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)

DEFAULT_STORE = Path("~/dicomweb")

StoreOption = Annotated[
    Path,
    typer.Option(
        "-o",
        "--dir",
        help="The store's root directory.",
        show_default=True,
    ),
]
VerboseOption = Annotated[
    bool, typer.Option("-v", "--verbose", help="Per-file detail, and tracebacks on errors.")
]


def version_callback(value: bool) -> None:
    if value:
        stdout.print(f"dicomweb-archive {__version__}")
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


def store_path(path: Path) -> Path:
    return path.expanduser()


def error_line(message: str) -> None:
    """One line on stderr, never interpreted as markup."""
    stderr.print(f"error: {message}", markup=False, soft_wrap=True)


@contextmanager
def handle_errors(*, verbose: bool) -> Iterator[None]:
    """Map library errors to one stderr line and an exit code; tracebacks only with -v."""
    try:
        yield
    except ArchiveError as exc:
        if verbose:
            stderr.print_exception(show_locals=False)
        error_line(str(exc))
        raise typer.Exit(exc.exit_code) from exc
    except KeyboardInterrupt:
        error_line("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def run_app(app: Callable[..., object]) -> None:
    """Run a typer app with the project's handling of broken pipes."""
    try:
        app()
    except BrokenPipeError:
        sys.stderr.close()
        raise SystemExit(EXIT_ERROR) from None
