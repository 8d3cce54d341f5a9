"""The seed's commands as single-command applications, each built from its own module only
(``mkdicomwebupdate`` need not import the ingest or export commands to start)."""

from __future__ import annotations

import typer

from dicomweb_archive.cli.usage import OneLineCommand

CONTEXT = {"help_option_names": ["-h", "--help"]}


def single(name: str) -> typer.Typer:
    """An empty one-command application named ``name``."""
    return typer.Typer(
        name=name,
        context_settings=CONTEXT,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


def pipeline_app(command: str) -> typer.Typer:
    """``mkdicomweb`` and the four stage commands."""
    from dicomweb_archive.cli.pipeline import COMMANDS, make_command  # noqa: PLC0415

    application = single(command)
    application.command(help=COMMANDS[command], cls=OneLineCommand)(make_command(command))
    return application


def part10_app() -> typer.Typer:
    from dicomweb_archive.cli.export import part10  # noqa: PLC0415

    application = single("mkdicomwebpart10")
    application.command(cls=OneLineCommand)(part10)
    return application


def update_app() -> typer.Typer:
    from dicomweb_archive.cli.update import update  # noqa: PLC0415

    application = single("mkdicomwebupdate")
    application.command(cls=OneLineCommand)(update)
    return application
