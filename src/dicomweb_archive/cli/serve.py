"""``dicomweb-archive serve``: the store over HTTP as DICOMweb (read-only)."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    StoreOption,
    VerboseOption,
    error_line,
    handle_errors,
    note,
    open_store,
)

#: docs/spec/exit-codes.md: the server could not start (the address is in use, say)
EXIT_CANNOT_START = 6


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
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            help="Origin whose web pages may read the answers (CORS), e.g. "
            "http://localhost:3000 for a viewer served there; repeatable; * for any. Default: "
            "none, on loopback too (any page a browser on this machine opens could read the "
            "store otherwise).",
        ),
    ] = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log each request on stderr: client, method, path (never the query string, "
            "which may hold patient names), status, bytes, seconds.",
        ),
    ] = True,
    verbose: VerboseOption = False,
) -> None:
    """Serve the store over DICOMweb: QIDO-RS from the index, WADO-RS from the files."""
    from dicomweb_archive.cli.serve_runner import bind, make_server  # noqa: PLC0415 - uvicorn
    from dicomweb_archive.web.app import create_app  # noqa: PLC0415 - starlette

    with handle_errors(verbose=verbose), open_store(store) as archive:
        try:
            sock = bind(host, port)
        except OSError as exc:
            error_line(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
            raise typer.Exit(EXIT_CANNOT_START) from None
        _log_to_stderr(access_log=access_log)
        note(f"serving {archive.location} at http://{host}:{port}{prefix}")
        app = create_app(
            archive,
            prefix=prefix,
            base_url=base_url,
            cors_origins=cors_origin or (),
            tracebacks=verbose,
        )
        with sock:
            make_server(app, tracebacks=verbose).run(sockets=[sock])


def _log_to_stderr(*, access_log: bool) -> None:
    """The server's log lines (errors, and the access log unless turned off) on stderr, each
    with its time."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    for name in ("dicomweb_archive.web", "uvicorn"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
    logging.getLogger("dicomweb_archive.web").setLevel(logging.INFO)
    logging.getLogger("dicomweb_archive.web.access").disabled = not access_log
