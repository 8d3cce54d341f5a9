"""WADO-RS retrieval of bulk data and of whole instances (PS3.18 10.4)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from dicomweb_archive.ops.reconstruct import generate_instance
from dicomweb_archive.store.instance import InstanceKey
from dicomweb_archive.web.negotiate import accepts, parse_accept
from dicomweb_archive.web.responses import NotFoundError, UnacceptableError, multipart

if TYPE_CHECKING:
    from dicomweb_archive.web.app import Server


def bulk(server: Server, request: Request, study: str, name: str) -> Response:
    study = server.uid(study)
    if len(name) != 64 or any(c not in "0123456789abcdef" for c in name):
        raise NotFoundError(name)
    if not accepts(parse_accept(request.headers.get("accept")), "application/octet-stream"):
        raise UnacceptableError("application/octet-stream")
    data = server.get(server.keys.bulkdata(study, name))
    return multipart(iter([data]), "application/octet-stream", "application/octet-stream", None)


def instances(
    server: Server, request: Request, study: str, series: str | None, sop: str | None
) -> Response:
    if not accepts(parse_accept(request.headers.get("accept")), "application/dicom"):
        raise UnacceptableError("application/dicom")
    study = server.uid(study)
    archive = server.archive
    rows = archive.index.find_instances(
        study,
        server.uid(series) if series else None,
        [server.uid(sop)] if sop else None,
    )
    if not rows:
        raise NotFoundError(sop or series or study)
    keys = [
        InstanceKey(r["study_instance_uid"], r["series_instance_uid"], r["sop_instance_uid"])
        for r in rows
    ]

    def one(key: InstanceKey) -> bytes:
        return archive.read(lambda: b"".join(generate_instance(archive, key)))

    def parts() -> Iterator[bytes]:
        for key in keys:
            yield one(key)

    return multipart(parts(), "application/dicom", "application/dicom", None)
