"""A store on S3-compatible object storage (``store/s3.py``), against a real S3 endpoint: moto's
server on 127.0.0.1 (issue 16). The storage protocol's own tests run on S3 too
(``tests/test_storage.py``); the whole suite runs on S3 with ``--storage s3``."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import obstore
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

from dicomweb_archive import Archive, ingest
from dicomweb_archive import archive as archive_module
from dicomweb_archive.errors import ObjectExistsError, StoreError, StoreLockedError
from dicomweb_archive.store.s3 import LEASE, LEASE_SECONDS_ENV, S3Storage, parse_location
from tests.s3server import BUCKET
from tests.serving import serving
from tests.stores import run_cli

FILES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb_jpeg_gdcm.dcm", "rtstruct.dcm"]


def _files() -> list[Path]:
    return [Path(str(get_testdata_file(name))) for name in FILES]


def _location() -> str:
    return f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3(s3_endpoint: str) -> str:
    """The endpoint URL of the session's S3 server."""
    return s3_endpoint


def test_locations_are_checked(s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """s3://BUCKET/PREFIX is parsed; a location without a bucket, and plain HTTP to an endpoint
    that is not loopback, are refused in words before any request."""
    assert parse_location("s3://b/a/b/") == ("b", "a/b")
    with pytest.raises(StoreError, match="no bucket"):
        parse_location("s3:///x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3.example.org")
    with pytest.raises(StoreError, match="loopback endpoint only"):
        S3Storage("s3://b/p")


def test_cli_ingest_export_verify_on_s3(s3: str, tmp_path: Path) -> None:
    """The commands take an s3:// store: ingest, list, export byte-identical P10 files, verify
    clean; JSON and frames carry the content type and encoding a bucket serves them with."""
    where = _location()
    made = run_cli("create", "-o", where, *map(str, _files()))
    assert made.returncode == 0, made.stderr
    listed = run_cli("studies", "-o", where, "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == len(FILES)
    out = tmp_path / "out"
    exported = run_cli("export", "-o", where, "--all", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    originals = {hashlib.sha256(f.read_bytes()).hexdigest() for f in _files()}
    written = {hashlib.sha256(f.read_bytes()).hexdigest() for f in out.rglob("*") if f.is_file()}
    assert written == originals
    checked = run_cli("verify", "-o", where)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    storage = S3Storage(where)
    assert storage.headers("studies/index.json.gz") == ("application/dicom+json", "gzip")
    frame = next(i.key for i in storage.list_prefix("studies/") if i.key.endswith(".mht"))
    content_type, encoding = storage.headers(frame)
    assert content_type is not None and content_type.startswith("multipart/related; type=")
    assert "boundary=" in content_type and encoding is None


def test_bucket_serves_the_dicomweb_subset_directly(s3: str) -> None:
    """With a public-read bucket policy, the study list, a series' metadata and a frame come
    straight from the S3 endpoint over HTTP (no server of ours in between), as a viewer would
    fetch them through a bucket website or a CDN: right content type and encoding."""
    where = _location()
    with Archive.open_or_create(where) as archive:
        report = ingest(archive, [str(get_testdata_file("CT_small.dcm"))])
        assert report.ok
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{BUCKET}/*",
            }
        ],
    }
    client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    base = f"{s3}/{BUCKET}/{parse_location(where)[1]}"
    original = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    study, series = original.StudyInstanceUID, original.SeriesInstanceUID

    def fetch(key: str) -> tuple[bytes, str, str | None]:
        with urllib.request.urlopen(f"{base}/{key}") as reply:  # urllib never un-gzips
            return reply.read(), reply.headers["Content-Type"], reply.headers["Content-Encoding"]

    body, kind, encoding = fetch("studies/index.json.gz")
    assert (kind, encoding) == ("application/dicom+json", "gzip")
    studies = json.loads(gzip.decompress(body))
    assert [s["0020000D"]["Value"][0] for s in studies] == [study]
    body, kind, encoding = fetch(f"studies/{study}/series/{series}/metadata.gz")
    assert (kind, encoding) == ("application/dicom+json", "gzip")
    metadata = json.loads(gzip.decompress(body))
    assert metadata[0]["00080018"]["Value"][0] == original.SOPInstanceUID
    instance = original.SOPInstanceUID
    frame = f"studies/{study}/series/{series}/instances/{instance}/frames/1.mht"
    body, kind, encoding = fetch(frame)
    assert kind.startswith("multipart/related; type=") and encoding is None
    boundary = kind.split("boundary=")[1].strip('"')
    assert body.startswith(b"--" + boundary.encode()) and len(body) > 1000


def test_serve_reads_an_s3_store(s3: str) -> None:
    """`serve` on an S3 store answers dicomweb-client: search, metadata, the whole instance
    byte-identical to the original file."""
    where = _location()
    path = Path(str(get_testdata_file("CT_small.dcm")))
    with Archive.open_or_create(where) as archive:
        assert ingest(archive, [str(path)]).ok
    original = pydicom.dcmread(path)
    with serving(where) as url:
        client = DICOMwebClient(url)
        assert len(client.search_for_studies()) == 1
        meta = client.retrieve_series_metadata(
            original.StudyInstanceUID, original.SeriesInstanceUID
        )
        assert meta[0]["00100010"]["Value"][0] == {"Alphabetic": str(original.PatientName)}
        frames = client.retrieve_instance_frames(
            original.StudyInstanceUID,
            original.SeriesInstanceUID,
            original.SOPInstanceUID,
            [1],
            media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
        )
        assert frames[0] == original.PixelData


def test_an_expired_lease_is_taken_over_and_its_holder_fenced(
    s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that stalls past its lease loses it: another writer takes the expired lease,
    and the stalled writer's next put is refused instead of writing under the other's lease."""
    monkeypatch.setenv(LEASE_SECONDS_ENV, "0.6")
    where = _location()
    first, second = S3Storage(where), S3Storage(where)
    with first.lease("first"):
        assert second.lease_holder() == "first"
        with pytest.raises(StoreLockedError, match="first"), second.lease("second", wait=False):
            pass
        # another writer overwrites the lease as if first had stalled past its expiry
        expired = json.dumps({"holder": "second", "token": "x", "expires": time.time() + 60})
        second._store.put(LEASE, expired.encode())  # simulate the takeover
        deadline = time.monotonic() + 10
        while not (first._lease_state and first._lease_state.lost):
            assert time.monotonic() < deadline, "the holder never noticed it lost the lease"
            time.sleep(0.05)
        with pytest.raises(StoreLockedError, match="expired"):
            first.put("studies/x", b"late")
    assert first.head("studies/x") is None
    assert second.lease_holder() == "second"  # first's release left the other's lease alone


def test_a_stale_lease_does_not_block_forever(s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lease left by a killed writer is taken over once it has expired."""
    monkeypatch.setenv(LEASE_SECONDS_ENV, "0.6")
    where = _location()
    storage = S3Storage(where)
    dead = json.dumps({"holder": "killed (pid 1)", "token": "t", "expires": time.time() + 0.3})
    storage.put(LEASE, dead.encode())
    assert storage.lease_holder() == "killed (pid 1)"
    started = time.monotonic()
    with storage.lease("next"):
        assert storage.lease_holder() == "next"
    assert time.monotonic() - started < 5
    assert storage.lease_holder() is None


def test_conditional_put_of_chunks_is_one_object(s3: str) -> None:
    """A conditional put given as chunks is one PutObject (S3 refuses conditions on multipart
    uploads); a large unconditional one streams as a multipart upload and reads back whole."""
    storage = S3Storage(_location())
    storage.put("a/new", [b"x" * 10, b"y"], if_absent=True)
    with pytest.raises(ObjectExistsError):
        storage.put("a/new", [b"z"], if_absent=True)
    big = [bytes([i]) * (1024 * 1024) for i in range(12)]
    info = storage.put("a/big", iter(big))
    assert info.size == 12 * 1024 * 1024
    with storage.open("a/big") as handle:
        handle.seek(5 * 1024 * 1024)
        assert handle.read(3) == b"\x05\x05\x05"
    assert storage.get("a/big") == b"".join(big)


def test_a_missing_bucket_is_one_line(s3: str) -> None:
    """A store in a bucket that does not exist: one worded line, no class name, exit code 2."""
    result = run_cli("studies", "-o", "s3://no-such-bucket-here/x")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "no-such-bucket-here" in lines[0] and "Error" not in lines[0].split(":")[0]


def test_an_unreachable_endpoint_is_one_line(s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens at the endpoint: one worded line naming the store, within seconds."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    started = time.monotonic()
    result = run_cli("studies", "-o", "s3://bucket/x")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "s3://bucket/x" in lines[0], result.stderr
    assert time.monotonic() - started < 60


def test_a_machine_whose_cache_is_behind_rebuilds_it(s3: str, tmp_path: Path) -> None:
    """Two machines (two index caches) write one S3 store: each command first notices that
    the store changed since its cache was current and rebuilds it, so no study goes missing
    from listings or from the study list viewers read (found by a tester: a stale machine
    rewrote studies/index.json.gz without the other's study)."""
    where = _location()
    files = _files()
    machine_a = {**os.environ, "DICOMWEB_ARCHIVE_CACHE": str(tmp_path / "a")}
    machine_b = {**os.environ, "DICOMWEB_ARCHIVE_CACHE": str(tmp_path / "b")}

    def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "dicomweb_archive.cli.main", *args]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        return done

    run(machine_a, "create", "-o", where, str(files[0]))
    run(machine_b, "create", "-o", where, str(files[1]))
    assert len(json.loads(run(machine_a, "studies", "-o", where, "--json").stdout)) == 2
    run(machine_a, "create", "-o", where, str(files[2]))
    studies = json.loads(gzip.decompress(S3Storage(where).get("studies/index.json.gz")))
    assert len(studies) == 3
    assert run(machine_b, "verify", "-o", where).returncode == 0


def test_a_lease_released_in_time_is_deleted_without_reading_it(
    s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Releasing a lease that was renewed in time is one request (the delete): nobody can have
    taken it, so it is not read again first (a lease taken over is left alone: the test
    above)."""
    storage = S3Storage(_location())
    reads: list[str] = []
    real_get = obstore.get

    def counting_get(store: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(key)
        return real_get(store, key, *args, **kwargs)

    monkeypatch.setattr(obstore, "get", counting_get)
    with storage.lease("a"):
        pass
    assert reads == []
    assert storage.lease_holder() is None


def test_open_or_create_reads_the_configuration_once(
    s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening an existing store with ``open_or_create`` (every ingest command) reads its
    configuration once, not to see whether it exists and again to open it."""
    where = _location()
    Archive.create(where).close()
    reads: list[str] = []
    real_read = archive_module._read_config

    def counting(storage: object) -> object:
        reads.append("config")
        return real_read(storage)  # type: ignore[arg-type]

    monkeypatch.setattr(archive_module, "_read_config", counting)
    Archive.open_or_create(where).close()
    assert reads == ["config"]
