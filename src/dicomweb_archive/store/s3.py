"""The storage protocol on S3-compatible object storage (``s3://bucket/prefix``), through obstore.

obstore (the Python binding of Apache Arrow's Rust ``object_store``) is the engine: one API for
S3 (and GCS, Azure), with the conditional puts the protocol needs. Each protocol operation is
one or a few S3 requests:

- ``put``: a PutObject (``Content-Type`` and ``Content-Encoding`` set, so that a bucket website
  or a CDN serves gzipped JSON and frames as they are); "only if absent" is
  ``If-None-Match: *``, "only if unchanged" is ``If-Match: <etag>``. A value given as chunks
  larger than :data:`PART_SIZE` is streamed as a multipart upload (never held whole), except
  for a conditional put, which S3 accepts only as one PutObject and which the store uses for
  small objects only (records, configuration, the journal);
- ``copy``: a server-side CopyObject (the content type and encoding are copied too);
- ``list_prefix`` / ``children``: ListObjectsV2 (in key order, as S3 lists), with a delimiter
  for ``children``;
- ``delete_prefix``: DeleteObjects in batches of 1000.

S3 is strongly consistent (read-after-write for every PutObject and DeleteObject since
December 2020), and a PutObject that returned is durable: :meth:`S3Storage.barrier` has
nothing to wait for. There is no rename: a change is committed by the journal
(``store/journal.py``), an instance by its info record written last.

**The lease** is an object, ``.dicomweb-archive/lease.json``, made "only if absent" and holding
its holder, a token and an expiry time. The holder renews it every third of
:data:`LEASE_SECONDS` with "only if unchanged"; a lease past its expiry is taken over with
"only if unchanged" on the expired object's etag (so two waiting writers cannot both take it);
so is a lease whose holder was a process of this machine that no longer runs (a killed command
is not waited out).
A holder that could not renew in time (a stalled process whose lease another writer took) is
*fenced*: its next put raises :class:`~dicomweb_archive.errors.StoreLockedError` instead of
writing, so an expired writer never writes under another's lease. Releasing deletes the lease
object when it is still the holder's: at once while it was renewed in time (more than a third
of its time left, so no other writer can have taken it), else after reading it again.

Location and credentials come from the standard AWS environment: ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``), ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``. Plain HTTP is allowed for a loopback
endpoint only (a test server such as moto's); anything else needs HTTPS.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

import obstore
import orjson
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from dicomweb_archive.errors import (
    NoSuchObjectError,
    ObjectExistsError,
    PreconditionFailedError,
    StorageUnavailableError,
    StoreConfigError,
    StoreError,
    StoreLockedError,
)
from dicomweb_archive.store.local import count_write
from dicomweb_archive.store.storage import (
    LEASE_WAIT_NOTICE_SECONDS,
    PRIVATE,
    Data,
    ObjectInfo,
    check_key,
    lease_wait_notice,
)

SCHEME = "s3://"
#: the lease object (see the module docstring)
LEASE = PRIVATE + "lease.json"
#: how long a lease lasts without renewal, in seconds (``DICOMWEB_ARCHIVE_LEASE_SECONDS``)
LEASE_SECONDS = 30.0
LEASE_SECONDS_ENV = "DICOMWEB_ARCHIVE_LEASE_SECONDS"
#: chunked values up to this size are one PutObject; larger ones a multipart upload of such parts
PART_SIZE = 8 * 1024 * 1024
#: parts of one multipart upload in flight at once (bounds memory to a few parts)
PART_CONCURRENCY = 2
#: seconds an endpoint that does not answer is waited for: to connect, for each read of an
#: answer (a paused or stalled endpoint), and for the retries of a failed request;
#: ``DICOMWEB_ARCHIVE_S3_TIMEOUT`` sets it (a request then fails in about that time)
TIMEOUT_SECONDS = 5.0
TIMEOUT_ENV = "DICOMWEB_ARCHIVE_S3_TIMEOUT"
#: the most one request may take as a whole (a large part over a slow link)
REQUEST_SECONDS = 300
#: transient failures (5xx, throttling, resets, timeouts) are retried with backoff at most so often
MAX_RETRIES = 5
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
_LIST_CHUNK = 1000


def parse_location(location: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (the prefix without slashes at its ends)."""
    if not location.startswith(SCHEME):
        raise StoreError(f"{location}: not an s3:// location")
    bucket, _, prefix = location[len(SCHEME) :].partition("/")
    prefix = prefix.strip("/")
    if not bucket:
        raise StoreError(f"{location}: no bucket named (s3://BUCKET/PREFIX)")
    if prefix:
        check_key(prefix)
    return bucket, prefix


