"""An S3 endpoint that stops answering (moto's server paused with SIGSTOP): ``serve`` answers
503 with Retry-After within ``DICOMWEB_ARCHIVE_S3_TIMEOUT`` seconds or so, instead of waiting
minutes for the request's overall limit, and answers again once the endpoint does; a setting
that is not a number of seconds is one worded line."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from dicomweb_archive import Archive, ingest
from dicomweb_archive.store.s3 import TIMEOUT_ENV
from tests.factory import uid, write_ct
from tests.s3server import BUCKET, s3_server_process
from tests.serving import Http, serving
from tests.stores import run_cli


def test_serve_answers_503_while_the_endpoint_is_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metadata asked while the endpoint is paused: 503 with Retry-After after about the
    configured second (the HTTP client gives up after 30 s); resumed: 200."""
    monkeypatch.setenv(TIMEOUT_ENV, "1")
    instance = write_ct(tmp_path / "a.dcm", study=uid(1), series=uid(2), sop=uid(3))
    with s3_server_process(tmp_path / "cache") as (_endpoint, process):
        location = f"s3://{BUCKET}/stalled"
        with Archive.open_or_create(location) as archive:
            assert ingest(archive, [instance]).ok
        with serving(location) as base:
            http = Http(base)
            path = f"{http.root}/studies/{uid(1)}/series/{uid(2)}/metadata"
            assert http.get(path).status_code == 200
            os.kill(process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                reply = http.get(path)
                waited = time.monotonic() - started
            finally:
                os.kill(process.pid, signal.SIGCONT)
            assert reply.status_code == 503, reply.content
            assert reply.content.startswith(b"the storage does not answer")
            assert int(reply.headers["retry-after"]) > 0
            assert waited < 20
            assert http.get(path).status_code == 200


def test_a_timeout_that_is_no_number_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``DICOMWEB_ARCHIVE_S3_TIMEOUT=soon``: one line naming the variable, usage exit code."""
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    result = run_cli("studies", "-o", f"s3://{BUCKET}/x")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and TIMEOUT_ENV in lines[0], result.stderr
