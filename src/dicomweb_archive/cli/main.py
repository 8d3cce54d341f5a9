"""Console entry points: the umbrella ``dicomweb-archive`` and the seed's ``mkdicomweb``."""

from __future__ import annotations

import typer

from dicomweb_archive.cli.common import VersionOption, run_app
from dicomweb_archive.cli.ingest import create
from dicomweb_archive.cli.store import reindex_command, studies

CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="dicomweb-archive",
    help="Build, index and manage a static DICOMweb store made from DICOM P10 files.",
    no_args_is_help=True,
    context_settings=CONTEXT,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _umbrella(version: VersionOption = False) -> None:
    """Build, index and manage a static DICOMweb store made from DICOM P10 files."""


app.command("create")(create)
app.command("studies")(studies)
app.command("reindex")(reindex_command)

mkdicomweb_app = typer.Typer(
    name="mkdicomweb",
    context_settings=CONTEXT,
    add_completion=False,
    pretty_exceptions_enable=False,
)
mkdicomweb_app.command()(create)


def main() -> None:
    run_app(app)


def mkdicomweb() -> None:
    run_app(mkdicomweb_app)
