"""A real S3 endpoint for tests: moto's server mode on 127.0.0.1, in its own process (it answers
while the test process works, as a real endpoint would).

The process serves moto's S3 application alone (``python tests/s3server.py PORT``), in
werkzeug's threaded server as ``python -m moto.server`` does, without the dispatcher in front
that serves every AWS service: that one looks up the service of each request by listing moto's
package folder and matching hundreds of URL patterns, which doubled the time of an S3 request
(3.4 ms instead of 7.3 ms per HEAD, GET or PUT on the loaded 2-core test machine).

The AWS environment variables point at it (as a user's would at their object storage), so every
command and library call reaches it through ``store/s3.py`` exactly as it would reach AWS, and
so do the commands tests start in other processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUCKET = "dicomweb-tests"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def s3_server(cache: Path, *, log: Path | None = None) -> Iterator[str]:
    """Start the server, make :data:`BUCKET`, set the environment; yield the endpoint URL.
    ``log``: a file for the server's request log (a line per request, which
    ``bench/s3_requests.py`` counts)."""
    with s3_server_process(cache, log=log) as (endpoint, _process):
        yield endpoint


@contextmanager
def s3_server_process(
    cache: Path, *, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`s3_server`, yielding its process too (a test pauses it)."""
    import boto3

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_file = log.open("ab") if log is not None else None
    server = subprocess.Popen(
        [sys.executable, __file__, str(port), "log" if log is not None else "quiet"],
        stdout=subprocess.DEVNULL,
        stderr=log_file if log_file is not None else subprocess.DEVNULL,
    )
    settings = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "DICOMWEB_ARCHIVE_CACHE": str(cache),
    }
    saved = {name: os.environ.get(name) for name in settings}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        os.environ.update(settings)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.terminate()
        server.wait(timeout=10)
        if log_file is not None:
            log_file.close()


def _serve(port: int, *, log: bool) -> None:
    """Serve moto's S3 application on 127.0.0.1:``port`` (see the module docstring); with
    ``log``, a line per request on standard error."""
    import logging

    from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    if not log:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    run_simple(
        "127.0.0.1",
        port,
        create_backend_app("s3"),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    _serve(int(sys.argv[1]), log=sys.argv[2] == "log")
