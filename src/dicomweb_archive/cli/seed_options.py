"""The seed's option list, shared by its five commands (``docs/cli.md``).

Every command accepts every option, as the seed's commands did; each option says which stage
it acts on. The recompression options (``-r``, ``--no-recompress``, ``-t``, ``-T``) act on stage 1
(``docs/spec/recompression.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dicomweb_archive.dicom.recompression import (
    DEFAULT_TYPES,
    LOSSLESS_TARGETS,
    SOURCE_TYPES,
    TARGET_LABELS,
    TARGET_NAMES,
)
from dicomweb_archive.model.syntax import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_BASELINE,
    RLE_LOSSLESS,
)

#: the transfer syntaxes export transcodes to (``ops/transcode.py`` ``TARGETS``, which imports
#: the codecs: ``tests/test_cli_operators.py`` checks the two agree)
TRANSCODE_TARGETS = frozenset(LOSSLESS_TARGETS | {IMPLICIT_VR_LITTLE_ENDIAN, RLE_LOSSLESS})
LABELS = TARGET_LABELS | {
    IMPLICIT_VR_LITTLE_ENDIAN: "Implicit VR Little Endian",
    RLE_LOSSLESS: "RLE lossless",
}


def syntaxes(uids: frozenset[str] | set[str]) -> str:
    """``1.2.840.10008.1.2.1 (Explicit VR Little Endian), ...``: transfer syntaxes for a help
    text, from the tables the code uses (native first, then by UID)."""
    ordered = sorted(
        uids,
        key=lambda uid: (uid != EXPLICIT_VR_LITTLE_ENDIAN, [int(part) for part in uid.split(".")]),
    )
    return ", ".join(f"{uid} ({LABELS[uid]})" for uid in ordered)


def _names(*, colour: bool) -> str:
    """The names -t (grey) or -T (colour) accepts, with what each is."""
    names = []
    for name, uid in TARGET_NAMES.items():
        if uid == JPEG_BASELINE and not colour:
            continue
        what = "keep frames as received" if uid is None else LABELS[uid]
        names.append(f"{name} ({what}{', the default' if name == 'jls' else ''})")
    return ", ".join(names)


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
        "-c",
        "--clean",
        help="Set aside the studies the input touches first (a 'clean' change, revertible), so "
        "that they are rebuilt from this input alone.",
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
        help="Also write each instance's deduplicated record (always on for "
        "mkdicomwebdeduplicated); the group stage does not need them.",
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
        help="Also write each instance's own metadata.gz, kept current by every change (always "
        "on for mkdicomwebinstances); the series metadata holds it anyway, and without it an "
        "edit writes a few files per series instead of one per instance.",
    ),
]
MaxPublic = Annotated[
    int | None,
    typer.Option(
        "-m",
        "--maximum-inline-public-length",
        min=0,
        help="Public binary values longer than this many bytes go to bulk data (recorded "
        "when the store is created; default 131074).",
        show_default=False,
    ),
]
MaxPrivate = Annotated[
    int | None,
    typer.Option(
        "-M",
        "--maximum-inline-private-length",
        min=0,
        help="Private binary values longer than this many bytes go to bulk data (recorded "
        "when the store is created; default 64).",
        show_default=False,
    ),
]
NoRecompress = Annotated[
    bool,
    typer.Option(
        "--no-recompress",
        help="Force no recompression: every frame is stored as received (overrides -r/-t/-T).",
    ),
]
KeepOriginals = Annotated[
    bool,
    typer.Option(
        "--keep-originals",
        help="Also keep the received codestreams of compressed originals whose frames are "
        "recompressed (as bulk data), so that export gives them back byte for byte; without "
        "it they come back pixel for pixel.",
    ),
]
Store = Annotated[
    Path,
    typer.Option(
        "-o",
        "--dir",
        help="The store: a directory, s3://BUCKET/PREFIX, or memory://NAME (in this process).",
    ),
]
PathDeduplicated = Annotated[
    str | None,
    typer.Option(
        "--path-deduplicated",
        help="The group files' folder, relative to the store (recorded when the store is "
        "created; default deduplicated).",
        show_default=False,
    ),
]
IndexUrl = Annotated[
    str | None,
    typer.Option(
        "--index-url",
        help="The store's index: postgresql://USER@HOST:PORT/DB?schema=NAME for an index that "
        "several processes or machines share (recorded when the store is created, without "
        "a password: give it in PGPASSWORD or ~/.pgpass; default an SQLite file of the "
        "store, or of this machine for an s3:// store).",
        show_default=False,
    ),
]
PathInstances = Annotated[
    str | None,
    typer.Option(
        "--path-instances",
        help="The per-instance deduplicated files' folder, relative to the store (recorded "
        "when the store is created; default instances).",
        show_default=False,
    ),
]
Recompress = Annotated[
    list[str] | None,
    typer.Option(
        "-r",
        "--recompress",
        help="Received types to recompress, comma-separated or repeated: "
        + ", ".join(SOURCE_TYPES)
        + " (default: the store's, recorded when it is created: "
        + " ".join(DEFAULT_TYPES)
        + "). Lossless, "
        "checked per frame; a frame that cannot be recompressed exactly is kept as received "
        "(-v says why).",
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
        help=f"Target for grayscale frames: {_names(colour=False)}, or a transfer syntax UID: "
        f"{syntaxes(LOSSLESS_TARGETS)}.",
    ),
]
ColourContentType = Annotated[
    str | None,
    typer.Option(
        "-T",
        "--colour-content-type",
        help=f"Target for colour frames: {_names(colour=True)}, or a transfer syntax UID: "
        f"{syntaxes(LOSSLESS_TARGETS | {JPEG_BASELINE})}. With lossy JPEG the original frame "
        "is kept as bulk data for export.",
    ),
]
Replace = Annotated[
    bool,
    typer.Option(
        "--replace",
        help="Replace a stored instance when a different file has the same SOP Instance UID.",
    ),
]
FollowDicomdir = Annotated[
    bool,
    typer.Option(
        "--follow-dicomdir",
        help="A DICOMDIR input stands for the files it references (Referenced File ID, "
        "relative to its folder; a reference that leaves the folder is refused), ingested as "
        "if given one by one. Without it a DICOMDIR input fails, naming itself.",
    ),
]
Thumbnails = Annotated[
    bool,
    typer.Option(
        "--thumbnails",
        help="mkdicomweb, mkdicomwebstudy: after the study stage, write the thumbnails the "
        "built studies lack (JPEG, 128 x 128: thumbnail.jpg in each study, series and "
        "instance folder), which a static server then serves (docs/serving.md).",
    ),
]
Scheduler = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        metavar="ADDRESS",
        help="Stage 1: write new instances on the workers of the Dask scheduler at ADDRESS "
        "(e.g. tcp://host:8786; needs dicomweb-archive[dask]). This command keeps the "
        "store's lease, reads each file's header and commits every instance; the workers "
        "read the files again, at the same paths (they must see the input files there, and "
        "the store: the same directory, or the bucket with the same AWS environment), and "
        "write frames and bulk data. Replacements and -c runs are written here.",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        metavar="N",
        help="Stage 1: as --scheduler, on a local Dask cluster of N worker processes "
        "(one thread each) that this command starts.",
    ),
]
