"""The seed's command lines as typer reads them: single-dash long options (``-patient``) as
double-dash ones, and removals (``-TAG``) after ``--``. Kept apart from the commands so that the
umbrella command rewrites its arguments without importing any of them (start-up,
``docs/benchmarks.md``)."""

from __future__ import annotations

import re

SINGLE_DASH = {f"-{name}": f"--{name}" for name in ("patient", "study", "series", "instance")}
SINGLE_DASH["-delete"] = "--delete"
SINGLE_DASH["-anonymize"] = "--anonymize"
#: the ``dicomweb-archive`` subcommands that take edits
EDITING = ("update", "edit")


#: ``-TAG`` (remove an attribute): a keyword or nested path, ``(gggg,eeee)`` or ``ggggeeee``
REMOVAL = re.compile(
    r"-(?:[0-9A-Fa-f]{8}|\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)|[A-Z][A-Za-z0-9]+(?:\[\d+\])?"
    r"(?:\.[A-Za-z0-9(),\[\]]+)*)"
)


def normalise_argv(argv: list[str], *, edits: bool = True) -> list[str]:
    """The seed's single-dash long options as typer's double-dash ones; with ``edits`` (the
    command takes edits), removals (``-TAG``, which look like options to the parser) go after
    ``--``, in their order."""
    if not edits:
        return [SINGLE_DASH.get(arg, arg) for arg in argv]
    normal, removals = [], []
    after_dashes = False
    for arg in argv:
        if after_dashes or arg == "--":
            after_dashes = True
            if arg != "--":
                removals.append(arg)
        elif REMOVAL.fullmatch(arg) and arg not in SINGLE_DASH:
            removals.append(arg)
        else:
            normal.append(SINGLE_DASH.get(arg, arg))
    return [*normal, "--", *removals] if removals else normal
