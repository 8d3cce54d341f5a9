"""docs/cli.md matches the commands' --help, and every command is documented."""

from __future__ import annotations

from dicomweb_archive.cli.main import app
from tests.cli_docs import COMMANDS, DOC, render


def test_cli_doc_is_current() -> None:
    """Regenerate with `python -m tests.cli_docs` when this fails."""
    assert DOC.read_text(encoding="utf-8") == render()


def test_every_command_is_documented() -> None:
    """Each registered subcommand has a section."""
    documented = {title.split()[-1] for title, _, _ in COMMANDS}
    for command in app.registered_commands:
        assert command.name in documented
