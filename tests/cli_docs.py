"""Render docs/cli.md from the commands' --help; ``python -m tests.cli_docs`` rewrites it."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from dicomweb_archive.cli.main import PART10_APP, SEED_APPS, SUBCOMMANDS, UPDATE_APP, app

DOC = Path(__file__).parent.parent / "docs" / "cli.md"
ENV = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}

#: (command line shown, application, arguments)
COMMANDS: list[tuple[str, typer.Typer, list[str]]] = [
    ("dicomweb-archive", app, ["--help"]),
    *((f"dicomweb-archive {name}", app, [name, "--help"]) for name in SUBCOMMANDS),
    ("dicomweb-archive export", app, ["export", "--help"]),
    ("dicomweb-archive verify", app, ["verify", "--help"]),
    ("dicomweb-archive update", app, ["update", "--help"]),
    ("dicomweb-archive edit", app, ["edit", "--help"]),
    ("dicomweb-archive delete", app, ["delete", "--help"]),
    ("dicomweb-archive anonymize", app, ["anonymize", "--help"]),
    ("dicomweb-archive history", app, ["history", "--help"]),
    ("dicomweb-archive revert", app, ["revert", "--help"]),
    ("dicomweb-archive restore", app, ["restore", "--help"]),
    ("dicomweb-archive purge", app, ["purge", "--help"]),
    ("dicomweb-archive audit", app, ["audit", "--help"]),
    ("dicomweb-archive serve", app, ["serve", "--help"]),
    ("dicomweb-archive scp", app, ["scp", "--help"]),
    ("dicomweb-archive static-config", app, ["static-config", "--help"]),
    ("dicomweb-archive studies", app, ["studies", "--help"]),
    ("dicomweb-archive series", app, ["series", "--help"]),
    ("dicomweb-archive list-instances", app, ["list-instances", "--help"]),
    ("dicomweb-archive reindex", app, ["reindex", "--help"]),
    ("dicomweb-archive help", app, ["help", "--help"]),
    *((name, seed, ["--help"]) for name, seed in SEED_APPS.items()),
    ("mkdicomwebpart10", PART10_APP, ["--help"]),
    ("mkdicomwebupdate", UPDATE_APP, ["--help"]),
]

HEADER = """# Command-line reference

Generated from each command's `--help` by `python -m tests.cli_docs`; `tests/test_cli_docs.py`
fails when this file and the commands disagree. Exit codes are in
[spec/exit-codes.md](spec/exit-codes.md); what the stages do in
[spec/pipeline.md](spec/pipeline.md).

The seed's commands (`mkdicomweb`, `mkdicomwebinstances`, `mkdicomwebdeduplicated`,
`mkdicomwebdeduplicatedgroup`, `mkdicomwebstudy`) all take the seed's whole option list, as the
original tool did; each option's help says which stage it acts on. `commandName help`,
`-h` and `--help` print the help. Each is also a `dicomweb-archive` subcommand (`create`,
`instances`, `deduplicated`, `group`, `study`). They create the store when there is none and
record its layout settings ([spec/store-layout.md](spec/store-layout.md)); every other command
needs an existing store. `mkdicomwebupdate` (`dicomweb-archive update`) has every mode of the
seed's command; `edit`, `delete` and `anonymize` are those modes as commands of their own.
"""


def render() -> str:
    runner = CliRunner()
    parts = [HEADER]
    for title, application, args in COMMANDS:
        result = runner.invoke(application, args, env=ENV, prog_name=title.split()[0])
        text = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
        parts.append(f"\n## `{title}`\n\n```text\n{text}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    DOC.write_text(render(), encoding="utf-8")
