"""Console entry points (``[project.scripts]``): each command's typer application, built only
when it is needed.

``--version`` alone is answered before anything is imported (typer and the command modules take
about 0.15 s, ``docs/benchmarks.md``); a seed command builds its own application only
(``cli/seed_apps.py``), the umbrella command that of ``cli/main.py``; ``--version`` among other
options prints the same line.

numpy's OpenBLAS starts a thread per core when numpy is imported (about 50 ms of CPU, a sixth of
``verify``'s start on a small store); nothing here calls BLAS (pixels are only decoded, copied and
compared), so every command starts it with one thread unless ``OPENBLAS_NUM_THREADS`` is set.

A command builds many small objects that live until it ends (the metadata of a 1000-instance
series: 73,000 dicts and lists holding 200,000 strings and numbers), and Python's cyclic
garbage collector, run after every 700 net allocations, scans them again and again, though
they hold no garbage cycles; planning a 1000-instance rename spent half its CPU there.
Commands run it after every :data:`GC_THRESHOLDS` allocations instead: cycles are still
collected, a little later.
"""

from __future__ import annotations

import gc
import os
import sys

from dicomweb_archive import __version__

VERSION_FLAGS = (["--version"], ["-V"])
#: the collector's thresholds for a command (Python's are 700, 10, 10; see the module docstring)
GC_THRESHOLDS = (50_000, 20, 20)


def _run(name: str) -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see the module docstring
    gc.set_threshold(*GC_THRESHOLDS)
    if sys.argv[1:] in VERSION_FLAGS:
        sys.stdout.write(f"dicomweb-archive {__version__}\n")
        return
    # see the module docstring: each command imports only what it runs
    from dicomweb_archive.cli import seed_apps  # noqa: PLC0415
    from dicomweb_archive.cli.common import run_app  # noqa: PLC0415

    if name == "main":
        from dicomweb_archive.cli import main  # noqa: PLC0415

        main.main()
    elif name == "mkdicomwebupdate":
        from dicomweb_archive.cli.argv import normalise_argv  # noqa: PLC0415

        sys.argv[1:] = normalise_argv(sys.argv[1:], edits=True)
        run_app(seed_apps.update_app())
    elif name == "mkdicomwebpart10":
        run_app(seed_apps.part10_app())
    else:
        run_app(seed_apps.pipeline_app(name))


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
