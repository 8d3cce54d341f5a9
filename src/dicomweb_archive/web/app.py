"""``dicomweb-archive serve``: the store over DICOMweb (PS3.18), read-only.

QIDO-RS searches are answered from the SQLite index; WADO-RS metadata from the stored
``metadata.gz`` files with absolute BulkDataURIs; frames, bulk data and whole instances from
the frame, bulk-data and info record files (``docs/serving.md``). Every path is built from
checked UIDs and hashes, and every file read is checked to resolve inside the store.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route

from dicomweb_archive.dicom.codecs import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    PixelDescription,
    decode_frame,
    native_bytes,
)
from dicomweb_archive.dicom.recompress import frame_media_type, frame_syntax, stored_pixel
from dicomweb_archive.errors import ArchiveError, BadQueryError
from dicomweb_archive.index.database import Index
from dicomweb_archive.index.queries import find_instances, keyword_of, search
from dicomweb_archive.model.uid import is_safe_uid
from dicomweb_archive.ops.reconstruct import generate_instance
from dicomweb_archive.store.files import read_json_gz
from dicomweb_archive.store.instance import InstanceKey
from dicomweb_archive.store.layout import StoreLayout
from dicomweb_archive.store.multipart import parse_part
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

    def __init__(self, store: Path, *, base_url: str | None) -> None:
        self.layout = StoreLayout(store)
        self.root = store.resolve()
        self.base_url = base_url.rstrip("/") if base_url else None
        self.cache: dict[Any, tuple[bytes, str]] = {}
        self.infos: dict[tuple[str, int, int], JsonObject] = {}

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

    def file(self, path: Path) -> Path:
        """``path`` if it resolves inside the store (no symlink escapes), else 404."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root) or not resolved.is_file():
            raise NotFoundError(path.name)
        return resolved

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
        with Index(self.layout.index_path) as index:
            found = search(
                index, level, filters, study=study, series=series, limit=limit, offset=offset
            )
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
        if series is None:
            series_dir = self.layout.series_dir(study)
            if not series_dir.is_dir():
                raise NotFoundError(study)
            names = sorted(p.name for p in series_dir.iterdir() if is_safe_uid(p.name))
        else:
            names = [self.uid(series)]
        files = []
        for name in names:
            if sop is None:
                path = self.layout.series_metadata(study, name)
            else:
                path = self.layout.instance_metadata(study, name, self.uid(sop))
            resolved = self.file(path)
            stat = resolved.stat()
            files.append((name, resolved, stat.st_mtime_ns, stat.st_size))
        key = (base, study, tuple((str(f[1]), f[2], f[3]) for f in files))
        cached = self.cache.get(key)
        if cached is None:
            out: list[JsonObject] = []
            for name, resolved, _, _ in files:
                url = f"{base}/studies/{study}/series/{name}/"
                out.extend(_absolute(item, url) for item in read_json_gz(resolved))
            cached = _json_body(out)
            if len(self.cache) >= CACHE_SIZE:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = cached
        return self.respond(request, *cached)

    # -- WADO-RS frames, bulk data, instances ------------------------------------------
    def frames(self, request: Request, key: InstanceKey, numbers: str | None) -> Response:
        info = self._info(key)
        count = len(info["frames"])
        wanted_numbers = _frame_numbers(numbers, count)
        syntaxes = {n: frame_syntax(info, n) for n in wanted_numbers}
        if len(set(syntaxes.values())) == 1:  # the usual case: one stored transfer syntax
            stored_syntax = syntaxes[wanted_numbers[0]]
            stored_type = frame_media_type(info, wanted_numbers[0]).split(";")[0].strip()
        else:  # frames kept as received beside recompressed ones: offer them decoded
            stored_syntax, stored_type = EXPLICIT_VR_LITTLE_ENDIAN, "application/octet-stream"
        choice = choose_frame_type(
            parse_accept(request.headers.get("accept")), stored_type, stored_syntax
        )
        if choice is None:
            raise UnacceptableError(stored_type)
        media_type, syntax = choice
        decode = any(s != syntax for s in syntaxes.values())
        # recompressed frames are decoded with what they were encoded from (an edit of the
        # metadata's Image Pixel Module does not change the frames)
        pixel = (stored_pixel(info) or self._pixel(key)) if decode else None

        def parts() -> Iterator[bytes]:
            for number in wanted_numbers:
                path = self.file(self.layout.frame(key.study, key.series, key.sop, number))
                data = parse_part(path.read_bytes(), source=path.name)[1]
                if pixel is not None and syntaxes[number] != syntax:
                    array, _ = decode_frame(bytes(data), syntaxes[number], pixel)
                    yield native_bytes(array, replace(pixel, planar_configuration=0))
                else:
                    yield bytes(data)

        etag = (
            '"'
            + hashlib.sha256(
                (
                    syntax + ",".join(info["frames"][n - 1]["sha256"] for n in wanted_numbers)
                ).encode()
            ).hexdigest()[:32]
            + '"'
        )
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return _multipart(parts(), f"{media_type}; transfer-syntax={syntax}", media_type, etag)

    def _info(self, key: InstanceKey) -> JsonObject:
        """An instance's info record, cached by file identity (frames are asked one by one)."""
        path = self.file(self.layout.info(key.study, key.series, key.sop))
        stat = path.stat()
        cache_key = (str(path), stat.st_mtime_ns, stat.st_size)
        info = self.infos.get(cache_key)
        if info is None:
            info = read_json_gz(path)
            if len(self.infos) >= CACHE_SIZE:
                self.infos.pop(next(iter(self.infos)))
            self.infos[cache_key] = info
        return info

    def _pixel(self, key: InstanceKey) -> PixelDescription:
        meta = read_json_gz(
            self.file(self.layout.instance_metadata(key.study, key.series, key.sop))
        )[0]

        def first(tag: str, default: Any) -> Any:
            values = meta.get(tag, {}).get("Value")
            return values[0] if values else default

        return PixelDescription(
            rows=int(first("00280010", 0)),
            columns=int(first("00280011", 0)),
            samples_per_pixel=int(first("00280002", 1)),
            bits_allocated=int(first("00280100", 8)),
            bits_stored=int(first("00280101", first("00280100", 8))),
            pixel_representation=int(first("00280103", 0)),
            photometric_interpretation=str(first("00280004", "MONOCHROME2")),
            planar_configuration=int(first("00280006", 0)),
        )

    def bulk(self, request: Request, study: str, name: str) -> Response:
        study = self.uid(study)
        if len(name) != 64 or any(c not in "0123456789abcdef" for c in name):
            raise NotFoundError(name)
        if not accepts(parse_accept(request.headers.get("accept")), "application/octet-stream"):
            raise UnacceptableError("application/octet-stream")
        data = self.file(self.layout.bulkdata(study, name)).read_bytes()
        return _multipart(
            iter([data]), "application/octet-stream", "application/octet-stream", None
        )

    def instances(
        self, request: Request, study: str, series: str | None, sop: str | None
    ) -> Response:
        if not accepts(parse_accept(request.headers.get("accept")), "application/dicom"):
            raise UnacceptableError("application/dicom")
        study = self.uid(study)
        with Index(self.layout.index_path) as index:
            rows = find_instances(
                index,
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

        def parts() -> Iterator[bytes]:
            for key in keys:
                yield b"".join(generate_instance(self.layout, key))

        return _multipart(parts(), "application/dicom", "application/dicom", None)


def _json_body(value: Any) -> tuple[bytes, str]:
    """JSON bytes and their ETag."""
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
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


def create_app(store: Path, *, prefix: str = "/dicomweb", base_url: str | None = None) -> Starlette:
    """The ASGI application serving ``store`` under ``prefix``."""
    server = Server(store, base_url=base_url)

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
