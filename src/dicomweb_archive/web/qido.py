"""QIDO-RS searches (PS3.18 10.6), answered from the index."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from dicomweb_archive.errors import BadQueryError
from dicomweb_archive.index.queries import keyword_of, qido_condition
from dicomweb_archive.web.responses import JsonObject

if TYPE_CHECKING:
    from dicomweb_archive.web.app import Server

CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
RETRIEVE_URL = "00081190"


def search(server: Server, request: Request, level: str, **path: str) -> Response:
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
    study = server.uid(path["study"]) if "study" in path else None
    series = server.uid(path["series"]) if "series" in path else None
    condition = qido_condition(level, filters, study=study, series=series)
    found = server.archive.index.search(level, condition, limit=limit, offset=offset)
    base = server.base(request)
    for item in found:
        item[RETRIEVE_URL] = {"vr": "UR", "Value": [base + _retrieve_path(level, item)]}
    return server.json(request, [dict(sorted(item.items())) for item in found])


def _retrieve_path(level: str, item: JsonObject) -> str:
    def first(tag: str) -> str:
        return str(item.get(tag, {}).get("Value", [""])[0])

    path = f"/studies/{first('0020000D')}"
    if level in ("series", "instance"):
        path += f"/series/{first('0020000E')}"
    if level == "instance":
        path += f"/instances/{first('00080018')}"
    return path
