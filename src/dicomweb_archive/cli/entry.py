"""Console entry points (``[project.scripts]``): each command's typer application, built only
when it is needed.

``--version`` alone is answered before anything is imported (typer and the command modules take
about 0.15 s, ``docs/benchmarks.md``); every other invocation runs the application of
``cli/main.py``, where ``--version`` among other options prints the same line.
"""

from __future__ import annotations

import sys

from dicomweb_archive import __version__

VERSION_FLAGS = (["--version"], ["-V"])


def _run(name: str) -> None:
    if sys.argv[1:] in VERSION_FLAGS:
        sys.stdout.write(f"dicomweb-archive {__version__}\n")
        return
    from dicomweb_archive.cli import main  # noqa: PLC0415 - see the module docstring

    getattr(main, name)()


def dicomweb_archive() -> None:
    _run("main")


def mkdicomweb() -> None:
    _run("mkdicomweb")


def mkdicomwebinstances() -> None:
    _run("mkdicomwebinstances")


def mkdicomwebdeduplicated() -> None:
    _run("mkdicomwebdeduplicated")


def mkdicomwebdeduplicatedgroup() -> None:
    _run("mkdicomwebdeduplicatedgroup")


def mkdicomwebstudy() -> None:
    _run("mkdicomwebstudy")


def mkdicomwebpart10() -> None:
    _run("mkdicomwebpart10")


def mkdicomwebupdate() -> None:
    _run("mkdicomwebupdate")
