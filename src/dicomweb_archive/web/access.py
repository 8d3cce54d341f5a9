"""The access log of ``serve`` (logger ``dicomweb_archive.web.access``): one line per request
with the client address, method, path, status, bytes sent and seconds taken. The query string
is left out: QIDO-RS queries hold patient names and IDs."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS = logging.getLogger("dicomweb_archive.web.access")


class AccessLog:
    """ASGI middleware writing the access log (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, size = 0, 0

        async def sending(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = (scope.get("client") or ("-", 0))[0]
            ACCESS.info(
                "%s %s %s %d %d %.3f",
                client,
                scope["method"],
                scope["path"],
                status,
                size,
                time.perf_counter() - started,
            )
