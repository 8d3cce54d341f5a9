"""Usage errors as one ``error:`` line, like every other error (``docs/spec/exit-codes.md``:
exit code 2), and ``-V/--version`` on every ``dicomweb-archive`` subcommand.

typer shows a usage error (an unknown option, a missing argument, a value of the wrong type)
as the usage line, a hint and ``Error: ...``: three lines in another form than the project's.
The command classes here run typer's own parsing and show its message on one line instead.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from typing import Annotated, Any, cast

import typer
from typer.core import TyperCommand, TyperGroup

from dicomweb_archive.cli.common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, error_line, say

#: click's ``UsageError``, the base of every parsing error (typer exports only its subclass
#: ``BadParameter``)
USAGE_ERROR = cast("type[Exception]", typer.BadParameter.__mro__[1])
#: click's ``Abort`` (typer exports it)
ABORT = typer.Abort


def _run(main: Any, args: Sequence[str] | None, prog_name: str | None, **extra: Any) -> None:
    """Run a command's ``main`` in typer's non-standalone mode and exit as standalone does,
    with a usage error as one line."""
    try:
        code = main(args, prog_name, standalone_mode=False, **extra)
    except USAGE_ERROR as exc:
        error = cast("Any", exc)
        if type(exc).__name__ == "NoArgsIsHelpError":  # the group's help, not an error
            sys.stderr.write(error.format_message() + "\n")
            sys.exit(EXIT_USAGE)
        where = f" (see {error.ctx.command_path} -h)" if error.ctx is not None else ""
        message = " ".join(error.format_message().split())
        error_line(f"{message}{where}")
        sys.exit(EXIT_USAGE)
    except ABORT:
        error_line("aborted")
        sys.exit(EXIT_ERROR)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


class _OneLineMain:
    """``main`` in standalone mode (a console script, a test runner) with one-line usage
    errors."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        run = cast("Any", super()).main
        extra["windows_expand_args"] = windows_expand_args
        if not standalone_mode:
            return run(args, prog_name, complete_var, standalone_mode=False, **extra)
        _run(run, args, prog_name, complete_var=complete_var, **extra)
        return None


class OneLineCommand(_OneLineMain, TyperCommand):
    """A single-command application (a seed command) whose usage errors are one line."""


class OneLineGroup(_OneLineMain, TyperGroup):
    """The umbrella command: usage errors are one line, and each subcommand that has no
    ``-V/--version`` gets the umbrella's."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The subcommand, given the umbrella's ``-V/--version`` when it has none (``ctx`` is
        click's Context)."""
        command = super().get_command(ctx, cmd_name)
        if command is None or any("--version" in getattr(p, "opts", ()) for p in command.params):
            return command
        for param in self.params:
            if "--version" in getattr(param, "opts", ()):
                version = copy.copy(param)
                version.expose_value = False  # its callback answers; the command never sees it
                command.params.append(version)
        return command


def help_command(
    ctx: typer.Context,
    command: Annotated[
        str | None,
        typer.Argument(help="A command (default: the list of commands).", show_default=False),
    ] = None,
) -> None:
    """Print the help of dicomweb-archive, or of one of its commands."""
    parent = ctx.parent
    assert parent is not None  # a subcommand always has the umbrella's context
    if command is None:
        say(parent.get_help())
        return
    group = cast("TyperGroup", parent.command)
    found = group.get_command(parent, command)
    if found is None:
        error_line(f"no command {command!r}: dicomweb-archive help lists them")
        raise typer.Exit(EXIT_USAGE)
    say(found.get_help(typer.Context(found, info_name=command, parent=parent)))
