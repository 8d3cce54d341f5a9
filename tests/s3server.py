"""A real S3 endpoint for tests: moto's server mode (``python -m moto.server``) on 127.0.0.1, in
its own process (it answers while the test process works, as a real endpoint would).

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
def s3_server(cache: Path) -> Iterator[str]:
    """Start the server, make :data:`BUCKET`, set the environment; yield the endpoint URL."""
    with s3_server_process(cache) as (endpoint, _process):
        yield endpoint


@contextmanager
def s3_server_process(cache: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`s3_server`, yielding its process too (a test pauses it)."""
    import boto3

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
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
