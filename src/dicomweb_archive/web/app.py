"""``dicomweb-archive serve``: the store over DICOMweb (PS3.18); writes (STOW-RS) when allowed.

QIDO-RS searches are answered from the index (``web/qido.py``, ``web/includefield.py``); WADO-RS
metadata from the stored series ``metadata.gz`` objects (``web/metadata.py``); frames here, from
the frame objects; bulk data, Pixel Data and whole instances from the bulk-data, frame and info
record objects (``web/retrieve.py``); rendered images and thumbnails (``web/rendered.py``);
see ``docs/serving.md``. Every key is built from checked UIDs and hashes; every read goes
through the store's storage (which never reads a file through a link, ``store/local.py``), and
each answer is read from a state no change was being applied to. Given a ``writer``, STOW-RS
stores instances (``web/stow.py``) through a second archive object, so that readers never take
its lease for theirs; bearer tokens are checked by ``web/auth.py``. Errors become status codes
here (404, 406, 400, 500 with a sentence; 503 with Retry-After while the index does not
answer or the storage (S3) fails a request, RFC 9110 15.6.4; an unexpected error is one log
line, its traceback only with ``tracebacks``); the access log is ``web/access.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, BinaryIO

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import (
    ArchiveError,
    BadQueryError,
    IndexUnavailableError,
    NoSuchObjectError,
    OutsideStoreError,
    StorageUnavailableError,
)
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.pixel import PixelDescription
from dicomweb_archive.model.syntax import EXPLICIT_VR_LITTLE_ENDIAN
from dicomweb_archive.model.uid import is_safe_uid
from dicomweb_archive.ops.receive import Received, receive_instances
from dicomweb_archive.store.instance import InstanceKey, read_info
from dicomweb_archive.store.multipart import parse_part
from dicomweb_archive.web import qido, rendered, retrieve, stow
from dicomweb_archive.web.access import AccessLog
from dicomweb_archive.web.auth import TokenCheck
from dicomweb_archive.web.metadata import CACHE_SIZE, retrieve_metadata
from dicomweb_archive.web.negotiate import choose_frame_type, parse_accept
from dicomweb_archive.web.responses import (
    DICOM_JSON,
    LOG,
    NotFoundError,
    UnacceptableError,
    json_body,
)

# the frame routes below keep their names (another change edits them)
from dicomweb_archive.web.responses import frame_numbers as _frame_numbers
from dicomweb_archive.web.responses import multipart as _multipart

#: seconds a client is asked to wait (Retry-After) when the index or the storage does not
#: answer (RFC 9110 10.2.3)
RETRY_AFTER = 5


class Server:
    """The routes of one store."""

    def __init__(self, archive: Archive, *, base_url: str | None) -> None:
        self.archive = archive
        self.storage = archive.storage
        self.keys = archive.keys
        self.base_url = base_url.rstrip("/") if base_url else None
        self.cache: dict[Any, tuple[bytes, str]] = {}
        self.infos: dict[tuple[str, str], InfoRecord] = {}

    # -- helpers -----------------------------------------------------------------------
    def base(self, request: Request) -> str:
        """The absolute URL of the DICOMweb root, from configuration or from the request.

        A Host header without a port (dicomweb-client sends one) gets the port the server
        listens on; X-Forwarded-Proto and X-Forwarded-Prefix are honoured.
        """
        if self.base_url:
            return self.base_url
        scheme = request.headers.get("x-forwarded-proto", request.url.scheme)
        host = request.headers.get("host", "")
        server = request.scope.get("server") or ("127.0.0.1", 80)
        if not host:
            host = f"{server[0]}:{server[1]}"
        elif ":" not in host.rsplit("]", 1)[-1] and server[1] not in (80, 443):
            host = f"{host}:{server[1]}"
        prefix = request.headers.get("x-forwarded-prefix", "").rstrip("/")
        return f"{scheme}://{host}{prefix}{request.scope.get('root_path', '')}"

    def get(self, key: str) -> bytes:
        """An object of the store, or 404."""
        try:
            return self.storage.get(key)
        except (NoSuchObjectError, OutsideStoreError) as exc:
            raise NotFoundError(key) from exc

    def json(self, request: Request, value: Any) -> Response:
        return self.respond(request, *json_body(value))

    @staticmethod
    def respond(request: Request, body: bytes, etag: str) -> Response:
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type=DICOM_JSON, headers={"ETag": etag})

    @staticmethod
    def uid(value: str) -> str:
        if not is_safe_uid(value):
            raise NotFoundError(value)
        return value

    def instance_info(self, key: InstanceKey) -> InfoRecord:
        """An instance's info record (cached by etag)."""
        return self._info(key)

    # -- WADO-RS frames ----------------------------------------------------------------
    def frames(self, request: Request, key: InstanceKey, numbers: str | None) -> Response:
        cut = self._cut_frame(key, numbers)
        if cut is not None:  # PS3.18 8.7.4: 410, the frame is known but cannot be given
            return Response(
                f"frame {cut} is incomplete: the received file ends inside Pixel Data "
                "(the instance's export gives the file as received)\n",
                status_code=410,
                media_type="text/plain",
            )
        info, payloads = self.archive.read(lambda: self._frames(key, numbers))
        wanted_numbers = [number for number, _ in payloads]
        syntaxes = {n: info.frame_syntax(n) for n in wanted_numbers}
        if len(set(syntaxes.values())) == 1:  # the usual case: one stored transfer syntax
            stored_syntax = syntaxes[wanted_numbers[0]]
            stored_type = info.frame_media_type(wanted_numbers[0]).split(";")[0].strip()
        else:  # frames kept as received beside recompressed ones: offer them decoded
            stored_syntax, stored_type = EXPLICIT_VR_LITTLE_ENDIAN, "application/octet-stream"
        choice = choose_frame_type(
            parse_accept(request.headers.get("accept")), stored_type, stored_syntax
        )
        if choice is None:
            raise UnacceptableError(stored_type)
        media_type_, syntax = choice
        decode = any(s != syntax for s in syntaxes.values())
        # recompressed frames are decoded with what they were encoded from (an edit of the
        # metadata's Image Pixel Module does not change the frames)
        description = (info.stored.pixel or self._pixel(key)) if decode else None

        def parts() -> Iterator[bytes]:
            for number, data in payloads:
                if description is not None and syntaxes[number] != syntax:
                    from dicomweb_archive.dicom.codecs import decode_frame, native_bytes  # noqa: PLC0415

                    array, _ = decode_frame(bytes(data), syntaxes[number], description)
                    yield native_bytes(array, replace(description, planar_configuration=0))
                else:
                    yield bytes(data)

        etag = (
            '"'
            + hashlib.sha256(
                (syntax + ",".join(info.frames[n - 1].sha256 for n in wanted_numbers)).encode()
            ).hexdigest()[:32]
            + '"'
        )
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return _multipart(parts(), f"{media_type_}; transfer-syntax={syntax}", media_type_, etag)

    def _cut_frame(self, key: InstanceKey, numbers: str | None) -> int | None:
        """The first asked frame that the received file ends inside (``model/incomplete.py``;
        all frames asked: the whole ones are given, unless there are none)."""
        info = self.archive.read(lambda: self._info(key))
        cut = incomplete_frame(info.skeleton)
        if cut is None:
            return None
        try:
            asked = [int(n) for n in numbers.split(",")] if numbers is not None else [cut]
        except ValueError:
            return None  # _frame_numbers says why
        # a frame past Number of Frames never existed: 404 (_frame_numbers), not 410
        declared = _number_of_frames(info.metadata)
        late = [n for n in asked if cut <= n <= declared and (numbers is not None or cut == 1)]
        return min(late) if late else None

    def _frames(
        self, key: InstanceKey, numbers: str | None
    ) -> tuple[InfoRecord, list[tuple[int, memoryview]]]:
        """The info record and the wanted frames, read together (one state)."""
        info = self._info(key)
        wanted = _frame_numbers(numbers, len(info.frames))
        payloads = []
        for number in wanted:
            name = self.keys.frame(key.study, key.series, key.sop, number)
            payloads.append((number, parse_part(self.get(name), source=name)[1]))
        return info, payloads

    def _pixel(self, key: InstanceKey) -> PixelDescription:
        """The Image Pixel Module of the instance as received (frames stored as received; an
        edit never changes it)."""
        metadata = self._info(key).metadata
        if metadata is None:
            raise NotFoundError(key.sop)
        return PixelDescription.from_metadata(metadata)

    def _info(self, key: InstanceKey) -> InfoRecord:
        """An instance's info record, cached by etag (frames are asked one by one)."""
        name = self.keys.info(key.study, key.series, key.sop)
        head = self.storage.head(name)
        if head is None:
            raise NotFoundError(name)
        info = self.infos.get((name, head.etag))
        if info is None:
            info = read_info(self.storage, self.keys, key)
            if len(self.infos) >= CACHE_SIZE:
                self.infos.pop(next(iter(self.infos)))
            self.infos[(name, head.etag)] = info
        return info


