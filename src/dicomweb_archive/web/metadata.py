"""WADO-RS metadata (PS3.18 10.4.1.1.2): the stored series ``metadata.gz`` objects (an
instance's own ``metadata.gz`` where it has one), with absolute BulkDataURIs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from dicomweb_archive.model.tags import SOP_INSTANCE_UID_KEY
from dicomweb_archive.model.uid import is_safe_uid
from dicomweb_archive.store.instance import series_uids
from dicomweb_archive.store.storage import from_json_gz
from dicomweb_archive.web.responses import JsonObject, NotFoundError, json_body

if TYPE_CHECKING:
    from dicomweb_archive.web.app import Server

CACHE_SIZE = 256  # metadata files kept rendered (series metadata is read again and again)


def retrieve_metadata(
    server: Server, request: Request, study: str, series: str | None, sop: str | None
) -> Response:
    study = server.uid(study)
    base = server.base(request)
    return server.archive.read(
        lambda: _metadata(server, base, request, study, series=series, sop=sop)
    )


def _metadata(
    server: Server, base: str, request: Request, study: str, *, series: str | None, sop: str | None
) -> Response:
    storage, keys = server.storage, server.keys
    if series is None:
        names = [s for s in series_uids(storage, study) if is_safe_uid(s)]
        if not names:
            raise NotFoundError(study)
    else:
        names = [server.uid(series)]
    wanted = server.uid(sop) if sop is not None else None
    objects = []
    for name in names:
        key = keys.series_metadata(study, name)
        if wanted is not None:  # the instance's own metadata.gz (-i), else the series'
            own = keys.instance_metadata(study, name, wanted)
            key = own if storage.head(own) is not None else key
        head = storage.head(key)
        if head is None:
            raise NotFoundError(key)
        objects.append((name, key, head.etag))
    cache_key = (base, wanted, tuple(objects))
    cached = server.cache.get(cache_key)
    if cached is None:
        out: list[JsonObject] = []
        for name, key, _ in objects:
            url = f"{base}/studies/{study}/series/{name}/"
            items = [
                item
                for item in from_json_gz(server.get(key))
                if wanted is None or sop_of(item) == wanted
            ]
            if not items:
                raise NotFoundError(wanted or key)
            out.extend(absolute(item, url) for item in items)
        cached = json_body(out)
        if len(server.cache) >= CACHE_SIZE:
            server.cache.pop(next(iter(server.cache)))
        server.cache[cache_key] = cached
    return server.respond(request, *cached)


def absolute(node: Any, series_url: str) -> Any:
    """BulkDataURIs (relative to the series directory in the store) made absolute."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "BulkDataURI" and isinstance(value, str) and "://" not in value:
                out[key] = _join(series_url, value)
            else:
                out[key] = absolute(value, series_url)
        return out
    if isinstance(node, list):
        return [absolute(item, series_url) for item in node]
    return node


def _join(base: str, relative: str) -> str:
    parts = base.rstrip("/").split("/")
    for piece in relative.split("/"):
        if piece == "..":
            parts.pop()
        elif piece not in ("", "."):
            parts.append(piece)
    return "/".join(parts)


def sop_of(item: JsonObject) -> object:
    return (item.get(SOP_INSTANCE_UID_KEY, {}).get("Value") or [None])[0]