def _client_settings() -> tuple[dict[str, Any], dict[str, Any]]:
    """obstore's S3 configuration and client options from the AWS environment variables."""
    env = os.environ
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    given = {
        "access_key_id": env.get("AWS_ACCESS_KEY_ID"),
        "secret_access_key": env.get("AWS_SECRET_ACCESS_KEY"),
        "session_token": env.get("AWS_SESSION_TOKEN"),
        "region": region,
    }
    config: dict[str, Any] = {name: value for name, value in given.items() if value}
    options: dict[str, Any] = {}
    if endpoint:
        config["endpoint"] = endpoint
        parts = urlsplit(endpoint)
        if parts.scheme == "http":
            if parts.hostname not in _LOOPBACK:
                raise StoreError(
                    f"AWS_ENDPOINT_URL {endpoint}: plain HTTP is allowed for a loopback endpoint "
                    "only; use https://"
                )
            options["allow_http"] = True
        config["virtual_hosted_style_request"] = False
    # "only if unchanged" puts as S3's If-Match on PutObject
    config["conditional_put"] = "etag"
    return config, options


class S3Storage:
    """A store's objects under ``prefix`` in an S3 bucket (see the module docstring)."""

    def __init__(self, location: str) -> None:
        self.bucket, self.prefix = parse_location(location)
        config, options = _client_settings()
        try:
            waited = timedelta(seconds=_timeout_seconds())
            self._store = S3Store(
                self.bucket,
                prefix=self.prefix or None,
                config=cast(Any, config),
                client_options=cast(
                    Any,
                    options
                    | {
                        "connect_timeout": waited,
                        "read_timeout": waited,
                        "timeout": timedelta(seconds=REQUEST_SECONDS),
                    },
                ),
                retry_config=cast(Any, {"max_retries": MAX_RETRIES, "retry_timeout": waited}),
            )
        except BaseError as exc:
            raise StoreError(f"{location}: cannot reach the bucket ({_why(exc)})") from exc
        self._lease_state: _Lease | None = None
        self._lease_mutex = threading.Lock()

    @property
    def location(self) -> str:
        return SCHEME + self.bucket + (f"/{self.prefix}" if self.prefix else "")

    # -- reading ---------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        check_key(key)
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except (NotFoundError, FileNotFoundError) as exc:
            raise NoSuchObjectError(f"{self.location}: {key} is missing") from exc
        except BaseError as exc:
            raise self._error("read", key, exc) from exc

    def open(self, key: str) -> BinaryIO:
        check_key(key)
        try:
            reader = obstore.open_reader(self._store, key, buffer_size=PART_SIZE)
        except (NotFoundError, FileNotFoundError) as exc:
            raise NoSuchObjectError(f"{self.location}: {key} is missing") from exc
        except BaseError as exc:
            raise self._error("read", key, exc) from exc
        return cast(BinaryIO, _Reader(reader))

    def head(self, key: str) -> ObjectInfo | None:
        check_key(key)
        try:
            meta = obstore.head(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return None
        except BaseError as exc:
            raise self._error("read", key, exc) from exc
        return ObjectInfo(key, int(meta["size"]), str(meta["e_tag"]))

    def headers(self, key: str) -> tuple[str | None, str | None]:
        """Content-Type and Content-Encoding the object is served with."""
        attributes = obstore.get(self._store, check_key(key)).attributes
        return attributes.get("Content-Type"), attributes.get("Content-Encoding")

    def list_prefix(self, prefix: str) -> Iterator[ObjectInfo]:
        # object_store lists by whole path segments: list the folder, keep what starts so
        folder = prefix if not prefix or prefix.endswith("/") else prefix.rpartition("/")[0]
        stream = obstore.list(self._store, folder or None, chunk_size=_LIST_CHUNK)
        try:
            for batch in stream:
                for meta in batch:
                    key = meta["path"]
                    if key.startswith(prefix):
                        yield ObjectInfo(key, int(meta["size"]), str(meta["e_tag"]))
        except (NotFoundError, FileNotFoundError):
            return
        except BaseError as exc:
            raise self._error("list", prefix or "/", exc) from exc

    def children(self, prefix: str) -> list[str]:
        try:
            found = obstore.list_with_delimiter(self._store, prefix.rstrip("/") or None)
        except (NotFoundError, FileNotFoundError):
            return []
        except BaseError as exc:
            raise self._error("list", prefix or "/", exc) from exc
        names = [p.rpartition("/")[2] + "/" for p in found["common_prefixes"]]
        names += [m["path"].rpartition("/")[2] for m in found["objects"]]
        return sorted(names)

    # -- writing ---------------------------------------------------------------------------
    def put(
        self,
        key: str,
        data: Data,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        fresh: bool = False,
    ) -> ObjectInfo:
        del fresh  # every PutObject is atomic
        check_key(key)
        self._check_fenced(key)
        attributes: dict[str, str] = {}
        if content_type:
            attributes["Content-Type"] = content_type
        if content_encoding:
            attributes["Content-Encoding"] = content_encoding
        mode: Any = "create" if if_absent else ({"e_tag": if_match} if if_match else None)
        body, size = _body(data, whole=mode is not None)
        try:
            result = obstore.put(
                self._store,
                key,
                body,
                attributes=cast(Any, attributes or None),
                mode=mode,
                use_multipart=size is None,
                chunk_size=PART_SIZE,
                max_concurrency=PART_CONCURRENCY,
            )
        except AlreadyExistsError as exc:
            raise ObjectExistsError(f"{self.location}: {key} exists") from exc
        except PreconditionError as exc:
            if if_absent:
                raise ObjectExistsError(f"{self.location}: {key} exists") from exc
            raise PreconditionFailedError(f"{self.location}: {key} changed meanwhile") from exc
        except BaseError as exc:
            raise self._error("write", key, exc) from exc
        if key != LEASE:
            count_write()  # the crash tests count the store's writes, as on a directory
        etag = result["e_tag"]
        if size is None or etag is None:
            info = self.head(key)
            if info is None:
                raise StoreError(f"{self.location}: {key} vanished right after it was written")
            return info
        return ObjectInfo(key, size, str(etag))

    def copy(self, source: str, target: str) -> None:
        check_key(source)
        check_key(target)
        self._check_fenced(target)
        try:
            obstore.copy(self._store, source, target)
        except (NotFoundError, FileNotFoundError) as exc:
            raise NoSuchObjectError(f"{self.location}: {source} is missing") from exc
        except BaseError as exc:
            raise self._error("copy", source, exc) from exc
        count_write()

    def delete(self, key: str) -> None:
        check_key(key)
        self._check_fenced(key)
        try:
            obstore.delete(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return
        except BaseError as exc:
            raise self._error("delete", key, exc) from exc
        count_write()

    def delete_prefix(self, prefix: str) -> None:
        self._check_fenced(prefix)
        keys = [info.key for info in self.list_prefix(prefix)]
        for start in range(0, len(keys), _LIST_CHUNK):
            try:
                obstore.delete(self._store, keys[start : start + _LIST_CHUNK])
            except BaseError as exc:
                raise self._error("delete", prefix, exc) from exc
            count_write()

    def barrier(self) -> None:
        """Nothing to wait for: a PutObject that returned is durable and visible."""

    # -- the lease -------------------------------------------------------------------------
    @contextmanager
    def lease(self, holder: str, *, wait: bool = True) -> Iterator[None]:
        seconds = float(os.environ.get(LEASE_SECONDS_ENV) or LEASE_SECONDS)
        state = self._acquire(holder, seconds, wait=wait)
        with self._lease_mutex:
            self._lease_state = state
        renewer = threading.Thread(target=self._renew, args=(state,), daemon=True)
        renewer.start()
        try:
            yield
        finally:
            state.stop.set()
            renewer.join()
            with self._lease_mutex:
                self._lease_state = None
            self._release(state)

    def lease_holder(self) -> str | None:
        """Who holds the lease; None when nobody does, or the holder is gone (expired, or a
        process of this machine that no longer runs: the next writer takes it over)."""
        current = self._read_lease()
        if current is None or _dead(current[0]):
            return None
        return str(current[0]["holder"])

    def _acquire(self, holder: str, seconds: float, *, wait: bool) -> _Lease:
        token = uuid.uuid4().hex
        delay = 0.02
        notice_at: float | None = time.monotonic() + LEASE_WAIT_NOTICE_SECONDS
        while True:
            expires = time.time() + seconds
            body = _lease_body(holder, token, expires)
            try:
                info = self.put(LEASE, body, if_absent=True)
                return _Lease(holder, token, seconds, info.etag, expires)
            except ObjectExistsError:
                pass
            current = self._read_lease()
            if current is not None and _dead(current[0]):
                try:
                    info = self.put(LEASE, body, if_match=current[1])
                    return _Lease(holder, token, seconds, info.etag, expires)
                except (PreconditionFailedError, ObjectExistsError):
                    pass  # another writer took it first
            elif current is not None and not wait:
                raise StoreLockedError(
                    f"{self.location}: another writer holds it ({current[0]['holder']})"
                )
            elif current is not None and notice_at is not None and time.monotonic() >= notice_at:
                lease_wait_notice(_waiting(self.location, current[0]))
                notice_at = None  # once
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _renew(self, state: _Lease) -> None:
        while not state.stop.wait(state.seconds / 3):
            expires = time.time() + state.seconds
            body = _lease_body(state.holder, state.token, expires)
            try:
                with self._lease_mutex:
                    info = self._put_lease(body, state.etag)
                state.etag = info.etag
                state.expires = expires
            except BaseError:
                state.lost = True  # taken over, or not renewed in time: fenced from now on
                return

    def _put_lease(self, body: bytes, etag: str) -> ObjectInfo:
        result = obstore.put(self._store, LEASE, body, mode={"e_tag": etag}, use_multipart=False)
        return ObjectInfo(LEASE, len(body), str(result["e_tag"]))

    def _release(self, state: _Lease) -> None:
        """Remove the lease. Where the storage does not answer, the lease is left to expire
        (``state.seconds`` after its last renewal; the next writer then takes it over): what
        was done under it is committed or completed by the next writer, and an error here
        would hide the command's own outcome."""
        try:
            if not state.lost and time.time() < state.expires - state.seconds / 3:
                # renewed in time, not yet expired: nobody can have taken it (no read needed)
                self._delete_lease()
                return
            current = self._read_lease()
            if current is not None and current[0].get("token") == state.token:
                self._delete_lease()
        except StorageUnavailableError:
            return

    def _delete_lease(self) -> None:
        try:
            obstore.delete(self._store, LEASE)
        except BaseError as exc:
            raise self._error("delete", LEASE, exc) from exc

    def _read_lease(self) -> tuple[dict[str, Any], str] | None:
        try:
            result = obstore.get(self._store, LEASE)
            etag = str(result.meta["e_tag"])
            return orjson.loads(bytes(result.bytes())), etag
        except (NotFoundError, FileNotFoundError):
            return None
        except BaseError as exc:
            raise self._error("read", "the lease", exc) from exc
        except orjson.JSONDecodeError as exc:
            raise StoreError(f"{self.location}: cannot read the lease ({_why(exc)})") from exc

    def _check_fenced(self, key: str) -> None:
        state = self._lease_state
        if state is not None and state.lost and key != LEASE:
            raise StoreLockedError(
                f"{self.location}: this writer's lease expired and another writer took it; "
                "nothing more is written (run the command again)"
            )

    def _error(self, what: str, key: str, exc: BaseException) -> StoreError:
        """A refusal names its reason; anything else is the storage not answering (or
        failing as a later attempt may not), in words without the client's requests and
        retries, which ``--verbose`` adds (``ArchiveError.detail``)."""
        if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
            return StoreError(f"{self.location}: cannot {what} {key} ({_why(exc)})")
        return StorageUnavailableError(
            f"{self.location}: the storage does not answer (cannot {what} {key})",
            detail=_why(exc),
        )


class _Reader(io.RawIOBase):
    """A file object over obstore's reader (ranged GETs of :data:`PART_SIZE`)."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = memoryview(self._reader.read(len(view)))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        return bytes(self._reader.read() if size is None or size < 0 else self._reader.read(size))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._reader.seek(offset, whence))

    def tell(self) -> int:
        return int(self._reader.tell())

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


class _Lease:
    """A held lease: its token, and the etag and expiry time of its object as last written."""

    def __init__(self, holder: str, token: str, seconds: float, etag: str, expires: float) -> None:
        self.holder = holder
        self.token = token
        self.seconds = seconds
        self.etag = etag
        self.expires = expires
        self.lost = False
        self.stop = threading.Event()


def _lease_body(holder: str, token: str, expires: float) -> bytes:
    return orjson.dumps(
        {
            "holder": holder,
            "token": token,
            "expires": expires,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
    )


def _waiting(location: str, lease: dict[str, Any]) -> str:
    """What a writer waiting for ``lease`` is told: who holds it, where, and until when."""
    host = f" on {lease['host']}" if lease.get("host") else ""
    left = max(0, round(float(lease["expires"]) - time.time()))
    return (
        f"{location}: waiting for the store's lease held by {lease.get('holder', 'a writer')}"
        f"{host} (it expires in {left} s unless renewed)"
    )


def _dead(lease: dict[str, Any]) -> bool:
    """Whether a lease can be taken over: expired, or held by a process of this machine that
    is gone (a killed command on this host need not be waited out)."""
    if lease["expires"] < time.time():
        return True
    if lease.get("host") != socket.gethostname() or not isinstance(lease.get("pid"), int):
        return False
    try:
        os.kill(lease["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _body(data: Data, *, whole: bool) -> tuple[bytes | Iterator[bytes], int | None]:
    """What to give obstore: the bytes and their size, or (for a large chunked value that
    need not be one PutObject) an iterator of the chunks and None."""
    if isinstance(data, bytes | memoryview):
        value = bytes(data)
        return value, len(value)
    chunks = iter(data)
    head = io.BytesIO()
    for chunk in chunks:
        head.write(chunk)
        if not whole and head.tell() > PART_SIZE:
            first = head.getvalue()
            return _chain(first, chunks), None
    value = head.getvalue()
    return value, len(value)


def _chain(first: bytes, rest: Iterable[bytes | memoryview]) -> Iterator[bytes]:
    yield first
    for chunk in rest:
        yield bytes(chunk)


def _timeout_seconds() -> float:
    """:data:`TIMEOUT_SECONDS`, or the number of seconds :data:`TIMEOUT_ENV` gives."""
    given = os.environ.get(TIMEOUT_ENV, "").strip()
    if not given:
        return TIMEOUT_SECONDS
    try:
        seconds = float(given)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 86400:
        raise StoreConfigError(f"{TIMEOUT_ENV}={given[:40]!r}: give a number of seconds, e.g. 5")
    return seconds


def _why(exc: BaseException) -> str:
    """The first line of an obstore error, without its class name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else "no reason given"