def create_app(
    archive: Archive,
    *,
    prefix: str = "/dicomweb",
    base_url: str | None = None,
    cors_origins: Sequence[str] = (),
    tracebacks: bool = False,
    writer: Archive | None = None,
    tokens: Sequence[str] = (),
    token_for_reads: bool = False,
    max_upload: int = stow.DEFAULT_MAX_UPLOAD,
) -> Starlette:
    """The ASGI application serving ``archive`` under ``prefix``.

    ``cors_origins``: the origins whose pages may read the answers (CORS; ``*`` for any);
    none by default, so that a page from elsewhere cannot read the store through a browser
    that can reach the server. ``tracebacks``: log the traceback of an unexpected error.
    ``writer``: the same store opened again, for STOW-RS (None: read-only, POST is 405);
    ``tokens``: bearer tokens, one of which writes need (and with ``token_for_reads``, reads);
    ``max_upload``: the largest STOW-RS body taken, in bytes (413 beyond).
    """
    server = Server(archive, base_url=base_url)

    def wrap(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                # file and index reads block: keep them off the event loop
                response: Response = await run_in_threadpool(
                    handler, request, **request.path_params
                )
                return response
            except NotFoundError as exc:
                return _text(exc.answer or "not found", 404)
            except UnacceptableError as exc:
                asked = exc.asked or "Accept: " + request.headers.get("accept", "(none)")
                return _text(f"cannot answer {asked[:300]}; available: {exc}", 406)
            except BadQueryError as exc:
                return _text(str(exc), 400)
            except (IndexUnavailableError, StorageUnavailableError) as exc:  # RFC 9110 15.6.4
                LOG.error("%s %s: %s", request.method, request.url.path, exc)
                what = "index" if isinstance(exc, IndexUnavailableError) else "storage"
                return Response(
                    f"the {what} does not answer; try again in {RETRY_AFTER} s\n",
                    status_code=503,
                    media_type="text/plain",
                    headers={"Retry-After": str(RETRY_AFTER)},
                )
            except ArchiveError as exc:
                LOG.error("%s %s: %s", request.method, request.url.path, exc)
                return _text(str(exc), 500)
            except Exception as exc:
                return _unexpected(request, exc, tracebacks=tracebacks)

        return endpoint

    def instance_key(study: str, series: str, sop: str) -> InstanceKey:
        return InstanceKey(server.uid(study), server.uid(series), server.uid(sop))

    routes = [
        Route("/studies", wrap(lambda r: qido.search(server, r, "study"))),
        Route("/series", wrap(lambda r: qido.search(server, r, "series"))),
        Route("/instances", wrap(lambda r: qido.search(server, r, "instance"))),
        Route(
            "/studies/{study}",
            wrap(lambda r, study: retrieve.instances(server, r, study, None, None)),
        ),
        Route(
            "/studies/{study}/metadata",
            wrap(lambda r, study: retrieve_metadata(server, r, study, None, None)),
        ),
        Route(
            "/studies/{study}/series",
            wrap(lambda r, study: qido.search(server, r, "series", study=study)),
        ),
        Route(
            "/studies/{study}/instances",
            wrap(lambda r, study: qido.search(server, r, "instance", study=study)),
        ),
        Route(
            "/studies/{study}/bulkdata/{a}/{b}/{c}",
            wrap(lambda r, study, a, b, c: retrieve.bulk(server, r, study, a + b + c)),
        ),
        Route(
            "/studies/{study}/series/{series}",
            wrap(lambda r, study, series: retrieve.instances(server, r, study, series, None)),
        ),
        Route(
            "/studies/{study}/series/{series}/metadata",
            wrap(lambda r, study, series: retrieve_metadata(server, r, study, series, None)),
        ),
        Route(
            "/studies/{study}/series/{series}/instances",
            wrap(
                lambda r, study, series: qido.search(
                    server, r, "instance", study=study, series=series
                )
            ),
        ),
        Route(
            "/studies/{study}/series/{series}/instances/{sop}",
            wrap(lambda r, study, series, sop: retrieve.instances(server, r, study, series, sop)),
        ),
        Route(
            "/studies/{study}/series/{series}/instances/{sop}/metadata",
            wrap(lambda r, study, series, sop: retrieve_metadata(server, r, study, series, sop)),
        ),
        Route(
            "/studies/{study}/series/{series}/instances/{sop}/frames",
            wrap(
                lambda r, study, series, sop: retrieve.pixel_data(
                    server, r, instance_key(study, series, sop)
                )
            ),
        ),
        Route(
            "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
            wrap(
                lambda r, study, series, sop, frames: server.frames(
                    r, instance_key(study, series, sop), frames
                )
            ),
        ),
    ]
    routes += rendered.routes(server, wrap)  # PS3.18 8.3.5: rendered and thumbnail resources
    if writer is not None:
        turn = asyncio.Lock()

        def store(streams: list[tuple[str, BinaryIO]], study: str | None) -> list[Received]:
            return receive_instances(writer, streams, study=study)

        async def stow_rs(request: Request) -> Response:
            study = request.path_params.get("study")
            try:
                return await stow.store_instances(
                    request,
                    study,
                    store=store,
                    base=server.base(request),
                    max_upload=max_upload,
                    turn=turn,
                )
            except Exception as exc:
                return _unexpected(request, exc, tracebacks=tracebacks)

        routes += [
            Route(path, stow_rs, methods=["POST"]) for path in ("/studies", "/studies/{study}")
        ]
    middleware = [Middleware(AccessLog)]
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "HEAD", "OPTIONS", *(["POST"] if writer else [])],
                allow_headers=["*"],
                expose_headers=["ETag", "Content-Type", "Content-Length", "Warning"],
            )
        )
    if tokens:
        middleware.append(Middleware(TokenCheck, tokens=tokens, reads=token_for_reads))
    middleware.append(Middleware(GZipMiddleware, minimum_size=1024))
    return Starlette(routes=[Mount(prefix, routes=routes)], middleware=middleware)


def _unexpected(request: Request, exc: Exception, *, tracebacks: bool) -> Response:
    """An unexpected error: one log line (its traceback only with ``tracebacks``), 500."""
    LOG.error(
        "%s %s: unexpected error (%s)%s",
        request.method,
        request.url.path,
        type(exc).__name__,
        "" if tracebacks else "; run with --verbose for the traceback",
        exc_info=exc if tracebacks else None,
    )
    return _text("internal error: the server's log says more", 500)


def _number_of_frames(metadata: dict[str, Any] | None) -> int:
    """Number of Frames (0028,0008) of an instance's metadata; 1 when absent (PS3.3 C.7.6.6)."""
    values = (metadata or {}).get("00280008", {}).get("Value") or [1]
    try:
        return int(values[0])
    except (TypeError, ValueError):
        return 1


def _text(message: str, status: int) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain")
