"""``dicomweb-archive serve``: the store over HTTP as DICOMweb (read-only unless
``--allow-write``: STOW-RS), with bearer tokens and TLS."""

from __future__ import annotations

import ipaddress
import logging
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    EXIT_USAGE,
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
    allow_write: Annotated[
        bool,
        typer.Option(
            "--allow-write",
            help="Take instances over STOW-RS (POST /studies). Without it the server only "
            "reads (POST answers 405). Off loopback, --token-file is needed too.",
        ),
    ] = False,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="File of bearer tokens, one a line (# starts a comment): writes need "
            "'Authorization: Bearer TOKEN' with one of them (401 otherwise). Tokens are never "
            "logged.",
        ),
    ] = None,
    token_for_reads: Annotated[
        bool,
        typer.Option(
            "--token-for-reads",
            help="Reads need a token of --token-file too (by default anyone who can reach "
            "the server reads).",
        ),
    ] = False,
    max_upload: Annotated[
        str,
        typer.Option(
            "--max-upload",
            help="Largest STOW-RS request body: bytes, or with K, M, G, T (powers of 1024); "
            "413 beyond.",
        ),
    ] = "4G",
    ssl_certfile: Annotated[
        Path | None,
        typer.Option("--ssl-certfile", help="TLS certificate chain (PEM): serve HTTPS."),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None,
        typer.Option("--ssl-keyfile", help="TLS private key (PEM) of --ssl-certfile."),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Serve the store over DICOMweb: QIDO-RS from the index, WADO-RS from the files, STOW-RS
    with --allow-write."""
    from dicomweb_archive.archive import Archive  # noqa: PLC0415
    from dicomweb_archive.cli.serve_runner import (  # noqa: PLC0415 - uvicorn
        bind,
        check_tls,
        make_server,
    )
    from dicomweb_archive.web.app import create_app  # noqa: PLC0415 - starlette

    limit = _size(max_upload)
    tokens = _tokens(token_file) if token_file is not None else []
    _check_access(host, allow_write=allow_write, tokens=tokens, token_for_reads=token_for_reads)
    if (ssl_certfile is None) != (ssl_keyfile is None):
        _usage("--ssl-certfile and --ssl-keyfile go together")
    if ssl_certfile is not None and ssl_keyfile is not None:
        try:
            check_tls(ssl_certfile, ssl_keyfile)
        except OSError as exc:  # ssl.SSLError too
            error_line(f"cannot use {ssl_certfile} and {ssl_keyfile} for TLS: {exc}")
            raise typer.Exit(EXIT_CANNOT_START) from None
    with handle_errors(verbose=verbose), open_store(store) as archive:
        writer = Archive.open(archive.location) if allow_write else None
        try:
            sock = bind(host, port)
        except OSError as exc:
            error_line(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
            raise typer.Exit(EXIT_CANNOT_START) from None
        _log_to_stderr(access_log=access_log)
        scheme = "https" if ssl_certfile else "http"
        mode = "reads and writes (STOW-RS)" if writer else "read-only"
        note(f"serving {archive.location} at {scheme}://{host}:{port}{prefix}, {mode}")
        app = create_app(
            archive,
            prefix=prefix,
            base_url=base_url,
            cors_origins=cors_origin or (),
            tracebacks=verbose,
            writer=writer,
            tokens=tokens,
            token_for_reads=token_for_reads,
            max_upload=limit,
        )
        server = make_server(
            app, tracebacks=verbose, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile
        )
        try:
            with sock:
                server.run(sockets=[sock])
        finally:
            if writer is not None:
                writer.close()


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(value: str) -> int:
    """``--max-upload``: bytes, or a number with K, M, G or T."""
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "")
    if not number.isdigit() or int(number) == 0:
        _usage(f"--max-upload {value!r} is not a size (e.g. 500M, 4G, 1048576)")
    return int(number) * _UNITS[unit]


def _tokens(path: Path) -> list[str]:
    """The tokens of ``--token-file`` (``web/auth.py`` says its form)."""
    from dicomweb_archive.web.auth import parse_tokens  # noqa: PLC0415 - starlette

    try:
        tokens = parse_tokens(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        _usage(f"cannot read --token-file {path}: {getattr(exc, 'strerror', None) or exc}")
    if not tokens:
        _usage(f"--token-file {path} holds no token")
    return tokens


def _check_access(
    host: str, *, allow_write: bool, tokens: list[str], token_for_reads: bool
) -> None:
    """Writes open to anyone are only for a loopback address; --token-for-reads needs tokens."""
    if token_for_reads and not tokens:
        _usage("--token-for-reads needs --token-file")
    if allow_write and not tokens and not _loopback(host):
        _usage(f"--allow-write on {host} needs --token-file (anyone reaching it could write)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _usage(message: str) -> NoReturn:
    error_line(message)
    raise typer.Exit(EXIT_USAGE)


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
