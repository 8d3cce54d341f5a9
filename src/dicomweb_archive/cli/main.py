"""Console entry points: the umbrella ``dicomweb-archive`` and the seed's five commands."""

from __future__ import annotations

import sys

import typer

from dicomweb_archive.cli.anonymize import anonymize
from dicomweb_archive.cli.common import VersionOption, run_app
from dicomweb_archive.cli.delete import delete
from dicomweb_archive.cli.edit import edit
from dicomweb_archive.cli.export import part10, verify_command
from dicomweb_archive.cli.history import audit_command, history_command
from dicomweb_archive.cli.listing import list_instances, series, studies
from dicomweb_archive.cli.pipeline import COMMANDS, make_command
from dicomweb_archive.cli.revert import purge_command, restore_command, revert_command
from dicomweb_archive.cli.scp import scp
from dicomweb_archive.cli.seed_apps import CONTEXT, part10_app, pipeline_app, update_app
from dicomweb_archive.cli.serve import serve
from dicomweb_archive.cli.static_config import static_config
from dicomweb_archive.cli.store import reindex_command
from dicomweb_archive.cli.update import EDITING, normalise_argv, update
from dicomweb_archive.cli.usage import OneLineGroup, help_command

app = typer.Typer(
    name="dicomweb-archive",
    help="Build, index and manage a static DICOMweb store made from DICOM P10 files.",
    no_args_is_help=True,
    context_settings=CONTEXT,
    cls=OneLineGroup,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _umbrella(version: VersionOption = False) -> None:
    """Build, index and manage a static DICOMweb store made from DICOM P10 files."""


#: umbrella subcommand -> seed command
SUBCOMMANDS = {
    "create": "mkdicomweb",
    "instances": "mkdicomwebinstances",
    "deduplicated": "mkdicomwebdeduplicated",
    "group": "mkdicomwebdeduplicatedgroup",
    "study": "mkdicomwebstudy",
}
for _name, _seed in SUBCOMMANDS.items():
    app.command(_name, help=f"{COMMANDS[_seed]} (= {_seed})")(make_command(_seed))
app.command("export", help="Rebuild P10 files from the store (= mkdicomwebpart10).")(part10)
app.command("verify")(verify_command)
app.command("update", help="Edit, delete or de-identify (= mkdicomwebupdate).")(update)
app.command("edit")(edit)
app.command("delete")(delete)
app.command("anonymize")(anonymize)
app.command("history")(history_command)
app.command("revert")(revert_command)
app.command("restore")(restore_command)
app.command("purge")(purge_command)
app.command("audit")(audit_command)
app.command("serve")(serve)
app.command("scp")(scp)
app.command("static-config")(static_config)
app.command("studies")(studies)
app.command("series")(series)
app.command("list-instances")(list_instances)
app.command("reindex")(reindex_command)
app.command("help")(help_command)


SEED_APPS = {command: pipeline_app(command) for command in COMMANDS}
PART10_APP = part10_app()
UPDATE_APP = update_app()


def main() -> None:
    argv = sys.argv[1:]
    sys.argv[1:] = normalise_argv(argv, edits=bool(argv) and argv[0] in EDITING)
    run_app(app)


if __name__ == "__main__":
    main()
