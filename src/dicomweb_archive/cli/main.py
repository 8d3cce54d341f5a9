"""The umbrella command ``dicomweb-archive``, whose subcommands are built only when one runs.

typer builds a command by reading every option's annotations, and a command's module imports
what it runs: building all twenty subcommands took 0.1 s of ``dicomweb-archive --help``
(``docs/benchmarks.md``, start-up). So the umbrella lists its subcommands from the table
``SUBCOMMANDS`` (each one's summary, the first paragraph of its help) and imports and builds
one only when it runs, or its own help is asked. ``tests/test_startup.py`` checks each summary
against the command it names.

Registering a subcommand is one line in ``SUBCOMMANDS``:
``"NAME": Subcommand("dicomweb_archive.cli.MODULE:FUNCTION", "First paragraph of its help."),``
(``docs/cli.md`` then gets its section from ``python -m tests.cli_docs``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typer
from typer.core import TyperCommand

from dicomweb_archive.cli.argv import EDITING, normalise_argv
from dicomweb_archive.cli.common import VersionOption, run_app
from dicomweb_archive.cli.seed_apps import CONTEXT
from dicomweb_archive.cli.usage import OneLineGroup


@dataclass(frozen=True, slots=True)
class Subcommand:
    """A subcommand: ``target`` names its function as ``module:function``, ``summary`` is the
    first paragraph of its help (what the umbrella's ``--help`` lists), ``help`` replaces the
    function's docstring, ``argument`` is passed to ``target`` when it makes the function (the
    seed's stage commands)."""

    target: str
    summary: str
    help: str | None = None
    argument: str | None = None

    def function(self) -> Callable[..., Any]:
        """Import the command's module; its command function."""
        module, name = self.target.split(":")
        found: Callable[..., Any] = getattr(importlib.import_module(module), name)
        if self.argument is None:
            return found
        made: Callable[..., Any] = found(self.argument)
        return made

    def build(self, name: str) -> TyperCommand:
        """The command as typer makes it (the umbrella's markup and exception settings)."""
        application = typer.Typer(
            add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None
        )
        application.command(name, help=self.help)(self.function())
        command = typer.main.get_command(application)
        assert isinstance(command, TyperCommand)
        return command


def _seed(name: str, seed: str, summary: str) -> tuple[str, Subcommand]:
    """The umbrella's name for one of the seed's pipeline commands."""
    text = f"{summary} (= {seed})"
    return name, Subcommand("dicomweb_archive.cli.pipeline:make_command", text, text, seed)


SUBCOMMANDS: dict[str, Subcommand] = dict(
    [
        _seed(
            "create",
            "mkdicomweb",
            "Ingest DICOM P10 files: all three stages on the studies the input touches.",
        ),
        _seed(
            "instances",
            "mkdicomwebinstances",
            "Stage 1, instance level: frames, bulk data and instance metadata.",
        ),
        _seed(
            "deduplicated",
            "mkdicomwebdeduplicated",
            "Stage 1, deduplicated: frames, bulk data and per-instance deduplicated data; "
            "notifies the group stage.",
        ),
        _seed(
            "group",
            "mkdicomwebdeduplicatedgroup",
            "Stage 2: combine each study's per-instance deduplicated data into a group file; "
            "notifies the study stage.",
        ),
        _seed(
            "study",
            "mkdicomwebstudy",
            "Stage 3: write study and series query files, series and instance metadata and the "
            "index, from the deduplicated data.",
        ),
    ]
)
SUBCOMMANDS |= {
    "export": Subcommand(
        "dicomweb_archive.cli.export:part10",
        "Rebuild P10 files from the store (= mkdicomwebpart10).",
        "Rebuild P10 files from the store (= mkdicomwebpart10).",
    ),
    "verify": Subcommand(
        "dicomweb_archive.cli.export:verify_command",
        "Check the store: files, hashes, index, orphans, and byte-exact rebuild of every instance.",
    ),
    "update": Subcommand(
        "dicomweb_archive.cli.update:update",
        "Edit, delete or de-identify (= mkdicomwebupdate).",
        "Edit, delete or de-identify (= mkdicomwebupdate).",
    ),
    "edit": Subcommand(
        "dicomweb_archive.cli.edit:edit",
        "Edit metadata at patient, study, series or instance level (frames untouched).",
    ),
    "delete": Subcommand(
        "dicomweb_archive.cli.delete:delete",
        "Delete (or reject) instances: set aside, revertible with revert (restore for a "
        "rejection) until purged.",
    ),
    "anonymize": Subcommand(
        "dicomweb_archive.cli.anonymize:anonymize",
        "De-identify (PS3.15 E.1) a study, a patient, or every study, into a new store or in "
        "place.",
    ),
    "history": Subcommand(
        "dicomweb_archive.cli.history:history_command",
        "List an instance's revisions, each with the change that produced it.",
    ),
    "revert": Subcommand(
        "dicomweb_archive.cli.revert:revert_command",
        "Undo a change (every instance it touched gets its state before it), or with --to give "
        "one instance an earlier revision's metadata; either is a new change.",
    ),
    "restore": Subcommand(
        "dicomweb_archive.cli.revert:restore_command",
        "Bring back the instances a rejection (-delete --reject) set aside.",
    ),
    "purge": Subcommand(
        "dicomweb_archive.cli.revert:purge_command",
        "Delete for good what a change set aside (it can no longer be reverted); after a "
        "de-identification in place, also the original values its record kept.",
    ),
    "audit": Subcommand(
        "dicomweb_archive.cli.history:audit_command",
        "Print the audit log (every change, with before/after hashes) as JSON lines.",
    ),
    "serve": Subcommand(
        "dicomweb_archive.cli.serve:serve",
        "Serve the store over DICOMweb: QIDO-RS from the index, WADO-RS from the files, "
        "STOW-RS with --allow-write.",
    ),
    "scp": Subcommand(
        "dicomweb_archive.cli.scp:scp",
        "Receive, answer queries and send over DICOM networking: C-ECHO, C-STORE, C-FIND, "
        "C-MOVE and C-GET (see docs/serving.md).",
    ),
    "static-config": Subcommand(
        "dicomweb_archive.cli.static_config:static_config",
        "Print an nginx configuration that serves the store read-only as static DICOMweb.",
    ),
    "studies": Subcommand(
        "dicomweb_archive.cli.listing:studies", "List the studies in the store (from its index)."
    ),
    "series": Subcommand(
        "dicomweb_archive.cli.listing:series",
        "List the series of a study (from the store's index).",
    ),
    "list-instances": Subcommand(
        "dicomweb_archive.cli.listing:list_instances",
        "List the instances of a series (from the store's index).",
    ),
    "reindex": Subcommand(
        "dicomweb_archive.cli.store:reindex_command",
        "Rebuild the SQLite index from the store's files alone.",
    ),
    "help": Subcommand(
        "dicomweb_archive.cli.usage:help_command",
        "Print the help of dicomweb-archive, or of one of its commands.",
    ),
}


class LazyGroup(OneLineGroup):
    """The umbrella's group: lists ``SUBCOMMANDS`` from their summaries, builds one when it is
    looked up (to run it, or for its help). ``ctx`` is click's Context, ``formatter`` its
    HelpFormatter (typer exports neither type)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in SUBCOMMANDS:
            self.add_command(SUBCOMMANDS[cmd_name].build(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The list of subcommands, as click writes it, from the summaries (nothing built)."""
        limit = formatter.width - 6 - max(map(len, SUBCOMMANDS))
        rows = [
            (name, TyperCommand(name, help=sub.summary).get_short_help_str(limit))
            for name, sub in SUBCOMMANDS.items()
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    name="dicomweb-archive",
    help="Build, index and manage a static DICOMweb store made from DICOM P10 files.",
    no_args_is_help=True,
    context_settings=CONTEXT,
    cls=LazyGroup,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _umbrella(version: VersionOption = False) -> None:
    """Build, index and manage a static DICOMweb store made from DICOM P10 files."""


def __getattr__(name: str) -> Any:
    """The seed commands' applications, built on first use (``SEED_APPS``, ``PART10_APP``,
    ``UPDATE_APP``: for tests and ``tests/cli_docs.py``)."""
    from dicomweb_archive.cli import seed_apps  # noqa: PLC0415 - built only when asked

    if name == "SEED_APPS":
        from dicomweb_archive.cli.pipeline import COMMANDS  # noqa: PLC0415

        return {command: seed_apps.pipeline_app(command) for command in COMMANDS}
    if name == "PART10_APP":
        return seed_apps.part10_app()
    if name == "UPDATE_APP":
        return seed_apps.update_app()
    raise AttributeError(name)


def main() -> None:
    argv = sys.argv[1:]
    sys.argv[1:] = normalise_argv(argv, edits=bool(argv) and argv[0] in EDITING)
    run_app(app)


if __name__ == "__main__":
    main()
