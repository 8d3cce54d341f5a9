"""``dicomweb-archive serve``: the store over DICOMweb (PS3.18), read-only.

QIDO-RS searches are answered from the index; WADO-RS metadata from the stored series
``metadata.gz`` objects (an instance's from its own ``metadata.gz`` where it has one, else from
its series'), with absolute BulkDataURIs; frames, bulk data and whole instances from the frame,
bulk-data and info record objects (``docs/serving.md``). Every key is built from checked UIDs
and hashes; every read goes through the store's storage (which never follows a link out of a
store on disk), and each answer is read from a state no change was being applied to.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import ArchiveError, BadQueryError, NoSuchObjectError
from dicomweb_archive.index.queries import keyword_of, qido_condition
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.pixel import PixelDescription
from dicomweb_archive.model.syntax import EXPLICIT_VR_LITTLE_ENDIAN
from dicomweb_archive.model.tags import SOP_INSTANCE_UID_KEY
from dicomweb_archive.model.uid import is_safe_uid
from dicomweb_archive.ops.reconstruct import generate_instance
from dicomweb_archive.store.instance import InstanceKey, read_info, series_uids
from dicomweb_archive.store.multipart import parse_part
from dicomweb_archive.store.storage import from_json_gz
from dicomweb_archive.web.negotiate import accepts, choose_frame_type, parse_accept

JsonObject = dict[str, Any]
DICOM_JSON = "application/dicom+json"
CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
RETRIEVE_URL = "00081190"
CACHE_SIZE = 256  # metadata files kept rendered (series metadata is read again and again)


class NotFoundError(Exception):
    """A resource the store does not hold (404)."""


class UnacceptableError(Exception):
    """The Accept header cannot be satisfied (406)."""


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
        except NoSuchObjectError as exc:
            raise NotFoundError(key) from exc

    def json(self, request: Request, value: Any) -> Response:
        return self.respond(request, *_json_body(value))

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

    # -- QIDO-RS -----------------------------------------------------------------------
    def qido(self, request: Request, level: str, **path: str) -> Response:
        filters: dict[str, str] = {}
        for key, value in request.query_params.multi_items():
            if key.lower() not in CONTROL:
                filters[keyword_of(key)] = value
        try:
            limit = int(request.query_params["limit"]) if "limit" in request.query_params else None
            offset = int(request.query_params.get("offset", "0"))
        except ValueError as exc:
            raise BadQueryError("limit and offset must be integers") from exc
        if (limit is not None and limit < 0) or offset < 0:
            raise BadQueryError("limit and offset must not be negative")
        study = self.uid(path["study"]) if "study" in path else None
        series = self.uid(path["series"]) if "series" in path else None
        condition = qido_condition(level, filters, study=study, series=series)
        found = self.archive.index.search(level, condition, limit=limit, offset=offset)
        base = self.base(request)
        for item in found:
            item[RETRIEVE_URL] = {"vr": "UR", "Value": [base + _retrieve_path(level, item)]}
        return self.json(request, [dict(sorted(item.items())) for item in found])

    # -- WADO-RS metadata --------------------------------------------------------------
    def metadata(
        self, request: Request, study: str, series: str | None, sop: str | None
    ) -> Response:
        study = self.uid(study)
        base = self.base(request)
        return self.archive.read(lambda: self._metadata(base, request, study, series, sop))

    def _metadata(
        self, base: str, request: Request, study: str, series: str | None, sop: str | None
    ) -> Response:
        if series is None:
            names = [s for s in series_uids(self.storage, study) if is_safe_uid(s)]
            if not names:
                raise NotFoundError(study)
        else:
            names = [self.uid(series)]
        wanted = self.uid(sop) if sop is not None else None
        objects = []
        for name in names:
            key = self.keys.series_metadata(study, name)
            if wanted is not None:  # the instance's own metadata.gz (-i), else the series'
                own = self.keys.instance_metadata(study, name, wanted)
                key = own if self.storage.head(own) is not None else key
            head = self.storage.head(key)
            if head is None:
                raise NotFoundError(key)
            objects.append((name, key, head.etag))
        cache_key = (base, wanted, tuple(objects))
        cached = self.cache.get(cache_key)
        if cached is None:
            out: list[JsonObject] = []
            for name, key, _ in objects:
                url = f"{base}/studies/{study}/series/{name}/"
                items = [
                    item
                    for item in from_json_gz(self.get(key))
                    if wanted is None or _sop_of(item) == wanted
                ]
                if not items:
                    raise NotFoundError(wanted or key)
                out.extend(_absolute(item, url) for item in items)
            cached = _json_body(out)
            if len(self.cache) >= CACHE_SIZE:
                self.cache.pop(next(iter(self.cache)))
            self.cache[cache_key] = cached
        return self.respond(request, *cached)

    # -- WADO-RS frames, bulk data, instances ------------------------------------------
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
        cut = incomplete_frame(self.archive.read(lambda: self._info(key)).skeleton)
        if cut is None:
            return None
        try:
            asked = [int(n) for n in numbers.split(",")] if numbers is not None else [cut]
        except ValueError:
            return None  # _frame_numbers says why
        late = [n for n in asked if n >= cut and (numbers is not None or cut == 1)]
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

    def bulk(self, request: Request, study: str, name: str) -> Response:
        study = self.uid(study)
        if len(name) != 64 or any(c not in "0123456789abcdef" for c in name):
            raise NotFoundError(name)
        if not accepts(parse_accept(request.headers.get("accept")), "application/octet-stream"):
            raise UnacceptableError("application/octet-stream")
        data = self.get(self.keys.bulkdata(study, name))
        return _multipart(
            iter([data]), "application/octet-stream", "application/octet-stream", None
        )

    def instances(
        self, request: Request, study: str, series: str | None, sop: str | None
    ) -> Response:
        if not accepts(parse_accept(request.headers.get("accept")), "application/dicom"):
            raise UnacceptableError("application/dicom")
        study = self.uid(study)
        rows = self.archive.index.find_instances(
            study,
            self.uid(series) if series else None,
            [self.uid(sop)] if sop else None,
        )
        if not rows:
            raise NotFoundError(sop or series or study)
        keys = [
            InstanceKey(r["study_instance_uid"], r["series_instance_uid"], r["sop_instance_uid"])
            for r in rows
        ]

        def one(key: InstanceKey) -> bytes:
            return self.archive.read(lambda: b"".join(generate_instance(self.archive, key)))

        def parts() -> Iterator[bytes]:
            for key in keys:
                yield one(key)

        return _multipart(parts(), "application/dicom", "application/dicom", None)


def _json_body(value: Any) -> tuple[bytes, str]:
    """JSON bytes and their ETag."""
    body = orjson.dumps(value)
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _retrieve_path(level: str, item: JsonObject) -> str:
    def first(tag: str) -> str:
        return str(item.get(tag, {}).get("Value", [""])[0])

    path = f"/studies/{first('0020000D')}"
    if level in ("series", "instance"):
        path += f"/series/{first('0020000E')}"
    if level == "instance":
        path += f"/instances/{first('00080018')}"
    return path


def _absolute(node: Any, series_url: str) -> Any:
    """BulkDataURIs (relative to the series directory in the store) made absolute."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "BulkDataURI" and isinstance(value, str) and "://" not in value:
                out[key] = _join(series_url, value)
            else:
                out[key] = _absolute(value, series_url)
        return out
    if isinstance(node, list):
        return [_absolute(item, series_url) for item in node]
    return node


