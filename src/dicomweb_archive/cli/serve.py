"""``dicomweb-archive serve``: the store over HTTP as DICOMweb (read-only)."""

from __future__ import annotations

from typing import Annotated

import typer

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    StoreOption,
    VerboseOption,
    handle_errors,
    note,
    open_store,
)


def serve(  # noqa: PLR0917 - typer passes every option positionally
    store: StoreOption = DEFAULT_STORE,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", min=1)] = 8080,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Path of the DICOMweb root.")
    ] = "/dicomweb",
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="Public URL of the DICOMweb root, for RetrieveURL and BulkDataURI (default: "
            "from each request).",
        ),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Serve the store over DICOMweb: QIDO-RS from the index, WADO-RS from the files."""
    import uvicorn  # noqa: PLC0415 - the server's libraries: for this command only

    from dicomweb_archive.web.app import create_app  # noqa: PLC0415

    with handle_errors(verbose=verbose), open_store(store) as archive:
        note(f"serving {archive.location} at http://{host}:{port}{prefix}")
        app = create_app(archive, prefix=prefix, base_url=base_url)
        uvicorn.run(app, host=host, port=port, log_level="warning")
