"""The seed's option list, shared by its five commands (``docs/cli.md``).

Every command accepts every option, as the seed's commands did; each option says which stage
it acts on. Recompression options are accepted and checked now; recompression itself arrives
in a later release, and until then frames are stored as received and a warning says so when
one of these options is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

RECOMPRESS_TYPES = ("uncompressed", "jp2", "jpeglossless", "rle")
CONTENT_TYPES = ("jls", "htj2k", "jpeg", "none")
RECOMPRESS_NOTE = (
    " Recompression is not available in this version: the option is checked, and frames are"
    " stored as received (a warning says so)."
)

Inputs = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="INPUT",
        help="P10 files and directories (searched recursively); for the group and study "
        "stages, StudyInstanceUIDs (default: the studies named in notifications). "
        "'help' prints this help.",
        show_default=False,
    ),
]
Clean = Annotated[
    bool,
    typer.Option(
        "-c", "--clean", help="Remove the outputs of the studies the input touches first."
    ),
]
RemoveDeduplicatedInstances = Annotated[
    bool,
    typer.Option(
        "-C",
        "--remove-deduplicated-instances",
        help="Remove the per-instance deduplicated files after writing group files.",
    ),
]
Deduplicate = Annotated[
    bool,
    typer.Option(
        "-d",
        "--deduplicate",
        help="Write the deduplicated per-instance data (always on for mkdicomweb and "
        "mkdicomwebdeduplicated).",
    ),
]
Group = Annotated[
    bool,
    typer.Option(
        "--group/--no-group", "-g", help="mkdicomweb: write the combined (group) deduplicated data."
    ),
]
Instances = Annotated[
    bool,
    typer.Option(
        "-i",
        "--instances",
        help="Write instance metadata (metadata.gz, info.json.gz) while reading the files "
        "(always on for mkdicomwebinstances).",
    ),
]
MaxPublic = Annotated[
    int,
    typer.Option(
        "-m",
        "--maximum-inline-public-length",
        min=0,
        help="Public binary values longer than this many bytes go to bulk data.",
    ),
]
MaxPrivate = Annotated[
    int,
    typer.Option(
        "-M",
        "--maximum-inline-private-length",
        min=0,
        help="Private binary values longer than this many bytes go to bulk data.",
    ),
]
NoRecompress = Annotated[
    bool, typer.Option("--no-recompress", help="Force no recompression." + RECOMPRESS_NOTE)
]
Store = Annotated[Path, typer.Option("-o", "--dir", help="The store's root directory.")]
PathDeduplicated = Annotated[
    str,
    typer.Option("--path-deduplicated", help="The group files' directory, relative to the store."),
]
PathInstances = Annotated[
    str,
    typer.Option(
        "--path-instances",
        help="The per-instance deduplicated files' directory, relative to the store.",
    ),
]
Recompress = Annotated[
    list[str] | None,
    typer.Option(
        "-r",
        "--recompress",
        help="Source types to recompress, comma-separated or repeated: "
        + ", ".join(RECOMPRESS_TYPES)
        + " [default: uncompressed,jp2]."
        + RECOMPRESS_NOTE,
        show_default=False,
    ),
]
Study = Annotated[
    bool,
    typer.Option(
        "--study/--no-study",
        "-s",
        help="mkdicomweb: write the study's query files, series metadata and index rows.",
    ),
]
ContentType = Annotated[
    str | None,
    typer.Option(
        "-t",
        "--content-type",
        help="Target for grayscale frames: " + ", ".join(CONTENT_TYPES) + " or a transfer "
        "syntax UID." + RECOMPRESS_NOTE,
    ),
]
ColourContentType = Annotated[
    str | None,
    typer.Option(
        "-T",
        "--colour-content-type",
        help="Target for colour frames: " + ", ".join(CONTENT_TYPES) + " or a transfer "
        "syntax UID." + RECOMPRESS_NOTE,
    ),
]
Replace = Annotated[
    bool,
    typer.Option(
        "--replace",
        help="Replace a stored instance when a different file has the same SOP Instance UID.",
    ),
]
