"""Running the DICOMweb app of ``web/`` for ``serve``: a socket bound first, uvicorn with
bounded waits and without its own access log, and no tracebacks in the log unless asked for.

- :func:`bind` listens before uvicorn starts, so that an address in use is one worded error
  (``cli/serve.py`` exits with the "cannot start" code of ``docs/spec/exit-codes.md``).
- Waits: a request's headers must arrive within :data:`HEADER_TIMEOUT` seconds of the
  connection (or of the previous response on a kept-alive connection), else the connection is
  closed (uvicorn has no such timeout of its own); an idle kept-alive connection is closed after
  :data:`KEEP_ALIVE` seconds; headers are at most h11's 16 KiB.
- uvicorn's access log, which has the query string, is off (``web/access.py`` writes one
  without it).
- Tracebacks: a response cut short after it began (a store file that cannot be read midway) is
  one line in the log; other tracebacks of uvicorn's are cut to their message unless
  ``tracebacks`` is given (``--verbose``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from dicomweb_archive.web.responses import ResponseCutShortError

HEADER_TIMEOUT = 10.0
KEEP_ALIVE = 5


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers do not arrive in
    time (see the module docstring)."""

    header_timeout = HEADER_TIMEOUT
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class _NoTracebacks(logging.Filter):
    """uvicorn's error log without tracebacks (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            exc = record.exc_info[1]
            if isinstance(exc, ResponseCutShortError):
                return False  # logged already, as one line
            record.msg = f"{record.getMessage()}: {exc} (run with --verbose for the traceback)"
            record.args = ()
            record.exc_info = None
        return True


def quiet_tracebacks(*, tracebacks: bool) -> None:
    """Install (or with ``tracebacks``, leave out) the filter on uvicorn's error log."""
    logger = logging.getLogger("uvicorn.error")
    for existing in [f for f in logger.filters if isinstance(f, _NoTracebacks)]:
        logger.removeFilter(existing)
    if not tracebacks:
        logger.addFilter(_NoTracebacks())


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port``; OSError when it cannot (in use, not allowed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def check_tls(certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str]) -> None:
    """Load the TLS certificate and key as uvicorn will: OSError (ssl.SSLError among them)
    when they cannot serve, before the server starts."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)


def make_server(
    app: Any,
    *,
    header_timeout: float = HEADER_TIMEOUT,
    tracebacks: bool = False,
    ssl_certfile: str | os.PathLike[str] | None = None,
    ssl_keyfile: str | os.PathLike[str] | None = None,
) -> uvicorn.Server:
    """A uvicorn server for ``app`` with the waits and logs of the module docstring (run it
    with ``server.run(sockets=[bind(host, port)])``); HTTPS with ``ssl_certfile`` and
    ``ssl_keyfile`` (uvicorn's TLS: a PEM certificate chain and its key)."""
    quiet_tracebacks(tracebacks=tracebacks)
    protocol = type("Protocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout})
    config = uvicorn.Config(
        app,
        http=protocol,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE,
        log_config=None,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    return uvicorn.Server(config)
