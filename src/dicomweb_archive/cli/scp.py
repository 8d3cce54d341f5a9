"""``dicomweb-archive scp``: the store as a DICOM storage and Query/Retrieve SCP (DIMSE)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

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
from dicomweb_archive.cli.serve import EXIT_CANNOT_START
from dicomweb_archive.errors import UsageError


def scp(  # noqa: PLR0917 - typer passes every option positionally
    store: StoreOption = DEFAULT_STORE,
    aet: Annotated[
        str, typer.Option("--aet", help="The archive's AE title (Called AE Title).")
    ] = "DICOMWEB",
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "0.0.0.0",  # noqa: S104 - modalities call from the network
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on (0: any free one).", min=0, max=65535)
    ] = 11112,
    allow_aet: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-aet",
            help="Calling AE title accepted (repeatable); associations from others are "
            "rejected. Default: any.",
        ),
    ] = None,
    peer: Annotated[
        list[str] | None,
        typer.Option(
            "--peer",
            help="A C-MOVE destination, AET=HOST:PORT (repeatable).",
        ),
    ] = None,
    peers_file: Annotated[
        Path | None,
        typer.Option(
            "--peers-file",
            help="C-MOVE destinations, one AET=HOST:PORT a line (# starts a comment).",
            dir_okay=False,
        ),
    ] = None,
    max_pdu: Annotated[
        int,
        typer.Option("--max-pdu", help="Largest PDU received, in bytes (0: no limit).", min=0),
    ] = 131072,
    max_associations: Annotated[
        int,
        typer.Option("--max-associations", help="Associations at once, at most.", min=1),
    ] = 10,
    acse_timeout: Annotated[
        float,
        typer.Option("--acse-timeout", help="Seconds to wait for association messages.", min=1),
    ] = 30.0,
    dimse_timeout: Annotated[
        float,
        typer.Option(
            "--dimse-timeout",
            help="Seconds to wait for DIMSE messages (and for associations to end at stop).",
            min=1,
        ),
    ] = 30.0,
    network_timeout: Annotated[
        float,
        typer.Option("--network-timeout", help="Seconds an idle association is kept open.", min=1),
    ] = 60.0,
    tls_certfile: Annotated[
        Path | None,
        typer.Option(
            "--tls-certfile",
            help="TLS certificate chain (PEM): accept DICOM TLS connections only.",
            dir_okay=False,
        ),
    ] = None,
    tls_keyfile: Annotated[
        Path | None,
        typer.Option(
            "--tls-keyfile", help="TLS private key (PEM) of --tls-certfile.", dir_okay=False
        ),
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-ca",
            help="CA certificates (PEM): accept only clients with a certificate they issued.",
            dir_okay=False,
        ),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Receive, answer queries and send over DICOM networking: C-ECHO, C-STORE, C-FIND,
    C-MOVE and C-GET (see docs/serving.md)."""
    from dicomweb_archive.dimse.server import DicomServer  # noqa: PLC0415 - pynetdicom
    from dicomweb_archive.dimse.settings import (  # noqa: PLC0415
        ScpSettings,
        check_ae_title,
        parse_peer,
        parse_peers,
        tls_context,
    )

    with handle_errors(verbose=verbose):
        peers = {}
        if peers_file is not None:
            try:
                lines = peers_file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"--peers-file {peers_file}: cannot be read ({exc})") from exc
            peers = parse_peers(lines, source=f"--peers-file {peers_file}")
        for text in peer or []:
            one = parse_peer(text)
            peers[one.ae_title] = one
        settings = ScpSettings(
            ae_title=check_ae_title(aet, "--aet"),
            host=host,
            port=port,
            allowed_calling=tuple(check_ae_title(a, "--allow-aet") for a in allow_aet or []),
            max_pdu=max_pdu,
            max_associations=max_associations,
            acse_timeout=acse_timeout,
            dimse_timeout=dimse_timeout,
            network_timeout=network_timeout,
            peers=peers,
            tls_certfile=tls_certfile,
            tls_keyfile=tls_keyfile,
            tls_ca=tls_ca,
        )
        try:
            tls = tls_context(settings) is not None
        except OSError as exc:  # ssl.SSLError too
            files = ", ".join(str(p) for p in (tls_certfile, tls_keyfile, tls_ca) if p)
            error_line(f"cannot use {files} for TLS: {exc}")
            raise typer.Exit(EXIT_CANNOT_START) from None
        with open_store(store) as archive:
            _log_to_stderr(verbose=verbose)
            server = DicomServer(archive, settings, tracebacks=verbose)
            with _stop_signals() as stop:
                try:
                    _, listening = server.start()
                except OSError as exc:
                    error_line(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
                    raise typer.Exit(EXIT_CANNOT_START) from None
                over = " over TLS" if tls else ""
                note(
                    f"serving {archive.location} as {settings.ae_title} on {host}:{listening}{over}"
                )
                while not stop.wait(1.0):
                    pass
            note("stopping: letting running associations end")
            server.stop()
            note("stopped")


@contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C (SIGINT) or SIGTERM (``systemctl stop``) within the block."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _log_to_stderr(*, verbose: bool) -> None:
    """The server's log lines on stderr, each with its time; pynetdicom's own (warnings and
    its tracebacks) only with ``--verbose``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    ours = logging.getLogger("dicomweb_archive.dimse")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    if verbose:
        library = logging.getLogger("pynetdicom")
        library.addHandler(handler)
        library.setLevel(logging.WARNING)
        library.propagate = False
