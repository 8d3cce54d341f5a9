"""``dicomweb-archive static-config``: an nginx configuration serving the store as static
DICOMweb (``docs/serving.md``)."""

from __future__ import annotations

from typing import Annotated

import typer

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    StoreOption,
    VerboseOption,
    handle_errors,
    open_store,
)


def static_config(  # noqa: PLR0917 - typer passes every option positionally
    store: StoreOption = DEFAULT_STORE,
    host: Annotated[str, typer.Option("--host", help="Address nginx listens on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port nginx listens on.", min=1, max=65535)
    ] = 8080,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Path of the DICOMweb root (as serve's).")
    ] = "/dicomweb",
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            help="An origin (https://viewer.example) whose pages may read the store, or * for "
            "any; repeat for several (default: none).",
        ),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Print an nginx configuration that serves the store read-only as static DICOMweb.

    Run it with `nginx -c FILE -p DIR -g 'daemon off;'` (DIR: a writable folder for nginx's pid
    file, logs and temporary files). It answers unfiltered searches, metadata, single frames
    and bulk data from the store's files; the rest needs `dicomweb-archive serve`. It never
    stores: STOW-RS (POST) needs `dicomweb-archive serve --allow-write`.
    """
    from dicomweb_archive.ops.static_config import StaticOptions, write_static_config  # noqa: PLC0415

    options = StaticOptions(
        port=port, host=host, prefix=prefix, cors_origins=tuple(cors_origin or ())
    )
    with handle_errors(verbose=verbose), open_store(store) as archive:
        text = write_static_config(archive, options)
    typer.echo(text, nl=False)
