"""docs/cli.md matches the commands' --help, and every command is documented."""

from __future__ import annotations

from dicomweb_archive.cli.main import SUBCOMMANDS, app
from tests.cli_docs import DOC, render


def test_cli_doc_is_current() -> None:
    """Regenerate with `python -m tests.cli_docs` when this fails."""
    assert DOC.read_text(encoding="utf-8") == render()


def test_every_command_is_documented() -> None:
    """Each subcommand the umbrella lists has a section, and none is registered on the typer
    application itself (it would be built at every start: register it in SUBCOMMANDS)."""
    text = DOC.read_text(encoding="utf-8")
    for name in SUBCOMMANDS:
        assert f"## `dicomweb-archive {name}`" in text
    assert not app.registered_commands