def _join(base: str, relative: str) -> str:
    parts = base.rstrip("/").split("/")
    for piece in relative.split("/"):
        if piece == "..":
            parts.pop()
        elif piece not in ("", "."):
            parts.append(piece)
    return "/".join(parts)


def _frame_numbers(numbers: str | None, count: int) -> list[int]:
    if numbers is None:
        return list(range(1, count + 1))
    try:
        chosen = [int(n) for n in numbers.split(",")]
    except ValueError as exc:
        raise BadQueryError(f"frame list {numbers!r} is not a list of numbers") from exc
    if not chosen or any(n < 1 or n > count for n in chosen):
        raise NotFoundError(f"frames {numbers} (the instance has {count})")
    return chosen


def _multipart(
    parts: Iterator[bytes], part_type: str, type_parameter: str, etag: str | None
) -> StreamingResponse:
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:  # a plain iterator: Starlette runs it in its thread pool
        for data in parts:
            yield f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
            yield data
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    media_type = f'multipart/related; type="{type_parameter}"; boundary={boundary}'
    headers = {"ETag": etag} if etag else {}
    return StreamingResponse(body(), media_type=media_type, headers=headers)


def create_app(
    archive: Archive, *, prefix: str = "/dicomweb", base_url: str | None = None
) -> Starlette:
    """The ASGI application serving ``archive`` under ``prefix``."""
    server = Server(archive, base_url=base_url)

    def wrap(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                # file and index reads block: keep them off the event loop
                response: Response = await run_in_threadpool(
                    handler, request, **request.path_params
                )
                return response
            except (NotFoundError, FileNotFoundError, KeyError):
                return Response("not found\n", status_code=404, media_type="text/plain")
            except UnacceptableError as exc:
                return Response(f"cannot answer in {exc}\n", status_code=406)
            except BadQueryError as exc:
                return Response(f"{exc}\n", status_code=400, media_type="text/plain")
            except ArchiveError as exc:
                return Response(f"{exc}\n", status_code=500, media_type="text/plain")

        return endpoint

    def instance_key(study: str, series: str, sop: str) -> InstanceKey:
        return InstanceKey(server.uid(study), server.uid(series), server.uid(sop))

    routes = [
        Route("/studies", wrap(lambda r: server.qido(r, "study"))),
        Route("/series", wrap(lambda r: server.qido(r, "series"))),
        Route("/instances", wrap(lambda r: server.qido(r, "instance"))),
        Route("/studies/{study}", wrap(lambda r, study: server.instances(r, study, None, None))),
        Route(
            "/studies/{study}/metadata",
            wrap(lambda r, study: server.metadata(r, study, None, None)),
        ),
        Route(
            "/studies/{study}/series", wrap(lambda r, study: server.qido(r, "series", study=study))
        ),
        Route(
            "/studies/{study}/instances",
            wrap(lambda r, study: server.qido(r, "instance", study=study)),
        ),
        Route(
            "/studies/{study}/bulkdata/{a}/{b}/{c}",
            wrap(lambda r, study, a, b, c: server.bulk(r, study, a + b + c)),
        ),
        Route(
            "/studies/{study}/series/{series}",
            wrap(lambda r, study, series: server.instances(r, study, series, None)),
        ),
        Route(
            "/studies/{study}/series/{series}/metadata",
            wrap(lambda r, study, series: server.metadata(r, study, series, None)),
        ),
        Route(
            "/studies/{study}/series/{series}/instances",
            wrap(lambda r, study, series: server.qido(r, "instance", study=study, series=series)),
        ),
        Route(
            "/studies/{study}/series/{series}/instances/{sop}",
            wrap(server.instances),
        ),
        Route(
            "/studies/{study}/series/{series}/instances/{sop}/metadata",
            wrap(server.metadata),
        ),
        Route(
            "/studies/{study}/series/{series}/instances/{sop}/frames",
            wrap(
                lambda r, study, series, sop: server.frames(
                    r, instance_key(study, series, sop), None
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
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=["*"],
            allow_methods=["GET", "HEAD", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["ETag", "Content-Type", "Content-Length"],
        ),
        Middleware(GZipMiddleware, minimum_size=1024),
    ]
    return Starlette(routes=[Mount(prefix, routes=routes)], middleware=middleware)


def _sop_of(item: JsonObject) -> object:
    return (item.get(SOP_INSTANCE_UID_KEY, {}).get("Value") or [None])[0]
