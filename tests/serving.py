"""Our server in a thread on a free loopback port, and raw HTTP requests to it (for the tests of
``web/``)."""

from __future__ import annotations

import contextlib
import http.client as httplib
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dicomweb_archive import Archive
from dicomweb_archive.cli.serve_runner import HEADER_TIMEOUT, bind, make_server
from dicomweb_archive.web.app import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(
    store: str,
    *,
    prefix: str = "/dicomweb",
    base_url: str | None = None,
    cors_origins: Sequence[str] = (),
    header_timeout: float = HEADER_TIMEOUT,
) -> Iterator[str]:
    """Our server on a free loopback port, in a thread; yields the DICOMweb base URL."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    with Archive.open(store) as archive:
        app = create_app(archive, prefix=prefix, base_url=base_url, cors_origins=cors_origins)
        server = make_server(app, header_timeout=header_timeout)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}{prefix}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


class Http:
    """Raw HTTP/1.1 requests to the test server (paths sent exactly as written)."""

    def __init__(self, base_url: str) -> None:
        self.host, port = base_url.split("//")[1].split("/", maxsplit=1)[0].split(":")
        self.port = int(port)
        self.root = "/" + base_url.split("//")[1].partition("/")[2]

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        connection = httplib.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return Reply(
                response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
            )
        finally:
            connection.close()


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")
